from services.intake import models  # noqa: F401  - registers the tables for autogenerate
from shared.migrations import run_migrations_env

run_migrations_env(table_prefix="intake_")
