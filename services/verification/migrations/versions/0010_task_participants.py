"""the task board by index: a task's participating teams as rows, and the cross-checking team's
tasks by status

Back-filled from each task's JSON list of participants.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 06:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5_000


def _string(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    participant = op.create_table(
        "verification_task_participant",
        sa.Column("team_code", _string(32), nullable=False),
        sa.Column("task_id", _string(64), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["verification_task.id"]),
        sa.PrimaryKeyConstraint("team_code", "task_id"),
    )
    op.create_index("ix_verification_task_review_status", "verification_task", ["review_team_code", "status"])
    task = sa.table("verification_task", sa.column("id", sa.String), sa.column("participants", sa.JSON))
    connection = op.get_bind()
    # Most tasks have no participants: only the others are read, a batch at a time.
    with_participants = (
        sa.select(task.c.id, task.c.participants)
        .where(sa.cast(task.c.participants, sa.Text) != "[]")
        .order_by(task.c.id)
    )
    after = ""
    while batch := connection.execute(with_participants.where(task.c.id > after).limit(BATCH)).all():
        rows = [
            {"team_code": team_code, "task_id": task_id}
            for task_id, participants in batch
            for team_code in dict.fromkeys(participants or [])
        ]
        if rows:
            connection.execute(participant.insert(), rows)
        after = batch[-1][0]


def downgrade() -> None:
    op.drop_index("ix_verification_task_review_status", table_name="verification_task")
    op.drop_table("verification_task_participant")
