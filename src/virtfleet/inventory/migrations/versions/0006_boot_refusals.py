"""Boot installs: how many requests naming each host `boot serve` refused or rate-limited.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("boot_installs") as batch:
        batch.add_column(sa.Column("refused", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("limited", sa.Integer(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("boot_installs") as batch:
        batch.drop_column("limited")
        batch.drop_column("refused")
