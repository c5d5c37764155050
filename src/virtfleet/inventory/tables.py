"""The store's tables, as SQLAlchemy 2.0 typed declarative classes.

Only columns and constraints live here; no relationships, so nothing can lazy-load behind a
query's back. Queries and writes are in the store's parts (store.py lists them). A change here
needs a new migration in migrations/versions (tests compare the migrated schema with these
classes).

Inventory (desired state, from the fleet file): sites, pods, host_groups, hypervisors and
hypervisor_groups. Observed state (written by sync and the controller): domains and host_status.
The controller table holds the one running `virtfleet serve`. placement_claims holds room
reserved on hypervisors for VMs being placed; vm_locks, operations in progress on VMs;
operations, the journal of multi-step operations; host_maintenance, hypervisors an operator
took out of service; boot_installs, `boot serve`'s network
installs of hypervisors.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAME_LEN = 253  # validate.MAX_NAME
URI_LEN = 2048
PATH_LEN = 1024

# Stable constraint names, so later migrations can find them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    PostgreSQL stores timestamptz; SQLite has no time zones, so the value is stored as naive UTC
    and made aware again when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class SiteRow(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class PodRow(Base):
    __tablename__ = "pods"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Pod names are unique across the whole fleet (the fleet file enforces it too).
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"), index=True)
    # Shared storage; storage_type NULL means the pod declares none.
    storage_type: Mapped[str | None] = mapped_column(String(16))
    storage_source: Mapped[str | None] = mapped_column(String(PATH_LEN))
    storage_target: Mapped[str | None] = mapped_column(String(PATH_LEN))
    storage_pool: Mapped[str | None] = mapped_column(String(NAME_LEN))
    # The fleet file's `insecure_transport`: qemu+tcp/test+tcp hosts are allowed in this pod.
    insecure_transport: Mapped[bool] = mapped_column(Boolean, default=False)


class HostGroupRow(Base):
    __tablename__ = "host_groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class HypervisorRow(Base):
    __tablename__ = "hypervisors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    uri: Mapped[str] = mapped_column(String(URI_LEN), unique=True)
    pod_id: Mapped[int] = mapped_column(ForeignKey("pods.id", ondelete="RESTRICT"), index=True)
    maintenance: Mapped[bool] = mapped_column(Boolean, default=False)


class HypervisorGroupRow(Base):
    """Which groups a hypervisor is in; `position` keeps the order the fleet file gave."""

    __tablename__ = "hypervisor_groups"

    hypervisor_id: Mapped[int] = mapped_column(
        ForeignKey("hypervisors.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[int] = mapped_column(
        ForeignKey("host_groups.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)


class DomainRow(Base):
    """A VM as last observed on a hypervisor.

    Keyed by (hypervisor, uuid), not uuid alone: a VM defined on two hypervisors of a pod
    (shared storage makes that easy) is two rows, which is exactly what an operator, and the
    rule against starting one disk twice, need to see.
    """

    __tablename__ = "domains"
    __table_args__ = (
        Index("ix_domains_hypervisor_id_name", "hypervisor_id", "name"),
        UniqueConstraint("hypervisor_id", "uuid", name="uq_domains_hypervisor_id_uuid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hypervisor_id: Mapped[int] = mapped_column(ForeignKey("hypervisors.id", ondelete="CASCADE"))
    uuid: Mapped[str] = mapped_column(String(36), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    state: Mapped[str] = mapped_column(String(32), index=True)
    libvirt_id: Mapped[int | None] = mapped_column(Integer)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    template: Mapped[bool | None] = mapped_column(Boolean)  # NULL: not asked (DomainRecord)
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class HostStatusRow(Base):
    __tablename__ = "host_status"

    hypervisor_id: Mapped[int] = mapped_column(
        ForeignKey("hypervisors.id", ondelete="CASCADE"), primary_key=True
    )
    reachable: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str] = mapped_column(Text, default="")
    observed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ControllerRow(Base):
    """The registered `virtfleet serve`: at most one row, id 1."""

    __tablename__ = "controller"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    url: Mapped[str] = mapped_column(String(URI_LEN))
    token: Mapped[str] = mapped_column(String(512))
    pid: Mapped[int] = mapped_column(Integer)
    hostname: Mapped[str] = mapped_column(String(NAME_LEN))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)


class VMLockRow(Base):
    """An operation in progress on a VM (by name), so a second one gets a clear 'busy'."""

    __tablename__ = "vm_locks"

    vm_name: Mapped[str] = mapped_column(String(2 * NAME_LEN + 1), primary_key=True)
    operation: Mapped[str] = mapped_column(String(64))
    hostname: Mapped[str] = mapped_column(String(NAME_LEN))
    pid: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OperationRow(Base):
    """A multi-step operation (create, clone, template) and what it has made so far.

    Written before the first step and after each one; removed when the operation completes or
    rolls back. A row whose owner died is an interrupted operation: `virtfleet ops cleanup`, or
    any controller (provision/journal.py's `take_over`), undoes its steps from here.

    owner: the controller (its controller_members holder) running it, or None for a CLI's
    process, which (hostname, pid) name; whoever claims an interrupted one becomes its owner
    (hostname, pid too) and its state `undoing`, at claimed_at.
    """

    __tablename__ = "operations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(2 * NAME_LEN + 1))
    hostname: Mapped[str] = mapped_column(String(NAME_LEN))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # running, undoing (claimed after its owner died), or failed (rollback incomplete)
    state: Mapped[str] = mapped_column(String(16))
    steps: Mapped[str] = mapped_column(Text)  # JSON list of what was made, in order
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PlacementClaimRow(Base):
    """Room on a hypervisor held for a VM being made, so concurrent placements cannot overbook.

    Written before the VM is defined, released when it is (or when the operation fails); a
    claim whose expires_at has passed no longer counts, so a crashed CLI cannot hold room forever.
    """

    __tablename__ = "placement_claims"
    __table_args__ = (
        UniqueConstraint("hypervisor_id", "vm_name", name="uq_placement_claims_hypervisor_id_vm"),
        Index("ix_placement_claims_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hypervisor_id: Mapped[int] = mapped_column(ForeignKey("hypervisors.id", ondelete="CASCADE"))
    vm_name: Mapped[str] = mapped_column(String(NAME_LEN))
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class HostMaintenanceRow(Base):
    """A hypervisor an operator took out of service (`virtfleet host maintenance`): placement
    skips it until `host activate`. Kept apart from hypervisors.maintenance, which the fleet
    file declares: `apply` rewrites that column, and must not end an operator's maintenance.
    """

    __tablename__ = "host_maintenance"

    hypervisor_id: Mapped[int] = mapped_column(
        ForeignKey("hypervisors.id", ondelete="CASCADE"), primary_key=True
    )
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    hostname: Mapped[str] = mapped_column(String(NAME_LEN))  # who set it: machine and pid
    pid: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")


def table(cls: type[Base]) -> Table:
    """The Core Table behind a mapped class, for bulk statements."""
    t = cls.__table__
    assert isinstance(t, Table)
    return t


sites = table(SiteRow)
pods = table(PodRow)
host_groups = table(HostGroupRow)
hypervisors = table(HypervisorRow)
hypervisor_groups = table(HypervisorGroupRow)
domains = table(DomainRow)
host_status = table(HostStatusRow)
controller = table(ControllerRow)
placement_claims = table(PlacementClaimRow)
vm_locks = table(VMLockRow)
operations = table(OperationRow)
host_maintenance = table(HostMaintenanceRow)


INSTALL_STATES = ("planned", "booting", "installing", "installed", "enrolled", "failed")


class BootInstallRow(Base):
    """A hypervisor's network install, as `boot serve` sees it (one row per hypervisor).

    state: planned (known, nothing fetched), booting (its iPXE script was fetched), installing
    (its kickstart was fetched), installed (the installer called back), enrolled (added to the
    inventory and checked), failed (error says why). Each state has the time it was entered.
    The token is stored only as its SHA-256 (it is a random 256-bit secret, so a slow hash buys
    nothing); NULL once used or before one is issued.
    """

    __tablename__ = "boot_installs"
    __table_args__ = (
        CheckConstraint("state IN ('planned', 'booting', 'installing', 'installed', "
                        "'enrolled', 'failed')", name="state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    site: Mapped[str] = mapped_column(String(NAME_LEN))
    pod: Mapped[str] = mapped_column(String(NAME_LEN))
    profile: Mapped[str] = mapped_column(String(NAME_LEN))
    state: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str | None] = mapped_column(String(64))
    token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    planned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    booting_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    installing_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    installed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    error: Mapped[str] = mapped_column(Text, default="")
    # `host check` after enrolment: NULL until it ran; a failing check does not un-enroll.
    check_ok: Mapped[bool | None] = mapped_column(Boolean)
    check_detail: Mapped[str] = mapped_column(Text, default="")
    # Requests naming this host that boot serve refused (wrong address, bad token), and those
    # it answered 429 (too many refusals): someone guessing shows here.
    refused: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    limited: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


boot_installs = table(BootInstallRow)


# --------------------------------------------------------------------------- API access, audit
# users, api_tokens and grants: who may call the controller's API and what they may do there
# (inventory/access.py); audit_log: every write through the API or the CLI (inventory/audit.py).

USER_SOURCES = ("local", "ldap", "oidc")
ROLES = ("viewer", "operator", "admin")
SCOPE_KINDS = ("all", "site", "pod", "group")


class UserRow(Base):
    """A person (or a script's identity) the API knows. `source` says who vouches for it:
    local users are made with `virtfleet user add`; ldap and oidc are for directories plugged in
    later (fleet/access.py). A disabled user keeps its rows (the audit log names it) but no
    token of it works."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("source IN ('local', 'ldap', 'oidc')", name="source"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    display_name: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(16), default="local")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiTokenRow(Base):
    """A bearer token of a user: `vf_<id>_<secret>` is shown once; only the secret's SHA-256
    is kept (a random 256-bit secret: a slow hash buys nothing). `id` is public, so a token
    can be named in `token list` and `token revoke` without showing it."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class GrantRow(Base):
    """One role for one user on one scope: the whole estate (kind all, name ''), a site, a pod,
    or an application group (a host group: its hypervisors and their VMs)."""

    __tablename__ = "grants"
    __table_args__ = (
        UniqueConstraint("user_id", "role", "scope_kind", "scope_name", name="uq_grants_grant"),
        CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="role"),
        CheckConstraint("scope_kind IN ('all', 'site', 'pod', 'group')", name="scope_kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    scope_kind: Mapped[str] = mapped_column(String(8))
    scope_name: Mapped[str] = mapped_column(String(NAME_LEN), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditRow(Base):
    """One write through the API or the CLI, as it ended. Append-only: a trigger (made by the
    migration) refuses every UPDATE; rows go only by `audit prune`, which is itself recorded.
    `actor` is the API user (or `local`, the CLI's controller token), or for the CLI the
    operating-system user; `params` is JSON with secrets masked."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(NAME_LEN), index=True)
    via: Mapped[str] = mapped_column(String(16))  # api, cli
    action: Mapped[str] = mapped_column(String(NAME_LEN))  # vm.start, POST /api/v1/..., vm create
    target: Mapped[str] = mapped_column(String(PATH_LEN), index=True)
    params: Mapped[str] = mapped_column(Text, default="{}")
    result: Mapped[str] = mapped_column(String(16))  # ok, failed, denied
    status: Mapped[int] = mapped_column(Integer)  # HTTP status, or the CLI's exit code
    detail: Mapped[str] = mapped_column(Text, default="")


users = table(UserRow)
api_tokens = table(ApiTokenRow)
grants = table(GrantRow)
audit_log = table(AuditRow)
# ---- High availability (issue 17; docs/ha.md). Read and written by inventory/ha.py.


class HypervisorBmcRow(Base):
    """A hypervisor's BMC, from the fleet file's `bmc:` block (rewritten by every `apply`):
    what the controller fences it with. Where the password is (a file or a variable), never
    the password."""

    __tablename__ = "hypervisor_bmcs"

    hypervisor_id: Mapped[int] = mapped_column(
        ForeignKey("hypervisors.id", ondelete="CASCADE"), primary_key=True
    )
    spec: Mapped[str] = mapped_column(Text)  # the bmc: block as JSON


class GroupHARow(Base):
    """A group whose VMs (by their `app`) are all HA, from the fleet file's groups[].ha."""

    __tablename__ = "group_ha"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("host_groups.id", ondelete="CASCADE"), primary_key=True
    )
    priority: Mapped[int] = mapped_column(Integer)


class HAPodRow(Base):
    """A pod whose hypervisors the controller fences and whose HA VMs it restarts
    (`virtfleet ha enable`); no row, no HA action there."""

    __tablename__ = "ha_pods"

    pod_id: Mapped[int] = mapped_column(
        ForeignKey("pods.id", ondelete="CASCADE"), primary_key=True
    )
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    hostname: Mapped[str] = mapped_column(String(NAME_LEN))  # who enabled it: machine and pid
    pid: Mapped[int] = mapped_column(Integer)


class HAVMRow(Base):
    """An HA VM: its restart priority (marked on the VM itself, else its group's) and its last
    known persistent definition, kept because a dead hypervisor cannot be asked for it."""

    __tablename__ = "ha_vms"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), index=True)
    # Where it was last defined; NULL while it is defined nowhere we know of.
    hypervisor_id: Mapped[int | None] = mapped_column(
        ForeignKey("hypervisors.id", ondelete="SET NULL"), nullable=True, index=True
    )
    marked_priority: Mapped[int | None] = mapped_column(Integer)  # <vf:ha priority>
    app: Mapped[str | None] = mapped_column(String(NAME_LEN))  # its group, for group policy
    definition: Mapped[str] = mapped_column(Text)  # domain XML (inactive, with secrets)
    defined_at: Mapped[datetime] = mapped_column(UTCDateTime)  # when that XML was read


