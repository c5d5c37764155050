"""Observed VMs: whether each is a sealed template, so the web console's VM table offers a
template's clone and not a start it would refuse (docs/ui.md).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # NULL: not asked (a CLI's sync does not ask; the controller does), as for the rows
    # observed before this revision until the controller reads them again.
    with op.batch_alter_table("domains") as batch:
        batch.add_column(sa.Column("template", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("domains") as batch:
        batch.drop_column("template")
