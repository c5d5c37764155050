"""Boot installs: `boot serve`'s record of each hypervisor's network install.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "boot_installs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("site", sa.String(length=253), nullable=False),
        sa.Column("pod", sa.String(length=253), nullable=False),
        sa.Column("profile", sa.String(length=253), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("token_expires_at", TIMESTAMP, nullable=True),
        sa.Column("planned_at", TIMESTAMP, nullable=False),
        sa.Column("booting_at", TIMESTAMP, nullable=True),
        sa.Column("installing_at", TIMESTAMP, nullable=True),
        sa.Column("installed_at", TIMESTAMP, nullable=True),
        sa.Column("enrolled_at", TIMESTAMP, nullable=True),
        sa.Column("failed_at", TIMESTAMP, nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("check_ok", sa.Boolean(), nullable=True),
        sa.Column("check_detail", sa.Text(), nullable=False),
        sa.CheckConstraint("state IN ('planned', 'booting', 'installing', 'installed', "
                           "'enrolled', 'failed')", name="ck_boot_installs_state"),
        sa.PrimaryKeyConstraint("id", name="pk_boot_installs"),
        sa.UniqueConstraint("host", name="uq_boot_installs_host"),
        sa.UniqueConstraint("mac", name="uq_boot_installs_mac"),
    )


def downgrade() -> None:
    op.drop_table("boot_installs")
