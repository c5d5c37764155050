"""VM locks: one operation at a time on a VM, fleet-wide.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "vm_locks",
        # "hypervisor/vm" (or "create/vm"): two names of up to 253 characters
        sa.Column("vm_name", sa.String(length=507), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("vm_name", name="pk_vm_locks"),
    )


def downgrade() -> None:
    op.drop_table("vm_locks")
