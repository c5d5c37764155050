"""Pinning hypervisors' ssh host keys: the service behind `host add`, `apply` and `hostkey pin`.

A host key is trusted only once an operator has seen its fingerprint and said yes
(--accept-new), or it was already pinned. ssh runs with StrictHostKeyChecking=yes against
virtfleet's known_hosts (sshconfig.py), so an unpinned or changed key is refused at connection
time as well; pinning is the only way a key gets in. A changed key is never replaced here: the
operator forgets the old one first (`hostkey forget`), knowing why it changed.

    plan = plan_pins(hosts, accept_new=False)   # scans the hosts not pinned yet
    plan.require_decided()                      # InvalidInput / Conflict: nothing written
    ... the store changes ...
    plan.commit()                               # the accepted keys go into known_hosts
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from virtfleet.errors import Conflict, HostUnavailable, InvalidInput, ToolFailed
from virtfleet.inventory.uri import parse_uri
from virtfleet.transport.hostkeys import HostKey, KnownHosts, preferred, scan
from virtfleet.transport.paths import TransportDir

# What happened to each host's key, in words a table prints.
PINNED = "pinned"  # already pinned (and, when rescanned, the host still offers it)
ACCEPTED = "accepted"  # new, shown, and pinned because the operator said --accept-new
NEW = "new"  # new, shown, not pinned: the operator has not said --accept-new
CHANGED = "changed"  # the host offers a key other than the pinned one
UNREACHABLE = "unreachable"  # no key could be fetched; nothing pinned


@dataclass
class PinResult:
    host: str  # the inventory's name
    address: str  # the URI's host, as ssh and known_hosts name it
    port: int
    state: str
    offered: HostKey | None = None  # what the host sent when scanned
    pinned: HostKey | None = None  # what known_hosts already holds

    @property
    def key(self) -> HostKey | None:
        return self.offered or self.pinned

    def as_json(self) -> dict[str, object]:
        key = self.key
        out: dict[str, object] = {"host": self.host, "address": self.address,
                                  "port": self.port, "state": self.state,
                                  "type": key.short_type if key else None,
                                  "fingerprint": key.fingerprint if key else None}
        if self.state == CHANGED and self.pinned is not None:
            out["pinned_fingerprint"] = self.pinned.fingerprint
        return out


@dataclass
class PinPlan:
    known_hosts: KnownHosts
    results: list[PinResult] = field(default_factory=list)
    committed: bool = False

    def of(self, state: str) -> list[PinResult]:
        return [r for r in self.results if r.state == state]

    def require_decided(self) -> None:
        """Refuse (before anything is written) a changed key, or a new one not accepted."""
        changed = self.of(CHANGED)
        if changed:
            r = changed[0]
            assert r.offered is not None and r.pinned is not None
            raise Conflict(f"ssh host key of {host_label(r)} CHANGED: pinned "
                           f"{r.pinned.describe()}, the host now offers "
                           f"{r.offered.describe()}; a reinstalled host or a man in the "
                           f"middle: check it, then `virtfleet hostkey forget {r.host}` and "
                           "pin again (nothing was changed)", host=r.host)
        new = self.of(NEW)
        if new:
            keys = "; ".join(f"{r.host} {r.offered.describe() if r.offered else '?'}"
                             for r in new)
            raise InvalidInput("accept_new", f"{len(new)} ssh host key(s) not pinned yet ("
                               f"{keys}): compare each with the host's own (ssh-keygen -lf "
                               "/etc/ssh/ssh_host_ed25519_key.pub on its console), then run "
                               "again with --accept-new (nothing was changed)")

    def require_answered(self) -> None:
        """Refuse a host whose key could not be fetched. A host added on its own is one the
        operator means to use now: added unpinned, every connection to it would be refused,
        and pinning it later from whatever answers then is trust on first use, which the
        production transports do not do (`apply` may still declare hosts not installed yet)."""
        for r in self.of(UNREACHABLE):
            raise HostUnavailable(
                f"its ssh host key could not be fetched ({r.address}:{r.port} did not answer "
                "ssh-keyscan); nothing was added: add it once its sshd answers, or declare it "
                "in the fleet file (`apply`) and pin it later with `virtfleet hostkey pin`",
                host=r.host)

    def commit(self) -> None:
        """Write the accepted keys into known_hosts."""
        for r in self.of(ACCEPTED):
            assert r.offered is not None
            self.known_hosts.add(r.address, r.port, r.offered)
        self.committed = True

    def rows(self) -> list[dict[str, object]]:
        return [r.as_json() for r in self.results]


def host_label(r: PinResult) -> str:
    where = r.address if r.port == 22 else f"{r.address}:{r.port}"
    return f"{r.host} ({where})" if r.host != r.address else where


def ssh_target(uri: str) -> tuple[str, int] | None:
    """(address, port) of a qemu+ssh URI; None for any other transport."""
    parsed = parse_uri(uri)
    if parsed.transport != "ssh":
        return None
    return parsed.host, parsed.port or 22


def plan_pins(hosts: Sequence[tuple[str, str]], *, accept_new: bool, rescan: bool = False,
              td: TransportDir | None = None, timeout: int = 5) -> PinPlan:
    """For each (name, uri) over ssh: what its key is and what pinning would do.

    Hosts already pinned are not asked again unless `rescan` (then a different key is CHANGED).
    Writes nothing: `commit()` does, after the caller's own changes succeeded.
    """
    targets = [(name, t) for name, uri in hosts if (t := ssh_target(uri)) is not None]
    td = td or TransportDir.from_env()
    known = KnownHosts(td.known_hosts)
    plan = PinPlan(known)
    if not targets:
        return plan  # no qemu+ssh host: the transport directory is not even made
    td.ensure()
    to_scan: dict[int, list[PinResult]] = {}
    for name, (address, port) in targets:
        pinned = preferred(known.keys_for(address, port))
        r = PinResult(name, address, port, PINNED, pinned=pinned)
        plan.results.append(r)
        if pinned is None or rescan:
            to_scan.setdefault(port, []).append(r)
    for port, results in to_scan.items():
        try:
            found = scan(sorted({r.address for r in results}), port, timeout)
        except OSError as exc:
            raise ToolFailed(str(exc)) from None
        for r in results:
            offered = found.get(r.address, [])
            r.offered = preferred(offered)
            if r.offered is None:
                r.state = UNREACHABLE
            elif r.pinned is None:
                r.state = ACCEPTED if accept_new else NEW
            elif any(k == r.pinned for k in offered):
                r.state, r.offered = PINNED, r.pinned
            else:
                r.state = CHANGED
    return plan


def forget(address: str, port: int, td: TransportDir | None = None) -> int:
    td = (td or TransportDir.from_env()).ensure()
    return KnownHosts(td.known_hosts).forget(address, port)
