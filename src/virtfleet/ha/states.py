"""Each hypervisor's HA state machine, as pure functions: what was seen in, the next state and
the one action to take out. No libvirt, no BMC, no store: the monitor (monitor.py) does the
seeing and the acting, and these rules decide.

    ok ──lost──▶ suspect ──BMC: off──────────────────▶ fenced ──▶ restarting ──▶ recovered
                    │ BMC: on, grace over      ▲ off confirmed                        │
                    ▼                          │                            answers again
                 fencing ─────────────────────┘                                    ▼
                    │ BMC error, no BMC                               stale copies undefined
                    ▼                                                                ▼
               fence-failed  (VMs stay down, named; retried)                         ok

A lost connection makes a host *suspect*, never dead: libvirtd can die while its QEMUs run on,
and a network partition looks the same from here. The second path is the BMC: power off is
proof; power on gets a grace period for libvirtd to come back, then the host is powered off and
the BMC must confirm it. Nothing of a host is restarted elsewhere before that (`fenced`). No
BMC, or one that does not answer, means its VMs stay down and are named: never started
unfenced.

Two brakes: a host in maintenance is never fenced (an operator may be working on it), and no
host is fenced while more than half of its pod's unfenced hypervisors are unreachable at once:
then it is likelier that the controller is the one cut off (oVirt's "skip fencing if cluster
connectivity issues", at the same 50%).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from virtfleet.ha.fence import Power, PowerResult


class State(StrEnum):
    OK = "ok"
    SUSPECT = "suspect"
    FENCING = "fencing"
    FENCED = "fenced"
    RESTARTING = "restarting"
    RECOVERED = "recovered"
    FENCE_FAILED = "fence-failed"


# Powered off by us (or found off): what ran there is known to be gone.
DOWN = (State.FENCED, State.RESTARTING, State.RECOVERED)


class Action(StrEnum):
    NONE = "none"
    ASK_POWER = "ask-power"  # a BMC status call
    FENCE = "fence"  # power off through the BMC, confirmed by a status call
    RESTART = "restart"  # start the host's HA VMs elsewhere (or wherever they are defined)
    RECONCILE = "reconcile"  # the host answers again: remove its stale copies


@dataclass(frozen=True)
class Settings:
    grace_seconds: float = 10.0  # BMC says on: how long libvirtd may take to come back
    retry_seconds: float = 10.0  # a failed fence (or BMC call) is tried again after this
    power_every: float = 2.0  # while waiting out the grace, the BMC is asked again this often
    max_unreachable: float = 0.5  # fencing is held above this share of a pod's hosts

    def __post_init__(self) -> None:
        for name in ("grace_seconds", "retry_seconds", "power_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if not 0 < self.max_unreachable <= 1:
            raise ValueError("max_unreachable must be above 0 and at most 1")


@dataclass(frozen=True)
class HostHA:
    """Where one host stands."""

    host: str
    state: State = State.OK
    since: datetime | None = None  # entered `state`
    lost_at: datetime | None = None  # stopped answering
    power: Power | None = None  # the BMC's last answer while suspect
    power_at: datetime | None = None
    tried_at: datetime | None = None  # last fence attempt (retries are paced from it)
    detail: str = ""

    def to(self, state: State, now: datetime, detail: str = "") -> HostHA:
        return replace(self, state=state, since=now if state != self.state else self.since,
                       detail=detail)


@dataclass(frozen=True)
class Seen:
    """What the monitor saw of the host and its pod in this pass."""

    answering: bool
    lost_at: datetime | None  # when the controller lost it (if it did)
    ha_enabled: bool  # HA is on for its pod
    maintenance: bool
    has_bmc: bool
    pod_hosts: int  # the pod's hypervisors not fenced by us (DOWN states excluded) ...
    pod_unreachable: int  # ... and how many of those do not answer (this one included)


@dataclass(frozen=True)
class Step:
    host: HostHA
    action: Action
    journal: tuple[str, ...] = ()  # journal step kinds for what changed (suspect, fenced, ...)


def _age(since: datetime | None, now: datetime) -> float:
    return float("inf") if since is None else (now - since).total_seconds()


def held(seen: Seen, settings: Settings) -> bool:
    """Fencing is held: too much of the pod is unreachable for this to be the host's fault."""
    return seen.pod_hosts > 0 and seen.pod_unreachable > settings.max_unreachable * \
        seen.pod_hosts


