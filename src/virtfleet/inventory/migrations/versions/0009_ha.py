"""High availability: BMCs and group policies from the fleet file, pods with HA on, HA VMs and
their last definitions, each host's HA state, and the recovery journal.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def _host_fk(table: str, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["hypervisor_id"], ["hypervisors.id"],
                                   name=f"fk_{table}_hypervisor_id_hypervisors",
                                   ondelete=ondelete)


def upgrade() -> None:
    op.create_table(
        "hypervisor_bmcs",
        sa.Column("hypervisor_id", sa.Integer(), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        _host_fk("hypervisor_bmcs"),
        sa.PrimaryKeyConstraint("hypervisor_id", name="pk_hypervisor_bmcs"),
    )
    op.create_table(
        "group_ha",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["host_groups.id"],
                                name="fk_group_ha_group_id_host_groups", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", name="pk_group_ha"),
    )
    op.create_table(
        "ha_pods",
        sa.Column("pod_id", sa.Integer(), nullable=False),
        sa.Column("since", TIMESTAMP, nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["pod_id"], ["pods.id"], name="fk_ha_pods_pod_id_pods",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pod_id", name="pk_ha_pods"),
    )
    op.create_table(
        "ha_vms",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("hypervisor_id", sa.Integer(), nullable=True),
        sa.Column("marked_priority", sa.Integer(), nullable=True),
        sa.Column("app", sa.String(length=253), nullable=True),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("defined_at", TIMESTAMP, nullable=False),
        _host_fk("ha_vms", "SET NULL"),
        sa.PrimaryKeyConstraint("uuid", name="pk_ha_vms"),
    )
    op.create_index("ix_ha_vms_name", "ha_vms", ["name"])
    op.create_index("ix_ha_vms_hypervisor_id", "ha_vms", ["hypervisor_id"])
    op.create_table(
        "ha_hosts",
        sa.Column("hypervisor_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("since", TIMESTAMP, nullable=False),
        sa.Column("lost_at", TIMESTAMP, nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        _host_fk("ha_hosts"),
        sa.PrimaryKeyConstraint("hypervisor_id", name="pk_ha_hosts"),
    )
    op.create_table(
        "ha_recoveries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ha_recoveries"),
    )
    op.create_index("ix_ha_recoveries_host_state", "ha_recoveries", ["host", "state"])


def downgrade() -> None:
    op.drop_index("ix_ha_recoveries_host_state", table_name="ha_recoveries")
    op.drop_table("ha_recoveries")
    op.drop_table("ha_hosts")
    op.drop_index("ix_ha_vms_hypervisor_id", table_name="ha_vms")
    op.drop_index("ix_ha_vms_name", table_name="ha_vms")
    op.drop_table("ha_vms")
    op.drop_table("ha_pods")
    op.drop_table("group_ha")
    op.drop_table("hypervisor_bmcs")
