from services.verification import ledger_entries, measure_days, measure_facts, models  # noqa: F401  - registers the tables for autogenerate
from shared.migrations import run_migrations_env

run_migrations_env(table_prefix="verification_")
