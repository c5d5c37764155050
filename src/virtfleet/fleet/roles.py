"""Who may do what where: roles, the permissions they hold, and the scopes grants are made on.

A grant is one role on one scope: the whole estate (`all`), a site, a pod, or an application
group (a host group: its hypervisors and the VMs on them, the chapter's split of web and
database hypervisors). A call touches a `Target` (a VM, a host, a pod, ...) that sits in a
site and pod and on hypervisors of some groups; a grant covers it when its scope contains it.

    alice = Principal("alice", "token 3f9c...", (Grant("operator", "group", "web"),))
    alice.can("vm.lifecycle", Target.of_vm("web01", host_record))   # True if web01's host is in web
    alice.check("vm.lifecycle", Target.of_vm("db01", db_host))      # Forbidden, naming vm.lifecycle

Pure code: no store, no HTTP. fleet/access.py makes principals from tokens; the controller's
routes ask them (controller/auth.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from virtfleet.errors import Forbidden, InvalidInput
from virtfleet.fleet.scope import Scope
from virtfleet.inventory.records import HostRecord
from virtfleet.validate import check_name

_VIEWER = frozenset({
    "vm.read", "host.read", "template.read", "network.read", "storage.read", "plan.read",
    "install.read", "operation.read", "events.read", "metrics.read",
})
_OPERATOR = _VIEWER | {
    "vm.lifecycle", "vm.create", "vm.delete", "vm.migrate", "vm.snapshot", "host.maintenance",
    "template.manage", "network.manage", "storage.manage", "plan.claim", "operation.cleanup",
    "fleet.sync",
}
_ADMIN = _OPERATOR | {"user.manage", "audit.read", "audit.prune"}

ROLES: dict[str, frozenset[str]] = {"viewer": _VIEWER, "operator": _OPERATOR, "admin": _ADMIN}
PERMISSIONS = frozenset(_ADMIN)
SCOPE_KINDS = ("all", "site", "pod", "group")


def check_permission(permission: str) -> str:
    if permission not in PERMISSIONS:
        raise InvalidInput("permission", f"{permission!r} is not a permission "
                           f"({', '.join(sorted(PERMISSIONS))})")
    return permission


def check_role(role: str, field: str = "role") -> str:
    if role not in ROLES:
        raise InvalidInput(field, f"{role!r} is not a role ({', '.join(ROLES)})")
    return role


def parse_scope(text: str, field: str = "scope") -> tuple[str, str]:
    """`all`, `site:NAME`, `pod:NAME` or `group:NAME` -> (kind, name); name '' for all."""
    if text == "all":
        return "all", ""
    kind, sep, name = text.partition(":")
    if not sep or kind not in SCOPE_KINDS[1:]:
        raise InvalidInput(field, f"{text!r} is not a scope: give all, site:NAME, pod:NAME or "
                           "group:NAME")
    check_name(field, name)
    return kind, name


@dataclass(frozen=True)
class Target:
    """What a call touches, and where it sits in the estate.

    `kind` and `name` say what it is (`vm` `web01`; `estate` for the whole estate); `site`,
    `pod` and `groups` say where, as far as a grant's scope is concerned. Something that is not
    in any one site (a user, the audit log, a fleet-wide verb) is covered by `all` grants
    only."""

    kind: str
    name: str = ""
    site: str | None = None
    pod: str | None = None
    host: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)

    @property
    def label(self) -> str:
        """As the audit log and errors name it: `vm:web01`, `estate`."""
        return f"{self.kind}:{self.name}" if self.name else self.kind

    def where(self) -> str:
        """Where it sits, for a refusal: (site oregon, pod or-pod1, host hv1, groups web)."""
        parts = [f"{k} {v}" for k, v in (("site", self.site), ("pod", self.pod),
                                         ("host", self.host)) if v]
        if self.groups:
            parts.append("groups " + ",".join(sorted(self.groups)))
        return f" ({', '.join(parts)})" if parts else ""

    @classmethod
    def estate(cls, kind: str = "estate", name: str = "") -> Target:
        return cls(kind, name)

    @classmethod
    def of_host(cls, rec: HostRecord) -> Target:
        return cls("host", rec.name, rec.site, rec.pod, rec.name, frozenset(rec.groups))

    @classmethod
    def of_vm(cls, name: str, rec: HostRecord) -> Target:
        return cls("vm", name, rec.site, rec.pod, rec.name, frozenset(rec.groups))

    @classmethod
    def on_host(cls, kind: str, name: str, rec: HostRecord) -> Target:
        """Something that lives on one hypervisor: a volume, a template, a pool there."""
        return cls(kind, name, rec.site, rec.pod, rec.name, frozenset(rec.groups))

    @classmethod
    def of_scope(cls, kind: str, name: str, scope: Scope, hosts: Iterable[HostRecord]) -> Target:
        """A verb on every hypervisor of `scope` (a network defined on a pod, say): it sits
        where the scope says, and `hosts` (the inventory) tell a pod's site and a host's
        place. A scope naming nothing, or `all`, is the whole estate."""
        if scope.host is not None:
            rec = next((h for h in hosts if h.name == scope.host), None)
            if rec is not None:
                return cls.on_host(kind, name, rec)
            return cls(kind, name, scope.site, scope.pod, scope.host)
        site = scope.site
        if scope.pod is not None and site is None:
            site = next((h.site for h in hosts if h.pod == scope.pod), None)
        groups = frozenset({scope.group}) if scope.group else frozenset()
        return cls(kind, name, site, scope.pod, None, groups)


@dataclass(frozen=True)
class Grant:
    role: str
    scope_kind: str  # all, site, pod, group
    scope_name: str = ""

    @property
    def scope(self) -> str:
        return "all" if self.scope_kind == "all" else f"{self.scope_kind}:{self.scope_name}"

    def covers(self, target: Target) -> bool:
        if self.scope_kind == "all":
            return True
        if self.scope_kind == "site":
            return target.site == self.scope_name
        if self.scope_kind == "pod":
            return target.pod == self.scope_name
        return self.scope_name in target.groups

    def allows(self, permission: str) -> bool:
        return permission in ROLES.get(self.role, frozenset())


@dataclass(frozen=True)
class Reach:
    """Where a principal holds one permission: everywhere, or in these sites, pods, groups.
    Lists use it to keep only what the caller may see."""

    everywhere: bool
    sites: frozenset[str] = frozenset()
    pods: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    def covers_host(self, rec: HostRecord) -> bool:
        return (self.everywhere or rec.site in self.sites or rec.pod in self.pods
                or not self.groups.isdisjoint(rec.groups))

    def covers(self, target: Target) -> bool:
        return (self.everywhere or target.site in self.sites or target.pod in self.pods
                or not self.groups.isdisjoint(target.groups))


@dataclass(frozen=True)
class Principal:
    """Someone calling: a user (through one of its tokens), or `local`, the controller's own
    CLI token. `via` says which credential, for the audit log."""

    name: str
    via: str
    grants: tuple[Grant, ...] = ()

    def can(self, permission: str, target: Target) -> bool:
        return any(g.allows(permission) and g.covers(target) for g in self.grants)

    def holds(self, permission: str) -> bool:
        """Whether it has `permission` anywhere at all."""
        return any(g.allows(permission) for g in self.grants)

    def reach(self, permission: str) -> Reach:
        mine = [g for g in self.grants if g.allows(permission)]
        if any(g.scope_kind == "all" for g in mine):
            return Reach(True)
        return Reach(False,
                     frozenset(g.scope_name for g in mine if g.scope_kind == "site"),
                     frozenset(g.scope_name for g in mine if g.scope_kind == "pod"),
                     frozenset(g.scope_name for g in mine if g.scope_kind == "group"))

    def check(self, permission: str, target: Target) -> None:
        """Forbidden, naming the permission and the target, unless a grant covers it."""
        if self.can(permission, target):
            return
        has = ", ".join(f"{g.role} on {g.scope}" for g in self.grants) or "no grants"
        raise Forbidden(f"{self.name} lacks {permission} on {target.label}{target.where()} "
                        f"(has: {has})", permission=permission, target=target.label)
