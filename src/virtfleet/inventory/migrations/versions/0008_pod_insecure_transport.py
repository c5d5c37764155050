"""Pods: insecure_transport, the fleet file's leave to use qemu+tcp and test+tcp in a pod.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Pods recorded before this revision keep working as they were: a pod that already holds a
    # qemu+tcp or test+tcp hypervisor is marked insecure; the next `apply` of a fleet file
    # that does not say so refuses it, naming the field.
    with op.batch_alter_table("pods") as batch:
        batch.add_column(sa.Column("insecure_transport", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    op.execute(
        "UPDATE pods SET insecure_transport = TRUE WHERE id IN (SELECT pod_id FROM hypervisors "
        "WHERE uri LIKE 'qemu+tcp://%' OR uri LIKE 'test+tcp://%')")


def downgrade() -> None:
    with op.batch_alter_table("pods") as batch:
        batch.drop_column("insecure_transport")
