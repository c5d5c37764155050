"""Several controllers on one PostgreSQL store: their registrations and the shard leases with
fencing tokens (docs/scale-out.md).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "controller_members",
        sa.Column("holder", sa.String(length=253), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("token", sa.String(length=512), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=False),
        sa.Column("sites", sa.Text(), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("heartbeat_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("holder", name="pk_controller_members"),
    )
    op.create_table(
        "shard_leases",
        sa.Column("shard", sa.String(length=253), nullable=False),
        sa.Column("holder", sa.String(length=253), nullable=True),
        sa.Column("token", sa.Integer(), nullable=False),
        sa.Column("acquired_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("shard", name="pk_shard_leases"),
    )


def downgrade() -> None:
    op.drop_table("shard_leases")
    op.drop_table("controller_members")
