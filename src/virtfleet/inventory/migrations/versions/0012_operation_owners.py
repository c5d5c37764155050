"""Operations: their owner and when it was claimed, so any controller can finish (undo) an
operation whose owner died (docs/scale-out.md, "a controller dies mid-operation").

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Rows written before this revision have no owner: their process (hostname, pid) is their
    # owner, as before.
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=253), nullable=True))
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("claimed_at")
        batch.drop_column("owner")
