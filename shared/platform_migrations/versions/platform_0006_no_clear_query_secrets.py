"""stored answers: no query secret in clear

Intake remembered the first answer of a create (for a retried ``Idempotency-Key``) with the
query secret in clear, for 48 hours.  New answers keep it sealed with the identity key; this
removes it from those stored before (a migration has no identity key to seal them with).  A
retry of such a request is answered without the secret and says it was given the first time.
Only intake's answers hold a query secret: in the other services' databases it changes nothing.

Revision ID: platform_0006
Revises: platform_0005
Create Date: 2026-11-30 11:30:00.000000
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "platform_0006"
down_revision: str | None = "platform_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As shared.idempotency.WITHHELD says it (copied: a migration does not follow later code).
WITHHELD = "已在首次答复中告知；出于安全原因，重试的答复中不再显示"


def upgrade() -> None:
    answers = sa.table(
        "idempotency",
        sa.column("key", sa.String),
        sa.column("username", sa.String),
        sa.column("response_body", sa.Text),
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(answers.c.key, answers.c.username, answers.c.response_body).where(
            answers.c.response_body.like('%"query_secret"%')
        )
    ).all()
    for key, username, text in rows:
        body = json.loads(text)
        if not isinstance(body, dict) or body.get("query_secret") is None:
            continue
        del body["query_secret"]
        body["query_secret_withheld"] = WITHHELD
        connection.execute(
            answers.update()
            .where(answers.c.key == key, answers.c.username == username)
            .values(response_body=json.dumps(body, ensure_ascii=False))
        )


def downgrade() -> None:
    """Nothing to restore: the secrets are gone, as intended."""
