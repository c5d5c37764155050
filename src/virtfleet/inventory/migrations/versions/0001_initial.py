"""Initial schema: inventory (sites, pods, host groups, hypervisors), observed VMs, host status,
controller registration.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

NAME = sa.String(length=253)
URI = sa.String(length=2048)
PATH = sa.String(length=1024)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sites"),
        sa.UniqueConstraint("name", name="uq_sites_name"),
    )
    op.create_table(
        "host_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_host_groups"),
        sa.UniqueConstraint("name", name="uq_host_groups_name"),
    )
    op.create_table(
        "pods",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("storage_type", sa.String(length=16), nullable=True),
        sa.Column("storage_source", PATH, nullable=True),
        sa.Column("storage_target", PATH, nullable=True),
        sa.Column("storage_pool", NAME, nullable=True),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name="fk_pods_site_id_sites", ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_pods"),
        sa.UniqueConstraint("name", name="uq_pods_name"),
    )
    op.create_index("ix_pods_site_id", "pods", ["site_id"])
    op.create_table(
        "hypervisors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("uri", URI, nullable=False),
        sa.Column("pod_id", sa.Integer(), nullable=False),
        sa.Column("maintenance", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pod_id"], ["pods.id"], name="fk_hypervisors_pod_id_pods", ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_hypervisors"),
        sa.UniqueConstraint("name", name="uq_hypervisors_name"),
        sa.UniqueConstraint("uri", name="uq_hypervisors_uri"),
    )
    op.create_index("ix_hypervisors_pod_id", "hypervisors", ["pod_id"])
    op.create_table(
        "hypervisor_groups",
        sa.Column("hypervisor_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["hypervisor_id"], ["hypervisors.id"],
            name="fk_hypervisor_groups_hypervisor_id_hypervisors", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"], ["host_groups.id"],
            name="fk_hypervisor_groups_group_id_host_groups", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("hypervisor_id", "group_id", name="pk_hypervisor_groups"),
    )
    op.create_index("ix_hypervisor_groups_group_id", "hypervisor_groups", ["group_id"])
    op.create_table(
        "domains",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hypervisor_id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("libvirt_id", sa.Integer(), nullable=True),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("observed_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["hypervisor_id"], ["hypervisors.id"],
            name="fk_domains_hypervisor_id_hypervisors", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_domains"),
        sa.UniqueConstraint("hypervisor_id", "uuid", name="uq_domains_hypervisor_id_uuid"),
    )
    op.create_index("ix_domains_uuid", "domains", ["uuid"])
    op.create_index("ix_domains_hypervisor_id_name", "domains", ["hypervisor_id", "name"])
    op.create_index("ix_domains_state", "domains", ["state"])
    op.create_table(
        "host_status",
        sa.Column("hypervisor_id", sa.Integer(), nullable=False),
        sa.Column("reachable", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("observed_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["hypervisor_id"], ["hypervisors.id"],
            name="fk_host_status_hypervisor_id_hypervisors", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("hypervisor_id", name="pk_host_status"),
    )
    op.create_table(
        "controller",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("url", URI, nullable=False),
        sa.Column("token", sa.String(length=512), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("hostname", NAME, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("heartbeat_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_controller_single_row"),
        sa.PrimaryKeyConstraint("id", name="pk_controller"),
    )


def downgrade() -> None:
    op.drop_table("controller")
    op.drop_table("host_status")
    op.drop_index("ix_domains_state", table_name="domains")
    op.drop_index("ix_domains_hypervisor_id_name", table_name="domains")
    op.drop_table("domains")
    op.drop_index("ix_hypervisor_groups_group_id", table_name="hypervisor_groups")
    op.drop_table("hypervisor_groups")
    op.drop_index("ix_hypervisors_pod_id", table_name="hypervisors")
    op.drop_table("hypervisors")
    op.drop_index("ix_pods_site_id", table_name="pods")
    op.drop_table("pods")
    op.drop_table("host_groups")
    op.drop_table("sites")
