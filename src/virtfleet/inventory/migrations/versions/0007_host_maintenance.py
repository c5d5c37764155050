"""Host maintenance: hypervisors an operator took out of service, apart from the fleet file.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "host_maintenance",
        sa.Column("hypervisor_id", sa.Integer(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["hypervisor_id"], ["hypervisors.id"],
                                name="fk_host_maintenance_hypervisor_id_hypervisors",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("hypervisor_id", name="pk_host_maintenance"),
    )


def downgrade() -> None:
    op.drop_table("host_maintenance")