class HAHostRow(Base):
    """Where the controller's HA state machine stands for one hypervisor (ok, suspect,
    fencing, fenced, restarting, recovered, fence-failed), so a restarted controller goes on
    from there and `ha status` can show it."""

    __tablename__ = "ha_hosts"

    hypervisor_id: Mapped[int] = mapped_column(
        ForeignKey("hypervisors.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime] = mapped_column(UTCDateTime)  # entered this state
    lost_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # stopped answering
    detail: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class HARecoveryRow(Base):
    """The journal of one host's recovery: each step (suspect, fenced, restarting VM X on Y,
    running, done) written before the next is taken, so a controller killed halfway finishes
    it without doing anything twice."""

    __tablename__ = "ha_recoveries"
    __table_args__ = (Index("ix_ha_recoveries_host_state", "host", "state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(NAME_LEN))  # by name: it outlives the host's row
    state: Mapped[str] = mapped_column(String(16))  # running or done
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    hostname: Mapped[str] = mapped_column(String(NAME_LEN))  # the controller: machine and pid
    pid: Mapped[int] = mapped_column(Integer)
    steps: Mapped[str] = mapped_column(Text)  # JSON list, in order


hypervisor_bmcs = table(HypervisorBmcRow)
group_ha = table(GroupHARow)
ha_pods = table(HAPodRow)
ha_vms = table(HAVMRow)
ha_hosts = table(HAHostRow)
ha_recoveries = table(HARecoveryRow)


# controller_members and shard_leases: several `virtfleet serve` on one PostgreSQL store
# (docs/scale-out.md). A shard is a site; its lease row says which controller acts for it,
# until when, and under which fencing token.


class ControllerMemberRow(Base):
    """One of several controllers on a PostgreSQL store: where a CLI reaches it, what it is
    pinned to, and its last heartbeat (a member that stopped beating is gone)."""

    __tablename__ = "controller_members"

    holder: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    url: Mapped[str] = mapped_column(String(URI_LEN))
    token: Mapped[str] = mapped_column(String(512))
    pid: Mapped[int] = mapped_column(Integer)
    hostname: Mapped[str] = mapped_column(String(NAME_LEN))
    sites: Mapped[str] = mapped_column(Text, default="")  # pinned sites, comma-separated
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ShardLeaseRow(Base):
    """Who acts for one shard (a site, by name) until `expires_at`. `token` grows by one each
    time the lease is taken (never on a renewal), so a write stamped with an older token is
    refused: the fencing token. A released or never-held lease has no holder."""

    __tablename__ = "shard_leases"

    shard: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True)
    token: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


controller_members = table(ControllerMemberRow)
shard_leases = table(ShardLeaseRow)
