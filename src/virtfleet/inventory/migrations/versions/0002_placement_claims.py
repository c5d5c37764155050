"""Placement claims: room held on a hypervisor for a VM being made.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "placement_claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hypervisor_id", sa.Integer(), nullable=False),
        sa.Column("vm_name", sa.String(length=253), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["hypervisor_id"], ["hypervisors.id"],
            name="fk_placement_claims_hypervisor_id_hypervisors", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_placement_claims"),
        sa.UniqueConstraint("hypervisor_id", "vm_name",
                            name="uq_placement_claims_hypervisor_id_vm"),
    )
    op.create_index("ix_placement_claims_expires_at", "placement_claims", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_placement_claims_expires_at", table_name="placement_claims")
    op.drop_table("placement_claims")
