"""What `boot serve` does for each request, without HTTP: the install state machine.

    planned --script--> booting --kickstart--> installing --callback--> installed
        --enrolled in the inventory, `host check` run--> enrolled
    any of planned/booting/installing --callback status=failed--> failed (script again: booting)

Fetching the script issues a new token (the old one stops working); the kickstart and the
callback need it. A host that is installed or enrolled gets a script that boots its local
disk: a machine left to network-boot first is never reinstalled by accident.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from virtfleet.boot import kickstart, tokens
from virtfleet.boot.cmdline import installer_args
from virtfleet.boot.scopes import BootHost, boot_hosts
from virtfleet.boot.templating import render
from virtfleet.errors import Conflict, InvalidInput, NotFound, VirtfleetError
from virtfleet.inventory.fleetfile import Fleet, Hypervisor
from virtfleet.inventory.installs import DONE_STATES, InstallPlan, InstallRecord
from virtfleet.inventory.records import HostRecord
from virtfleet.inventory.store import Store

log = logging.getLogger("virtfleet.boot")

_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}$")
# The base URL comes from the request's Host header and lands in a script and on a kernel
# command line: hold it to scheme://host[:port]/ with nothing the formats read specially.
_BASE_RE = re.compile(r"^https?://[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?/$")
MAX_ERROR = 500


class Forbidden(VirtfleetError):
    """A kickstart fetch or callback with a wrong, expired or missing token."""


def parse_mac(value: str, field: str = "mac") -> str:
    """52:54:00:12:34:56 from either spelling (colons, or iPXE's hexhyp hyphens)."""
    low = value.lower()
    if not _MAC_RE.match(low):
        raise InvalidInput(field, f"{value[:40]!r} is not a MAC address like 52:54:00:12:34:56")
    return low.replace("-", ":")


def check_base(base: str, field: str = "base URL") -> str:
    if not _BASE_RE.match(base):
        raise InvalidInput(field, f"{base[:80]!r} must be http(s)://host[:port]/")
    return base


@dataclass(frozen=True)
class Planned:
    boot: BootHost
    hypervisor: Hypervisor


def one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_ERROR else flat[:MAX_ERROR - 3] + "..."


def _check_host(host: HostRecord) -> tuple[bool, str]:
    """`host check` on the newly enrolled hypervisor: (ok, what it said)."""
    from virtfleet.queries import ask_fleet, check_of  # libvirt only when a host enrols

    result = ask_fleet([host], check_of)[0]
    if result.error is not None:
        return False, one_line(result.error.message)
    chk = result.value
    assert chk is not None
    return chk.ok, one_line("; ".join(chk.problems) or
                            f"ok: {', '.join(chk.virt_types)}"
                            + (" (kvm usable)" if chk.kvm_usable else ""))


class BootService:
    """The fleet file's planned installs, the store, and the files directory."""

    def __init__(self, fleet: Fleet, store: Store, *, files: Path | None,
                 token_ttl: timedelta, now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 checker: Callable[[HostRecord], tuple[bool, str]] = _check_host,
                 check_wait: timedelta = timedelta(0),
                 check_interval: timedelta = timedelta(seconds=20)) -> None:
        self.store = store
        self.files = files.resolve() if files is not None else None
        self.token_ttl = token_ttl
        self.now = now
        self.checker = checker
        # The callback comes from the installer's %post, before the machine reboots into its
        # new system: libvirtd answers only after that, so the check is retried for a while.
        self.check_wait = check_wait
        self.check_interval = check_interval
        self.by_name: dict[str, Planned] = {}
        for site in fleet.sites:
            hvs = {hv.name: hv for pod in site.pods for hv in pod.hypervisors}
            for b in boot_hosts(fleet, site):
                self.by_name[b.name] = Planned(b, hvs[b.name])
        self.by_mac = {p.boot.mac: p for p in self.by_name.values()}

    def plan(self) -> int:
        """Record every planned install in the store; how many are new."""
        return self.store.plan_installs(
            [InstallPlan(host=p.boot.name, mac=p.boot.mac, site=p.boot.site, pod=p.boot.pod,
                         profile=p.boot.profile.name) for p in self.by_name.values()],
            self.now())

    def unfinished_enrolments(self) -> list[str]:
        """Hosts that called back but were not enrolled yet (a server stopped in between):
        `boot serve` enrols them when it starts."""
        return [r.host for r in self.store.installs()
                if r.state == "installed" and r.host in self.by_name]

    # ----------------------------------------------------------------- the three requests

    def script(self, mac_text: str, base: str) -> str:
        """The iPXE script for the machine with this MAC: install it, or boot its disk."""
        mac = parse_mac(mac_text)
        planned = self.by_mac.get(mac)
        if planned is None:
            raise NotFound(f"no install is planned for MAC {mac}")
        host = planned.boot
        base = check_base(base)  # before anything is recorded
        token = tokens.new_token()
        now = self.now()
        rec = self.store.issue_install_token(host.name, tokens.hash_token(token),
                                             now + self.token_ttl, now)
        if rec.state in DONE_STATES:
            log.info("script for %s (%s): %s, booting its local disk", host.name, mac, rec.state)
            return render("local.ipxe.j2", host=host.name, mac=mac, state=rec.state)
        log.info("script for %s (%s): booting, token valid until %s", host.name, mac,
                 f"{now + self.token_ttl:%H:%M:%S}")
        args = [a for a in installer_args(host)
                if not a.startswith(f"{host.profile.ks_arg}=")]
        args.append(f"{host.profile.ks_arg}={base}ks/{host.name}.ks?token={token}")
        return render("host.ipxe.j2", host=host, base=f"{base}files/", args=args)

    def _authorize(self, what: str, host_name: str, token: str | None) -> Planned:
        planned = self.by_name.get(host_name)
        if planned is None:
            raise NotFound(f"no install is planned for {host_name!r}")
        rec = self.store.install(host_name)
        if rec is None:
            raise NotFound(f"no install is recorded for {host_name!r}")
        why = tokens.refusal(token, rec.token_hash, rec.token_expires_at, self.now())
        if why is not None:
            log.warning("refused %s for %s (%s): %s", what, host_name, rec.mac, why)
            raise Forbidden(f"{what} for {host_name}: {why}")
        return planned

    def kickstart(self, host_name: str, token: str | None, base: str) -> str:
        planned = self._authorize("kickstart", host_name, token)
        assert token is not None
        base = check_base(base)  # before the state moves
        now = self.now()
        # The token lives on for the callback: a full token_ttl from here, however long the
        # machine took to boot the installer.
        self.store.move_install(host_name, "installing", now, expect=("booting", "installing"),
                                token_hash=tokens.hash_token(token),
                                token_expires_at=now + self.token_ttl)
        log.info("kickstart for %s (%s): installing", host_name, planned.boot.mac)
        cb = kickstart.Callback(f"{base}callback", (("token", token),))
        return kickstart.hypervisor_kickstart(planned.boot, cb)

    def callback(self, host_name: str, mac_text: str, token: str | None, status: str,
                 error: str) -> InstallRecord:
        """The installer says it is done (status installed) or gave up (status failed)."""
        mac = parse_mac(mac_text)
        if status not in ("installed", "failed"):
            raise InvalidInput("status", f"{status[:40]!r} must be installed or failed")
        planned = self._authorize("callback", host_name, token)
        if planned.boot.mac != mac:
            log.warning("refused callback for %s: MAC %s is not its MAC %s", host_name, mac,
                        planned.boot.mac)
            raise Forbidden(f"callback for {host_name}: MAC {mac} is not this host's")
        now = self.now()
        if status == "failed":
            why = one_line(error) or "the installer reported a failure"
            log.warning("install of %s (%s) failed: %s", host_name, mac, why)
            return self.store.move_install(host_name, "failed", now, error=why,
                                           clear_token=True,
                                           expect=("booting", "installing"))
        rec = self.store.move_install(host_name, "installed", now, clear_token=True,
                                      expect=("installing",), token_hash=tokens.hash_token(
                                          token or ""))
        log.info("%s (%s) installed", host_name, mac)
        return rec

    # ----------------------------------------------------------------- after the callback

    def enroll(self, host_name: str) -> InstallRecord:
        """Add the installed host to the inventory (as `host add` does) and run `host check`
        on it. A failing check is recorded, and the host stays enrolled."""
        planned = self.by_name[host_name]
        b, hv = planned.boot, planned.hypervisor
        try:
            self._add_to_inventory(b, hv)
        except VirtfleetError as exc:
            # The machine IS installed: it stays so (a next network boot boots its disk, never
            # a reinstall) with the error on record; a restarted `boot serve` tries again.
            log.warning("enrolling %s failed: %s", host_name, exc.message)
            return self.store.move_install(host_name, "installed", self.now(),
                                           error=f"enrol: {one_line(exc.message)}",
                                           expect=("installed",))
        record = HostRecord(name=hv.name, uri=hv.uri, site=b.site, pod=b.pod,
                            groups=hv.groups, maintenance=hv.maintenance)
        ok, detail = self.checker(record)
        rec = self.store.move_install(host_name, "enrolled", self.now(), check=(ok, detail),
                                      expect=("installed",))
        give_up = time.monotonic() + self.check_wait.total_seconds()
        while not ok and time.monotonic() < give_up:
            time.sleep(self.check_interval.total_seconds())
            ok, detail = self.checker(record)
            self.store.record_install_check(host_name, ok, detail, self.now())
        log.info("%s enrolled; host check %s: %s", host_name, "passed" if ok else "failed",
                 detail)
        return self.store.install(host_name) or rec

    def _add_to_inventory(self, b: BootHost, hv: Hypervisor) -> None:
        try:
            self.store.add_hypervisor(b.site, b.pod, replace_provision(hv))
        except Conflict:
            have = [h for h in self.store.hypervisors() if h.name == hv.name]
            if not have or have[0].uri != hv.uri:
                raise
            # Already in the inventory (apply -f ran first) with the same URI: nothing to add.


def replace_provision(hv: Hypervisor) -> Hypervisor:
    """The inventory keeps no provisioning data: drop it before adding the host."""
    return hv.model_copy(update={"provision": None})


__all__ = ["BootService", "Forbidden", "check_base", "parse_mac"]
