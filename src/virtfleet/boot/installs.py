"""What `boot serve` does for each request, without HTTP: the install state machine.

    planned --script--> booting --kickstart--> installing --callback--> installed
        --enrolled in the inventory, `host check` run--> enrolled
    any of planned/booting/installing --callback status=failed--> failed (script again: booting)

Fetching the script issues a new token (the old one stops working); the kickstart and the
callback need it. A host that is installed or enrolled gets a script that boots its local
disk: a machine left to network-boot first is never reinstalled by accident.

Trust: each of the three requests must come from the host's reserved address or a relay of its
network (trust.py), checked before anything is issued or moved, so a stranger who knows a MAC
neither gets a token nor replaces the real machine's. Refused requests count against their
client, and failed token checks also against the host; past `guesses` in `guess_window` the
next requests get 429 (guard.py), and the log lines about refusals are capped the same way.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from virtfleet.boot import kickstart, tokens
from virtfleet.boot.cmdline import installer_args
from virtfleet.boot.guard import Window
from virtfleet.boot.scopes import BootHost, boot_hosts
from virtfleet.boot.templating import render
from virtfleet.boot.text import one_line, printable
from virtfleet.boot.trust import Address, speaks_for
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
GUESSES = 10  # refused requests per client, and failed token checks per host...
GUESS_WINDOW = timedelta(minutes=1)  # ...in any such window, before 429
ENROL_AT_ONCE = 4  # enrolments in progress per process (each claim holds a connection)
# States a callback leaves a host in, where its token is kept to recognise a repeat.
REPLAY_STATES = ("installed", "enrolled", "failed")


class Forbidden(VirtfleetError):
    """A request from an address that may not speak for the host, or a kickstart fetch or
    callback with a wrong, expired or missing token."""


class TooManyRequests(VirtfleetError):
    """Too many refused requests from this client (or token guesses for this host)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Subject:
    """What a request turned out to be about, for counting its refusal."""

    host: str | None = None
    mac: str | None = None
    token_checked: bool = False


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


