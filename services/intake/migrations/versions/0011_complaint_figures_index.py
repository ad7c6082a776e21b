"""the dashboard's intake figures: an index holding every column they read

``statistics.repeat_statistics`` counts the complaints received in the last weeks per county and
team.  It read each complaint of the period from the table (or, as SQLite planned it, walked every
complaint through the county index); this index starts with ``received_at`` and holds the other
columns counted, so the figures read the period's index entries alone.  It is built from the
existing rows: nothing to back-fill.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 20:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ["received_at", "status", "county_code", "assigned_team_code", "linked_repeat", "repeat_of"]


def upgrade() -> None:
    op.create_index("ix_intake_complaint_figures", "intake_complaint", COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_intake_complaint_figures", table_name="intake_complaint")