def decide(h: HostHA, seen: Seen, settings: Settings, now: datetime) -> Step:
    """The next state and action for a host, from what was seen."""
    if seen.answering:
        return _answering(h, now)
    if h.state in (State.FENCED, State.RESTARTING):
        if not seen.ha_enabled:
            return Step(replace(h, detail="paused: HA is disabled for its pod"), Action.NONE)
        return Step(h, Action.RESTART)
    if h.state == State.RECOVERED:
        return Step(h, Action.NONE)  # waiting for it to come back
    journal: tuple[str, ...] = ()
    if h.state == State.OK:
        lost = seen.lost_at if seen.lost_at is not None and seen.lost_at < now else now
        h = replace(h.to(State.SUSPECT, now, "not answering"), lost_at=lost, power=None,
                    power_at=None, tried_at=None)
        journal = ("suspect",)
    if not seen.ha_enabled:
        return Step(h.to(State.SUSPECT, now, "not answering; HA is disabled for its pod"),
                    Action.NONE, journal)
    if seen.maintenance:
        return Step(h.to(State.SUSPECT, now, "not answering; in maintenance, so not fenced"),
                    Action.NONE, journal)
    if not seen.has_bmc:
        if h.state != State.FENCE_FAILED:
            journal += ("fence-failed",)
        return Step(h.to(State.FENCE_FAILED, now, "no BMC configured: it cannot be fenced, "
                         "so its HA VMs stay down"), Action.NONE, journal)
    if h.state == State.FENCING:
        return Step(h, Action.FENCE, journal)  # a fence a killed controller left unconfirmed
    if h.state == State.FENCE_FAILED:
        if _age(h.tried_at, now) < settings.retry_seconds:
            return Step(h, Action.NONE, journal)
        # What failed stays in view while the retry runs: an operator (and `ha status`)
        # must not read a BMC that never answers as a fresh suspicion.
        h = replace(h.to(State.SUSPECT, now, f"trying its BMC again; the last try: {h.detail}"),
                    power=None, power_at=None)
    # suspect: the BMC is the second path
    if h.power is None or (h.power is Power.ON and _age(h.power_at, now) >= settings.power_every):
        return Step(h, Action.ASK_POWER, journal)
    if h.power is Power.OFF:
        return Step(h.to(State.FENCED, now, "its BMC reports power off"), Action.RESTART,
                    (*journal, "fenced"))
    waited = _age(h.lost_at, now)
    if waited < settings.grace_seconds:
        return Step(h.to(State.SUSPECT, now, f"its BMC reports power on; waiting "
                         f"{settings.grace_seconds - waited:.0f}s more for libvirtd"),
                    Action.NONE, journal)
    if held(seen, settings):
        return Step(h.to(State.SUSPECT, now, f"fencing held: {seen.pod_unreachable} of "
                         f"{seen.pod_hosts} hypervisors of its pod are unreachable (the "
                         "controller may be the one cut off)"), Action.NONE, journal)
    return Step(h.to(State.FENCING, now, "powering it off through its BMC"), Action.FENCE,
                (*journal, "fencing"))


def _answering(h: HostHA, now: datetime) -> Step:
    if h.state in (State.FENCED, State.RESTARTING, State.FENCING):
        # Powered on again (or it came back while a fence was unconfirmed): finish the
        # restart first; its own copies count as places to start what is not running.
        return Step(h, Action.RESTART)
    if h.state == State.RECOVERED:
        return Step(h, Action.RECONCILE)
    if h.state == State.OK:
        return Step(h, Action.NONE)
    # suspect or fence-failed: libvirtd came back; nothing of it was started elsewhere.
    back = replace(h.to(State.OK, now, ""), lost_at=None, power=None, power_at=None,
                   tried_at=None)
    return Step(back, Action.RECONCILE, ("back",))


def after_power(h: HostHA, result: PowerResult, now: datetime) -> HostHA:
    """The BMC answered a status call (or failed to)."""
    if result.power is Power.ERROR:
        return replace(h.to(State.FENCE_FAILED, now, f"its BMC did not answer a status call: "
                            f"{result.message}; its HA VMs stay down"), tried_at=now,
                       power=None, power_at=None)
    return replace(h, power=result.power, power_at=now)


def after_fence(h: HostHA, result: PowerResult, now: datetime) -> Step:
    """The power-off through the BMC ended: confirmed off, or not."""
    if result.power is Power.OFF and result.confirmed:
        return Step(replace(h.to(State.FENCED, now, "powered off through its BMC (confirmed "
                                 "off)"), power=Power.OFF, power_at=now, tried_at=now),
                    Action.RESTART, ("fenced",))
    return Step(replace(h.to(State.FENCE_FAILED, now, f"fencing failed: {result.message}; its "
                             "HA VMs stay down"), tried_at=now, power=None, power_at=None),
                Action.NONE, ("fence-failed",))


def after_restart(h: HostHA, pending: int, total: int, why: str, now: datetime) -> Step:
    """A restart pass ended with `pending` of `total` HA VMs not yet running anywhere."""
    if pending == 0:
        return Step(h.to(State.RECOVERED, now, f"its {total} HA VM(s) running again"),
                    Action.NONE, ("done",))
    return Step(h.to(State.RESTARTING, now, f"{pending} of {total} HA VM(s) not running yet"
                     + (f": {why}" if why else "")), Action.NONE)


def after_reconcile(h: HostHA, now: datetime) -> HostHA:
    return replace(h.to(State.OK, now, ""), lost_at=None, power=None, power_at=None,
                   tried_at=None)