def _check_host(host: HostRecord) -> tuple[bool, str]:
    """`host check` on the newly enrolled hypervisor: (ok, what it said)."""
    from virtfleet.fleet.queries import ask_fleet, check_of  # libvirt only when a host enrols

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
                 check_interval: timedelta = timedelta(seconds=20),
                 guesses: int = GUESSES, guess_window: timedelta = GUESS_WINDOW,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
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
        self.insecure_pods = {pod.name for site in fleet.sites for pod in site.pods
                              if pod.insecure_transport}
        window = guess_window.total_seconds()
        self.refusals = Window(guesses, window, monotonic)  # per client, per host (tokens)
        self.log_lines = Window(guesses, window, monotonic)  # refusal lines per client
        self._counts: dict[str, list[int]] = {}  # host -> [refused, limited], not yet stored
        self._counts_lock = threading.Lock()
        self.kickstarts = kickstart.Prepared()
        self._claimed: set[str] = set()  # hosts this process is enrolling
        self._claims_lock = threading.Lock()
        self._enrol_slots = threading.BoundedSemaphore(ENROL_AT_ONCE)

    def prepare_kickstarts(self) -> int:
        """Build and check every planned host's kickstart now, so that an install wave only
        fills in each machine's callback URL and token; how many were prepared. A host whose
        kickstart cannot be built is left to its request, which reports why."""
        done = 0
        for planned in self.by_name.values():
            try:
                self.kickstarts.prepare(planned.boot)
            except VirtfleetError as exc:
                log.warning("kickstart for %s: %s", planned.boot.name, printable(exc.message))
                continue
            done += 1
        return done

    def plan(self) -> int:
        """Record every planned install in the store; how many are new."""
        return self.store.plan_installs(
            [InstallPlan(host=p.boot.name, mac=p.boot.mac, site=p.boot.site, pod=p.boot.pod,
                         profile=p.boot.profile.name) for p in self.by_name.values()],
            self.now())

    def unfinished_enrolments(self, *, settled: timedelta | None = None) -> list[str]:
        """Hosts that called back but were not enrolled yet (a server stopped in between):
        `boot serve` enrols them when it starts. With `settled`, only those installed at
        least that long ago whose enrolment was not refused (the replicas' sweep: a refused
        one has its error on record, and a restart tries it again)."""
        cutoff = self.now() - settled if settled is not None else None
        return [r.host for r in self.store.installs()
                if r.state == "installed" and r.host in self.by_name
                and (cutoff is None or (not r.error and r.installed_at is not None
                                        and r.installed_at <= cutoff))]

    @contextmanager
    def _claim(self, host_name: str) -> Iterator[bool]:
        """This process's claim on enrolling `host_name`, then the store's (replicas)."""
        with self._claims_lock:
            if host_name in self._claimed:
                mine = False
            else:
                self._claimed.add(host_name)
                mine = True
        if not mine:
            yield False
            return
        try:
            with self.store.enrolment_claim(host_name) as held:
                yield held
        finally:
            with self._claims_lock:
                self._claimed.discard(host_name)

    # ----------------------------------------------------------------- the three requests

    def script(self, mac_text: str, base: str, client: Address) -> str:
        """The iPXE script for the machine with this MAC: install it, or boot its disk."""
        with self._watched("script", client, mac_text) as subject:
            mac = parse_mac(mac_text)
            subject.mac = mac
            planned = self.by_mac.get(mac)
            if planned is None:
                raise NotFound(f"no install is planned for MAC {mac}")
            host = planned.boot
            subject.host = host.name
            self._check_client(planned, client, "script")  # before a token is made or lost
            self._admit_host(host.name)
        base = check_base(base)  # before anything is recorded
        token = tokens.new_token()
        now = self.now()
        rec = self.store.issue_install_token(host.name, tokens.hash_token(token),
                                             now + self.token_ttl, now)
        if rec.state in DONE_STATES:
            log.info("script for %s (%s): %s, booting its local disk", host.name, mac, rec.state)
            return render("local.ipxe.j2", host=host.name, mac=mac, state=rec.state)
        log.info("script for %s (%s) from %s: booting, token valid until %s", host.name, mac,
                 client, f"{now + self.token_ttl:%H:%M:%S}")
        args = [a for a in installer_args(host)
                if not a.startswith(f"{host.profile.ks_arg}=")]
        args.append(f"{host.profile.ks_arg}={base}ks/{host.name}.ks?token={token}")
        return render("host.ipxe.j2", host=host, base=f"{base}files/", args=args)

    def _check_client(self, planned: Planned, client: Address, what: str) -> None:
        if not speaks_for(planned.boot, client):
            raise Forbidden(f"{what} for {planned.boot.name}: refused from {client}, which is "
                            "not this host's address")

    def _admit_host(self, host_name: str) -> None:
        wait = self.refusals.wait(("host", host_name))
        if wait:
            self._count(host_name, limited=1)
            seconds = math.ceil(wait)
            raise TooManyRequests(f"too many wrong tokens for {host_name}: try again in "
                                  f"{seconds} s", seconds)

    def _named(self, about: str) -> str | None:
        """The planned host a request names (by host name or MAC), if any."""
        if about in self.by_name:
            return about
        low = about.lower()
        planned = self.by_mac.get(low.replace("-", ":")) if _MAC_RE.match(low) else None
        return planned.boot.name if planned is not None else None

    @contextmanager
    def _watched(self, what: str, client: Address, about: str) -> Iterator[_Subject]:
        """Refuse a client over its limit (429); count and log (capped) what is refused.
        `about`: the host name or MAC the request names."""
        wait = self.refusals.wait(("client", client))
        if wait:
            named = self._named(about)
            if named is not None:
                self._count(named, limited=1)
            seconds = math.ceil(wait)
            raise TooManyRequests(f"too many refused requests from {client}: try again in "
                                  f"{seconds} s", seconds)
        subject = _Subject()
        try:
            yield subject
        except TooManyRequests:
            raise
        except (InvalidInput, NotFound, Forbidden) as exc:
            self.refusals.note(("client", client))
            if subject.token_checked and subject.host is not None:
                self.refusals.note(("host", subject.host))
            if subject.host is not None:
                self._count(subject.host, refused=1)
            about = (f"{subject.host} ({subject.mac})" if subject.host else
                     subject.mac or "an unknown host")
            reason = exc.message.removeprefix(f"{what} for {subject.host}: ")
            self.log_refusal(client, f"refused {what} for {about} from {client}: {reason}")
            exc.logged = True  # type: ignore[union-attr]  # the access log need not repeat it
            raise

    def log_refusal(self, client: Address | str, line: str,
                    logger: logging.Logger = log) -> None:
        """A warning about a refused request, at most `guesses` lines per client per window."""
        if self.log_lines.wait(("log", client)):
            return
        if self.log_lines.note(("log", client)) >= self.log_lines.limit:
            line += (f" (further refusals from {client} are not logged for up to "
                     f"{self.log_lines.window:.0f} s)")
        logger.warning("%s", printable(line))

    def _count(self, host: str, *, refused: int = 0, limited: int = 0) -> None:
        with self._counts_lock:
            counts = self._counts.setdefault(host, [0, 0])
            counts[0] += refused
            counts[1] += limited

    def flush_counts(self) -> None:
        """Write the refusal counts gathered since the last flush (boot serve does this about
        once a second: a flood of guesses must not become a flood of database writes)."""
        with self._counts_lock:
            counts, self._counts = self._counts, {}
        if not counts:
            return
        try:
            self.store.add_install_refusals({h: (c[0], c[1]) for h, c in counts.items()},
                                            self.now())
        except VirtfleetError:
            for host, (refused, limited) in counts.items():  # kept for the next flush
                self._count(host, refused=refused, limited=limited)
            raise

    def _authorize(self, what: str, host_name: str, token: str | None, client: Address,
                   subject: _Subject) -> tuple[Planned, InstallRecord]:
        planned = self.by_name.get(host_name)
        if planned is None:
            raise NotFound(f"no install is planned for {host_name[:100]!r}")
        subject.host, subject.mac = host_name, planned.boot.mac
        self._check_client(planned, client, what)
        self._admit_host(host_name)
        rec = self.store.install(host_name)
        if rec is None:
            raise NotFound(f"no install is recorded for {host_name!r}")
        # The token of a host past its callback is kept only to recognise that callback
        # repeated: it opens nothing else.
        held = rec.token_hash if what == "callback" or rec.state not in REPLAY_STATES else None
        why = tokens.refusal(token, held, rec.token_expires_at, self.now())
        if why is not None:
            subject.token_checked = True
            raise Forbidden(f"{what} for {host_name}: {why}")
        return planned, rec

    def kickstart(self, host_name: str, token: str | None, base: str, client: Address) -> str:
        with self._watched("kickstart", client, host_name) as subject:
            planned, _rec = self._authorize("kickstart", host_name, token, client, subject)
        assert token is not None
        base = check_base(base)  # before the state moves
        now = self.now()
        # The token lives on for the callback: a full token_ttl from here, however long the
        # machine took to boot the installer.
        self.store.move_install(host_name, "installing", now, expect=("booting", "installing"),
                                token_hash=tokens.hash_token(token),
                                token_expires_at=now + self.token_ttl)
        log.info("kickstart for %s (%s): installing", host_name, planned.boot.mac)
        return self.kickstarts.kickstart(planned.boot, f"{base}callback", token)

    def callback(self, host_name: str, mac_text: str, token: str | None, status: str,
                 error: str, client: Address) -> InstallRecord:
        """The installer says it is done (status installed) or gave up (status failed)."""
        with self._watched("callback", client, host_name) as subject:
            mac = parse_mac(mac_text)
            if status not in ("installed", "failed"):
                raise InvalidInput("status", f"{status[:40]!r} must be installed or failed")
            planned, rec = self._authorize("callback", host_name, token, client, subject)
            if planned.boot.mac != mac:
                subject.token_checked = True  # a good token with a wrong MAC: still a guess
                raise Forbidden(f"callback for {host_name}: MAC {mac} is not this host's")
        if _repeated(rec, status):
            return self._repeated_callback(rec, client)
        now = self.now()
        token_hash = tokens.hash_token(token or "")
        try:
            if status == "failed":
                why = one_line(error) or "the installer reported a failure"
                rec = self.store.move_install(host_name, "failed", now, error=why,
                                              expect=("booting", "installing"),
                                              token_hash=token_hash)
                log.warning("install of %s (%s) failed: %s", host_name, mac, why)
                return rec
            rec = self.store.move_install(host_name, "installed", now, expect=("installing",),
                                          token_hash=token_hash)
        except Conflict:
            # The same callback, sent again at the same time (a client's retry racing its
            # first try): whichever moved the install, both answer alike.
            again = self.store.install(host_name)
            if again is not None and again.token_hash == token_hash and _repeated(again, status):
                return self._repeated_callback(again, client)
            raise
        log.info("%s (%s) installed", host_name, mac)
        return rec

    def _repeated_callback(self, rec: InstallRecord, client: Address) -> InstallRecord:
        """A callback this host already made, with the same token and status: the installer's
        curl retried because the answer to the first was lost (a replica killed, a proxy's
        502). It gets the same answer, and nothing moves: an `installed` host is enrolled by
        whoever holds its claim, or by this replica if nobody does (server.py)."""
        log.info("%s (%s): callback repeated from %s; it is %s", rec.host, rec.mac, client,
                 rec.state)
        return rec

    # ----------------------------------------------------------------- after the callback

    def enroll(self, host_name: str, *, why: str = "") -> InstallRecord | None:
        """Add the installed host to the inventory (as `host add` does) and run `host check`
        on it. A failing check is recorded, and the host stays enrolled.

        Only under the host's claim (this process's, and the store's: another replica may be
        enrolling it), and only while it is `installed`: None when another has the claim.
        At most ENROL_AT_ONCE at a time (each claim holds a database connection)."""
        with self._enrol_slots, self._claim(host_name) as mine:
            if not mine:
                return None
            now = self.store.install(host_name)
            if now is None or now.state != "installed":
                return now  # enrolled meanwhile, by the replica that held the claim
            if why:
                log.info("enrolling %s: %s", host_name, why)
            planned = self.by_name[host_name]
            b, hv = planned.boot, planned.hypervisor
            try:
                self._add_to_inventory(b, hv)
            except VirtfleetError as exc:
                # The machine IS installed: it stays so (a next network boot boots its disk,
                # never a reinstall) with the error on record; a restarted `boot serve` tries
                # again.
                log.warning("enrolling %s failed: %s", host_name, printable(exc.message))
                return self.store.move_install(host_name, "installed", self.now(),
                                               error=f"enrol: {one_line(exc.message)}",
                                               expect=("installed",))
            record = HostRecord(name=hv.name, uri=hv.uri, site=b.site, pod=b.pod,
                                groups=hv.groups, maintenance=hv.maintenance)
            ok, detail = self._check(record)
            rec = self.store.move_install(host_name, "enrolled", self.now(),
                                          check=(ok, detail), expect=("installed",))
            log.info("%s enrolled; host check %s: %s", host_name,
                     "passed" if ok else "failed", detail)
        if ok:
            return rec
        give_up = time.monotonic() + self.check_wait.total_seconds()
        while not ok and time.monotonic() < give_up:
            time.sleep(self.check_interval.total_seconds())
            ok, detail = self._check(record)
            self.store.record_install_check(host_name, ok, detail, self.now())
        if ok:
            log.info("%s: host check passed: %s", host_name, detail)
        return self.store.install(host_name) or rec

    def _check(self, record: HostRecord) -> tuple[bool, str]:
        ok, detail = self.checker(record)
        return ok, one_line(detail)  # a remote libvirt's words: stored and shown escaped

    def _add_to_inventory(self, b: BootHost, hv: Hypervisor) -> None:
        try:
            self.store.add_hypervisor(b.site, b.pod, replace_provision(hv),
                                      insecure_transport=b.pod in self.insecure_pods)
        except Conflict:
            have = [h for h in self.store.hypervisors() if h.name == hv.name]
            if not have or have[0].uri != hv.uri:
                raise
            # Already in the inventory (apply -f ran first) with the same URI: nothing to add.


def _repeated(rec: InstallRecord, status: str) -> bool:
    """Whether a callback with `status` (its token already checked) was already taken."""
    return rec.state in (("failed",) if status == "failed" else DONE_STATES)


def replace_provision(hv: Hypervisor) -> Hypervisor:
    """The inventory keeps no provisioning data: drop it before adding the host."""
    return hv.model_copy(update={"provision": None})


__all__ = ["BootService", "Forbidden", "TooManyRequests", "check_base", "one_line",
           "parse_mac"]
