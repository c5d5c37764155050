"""The HA state machine (ha/states.py), as pure functions: what it decides from what is seen.

No libvirt and no BMC: a host's state, what a pass saw, and a clock go in; the next state, the
one action and the journal steps come out.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from virtfleet.ha.fence import Power, PowerResult
from virtfleet.ha.states import (
    Action,
    HostHA,
    Seen,
    Settings,
    State,
    after_fence,
    after_power,
    after_reconcile,
    after_restart,
    decide,
    held,
)

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
RULES = Settings(grace_seconds=10, retry_seconds=30, power_every=2)
LOST = Seen(answering=False, lost_at=T0, ha_enabled=True, maintenance=False, has_bmc=True,
            pod_hosts=3, pod_unreachable=1)
BACK = replace(LOST, answering=True, lost_at=None, pod_unreachable=0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def power(p: Power, confirmed: bool = True, message: str = "") -> PowerResult:
    return PowerResult(host="hv1", agent="fence_ipmilan", action="status", power=p,
                       message=message or f"Status: {p.value.upper()}", seconds=0.1,
                       confirmed=confirmed)


def suspect_with(p: Power, seconds: float = 0.0) -> HostHA:
    h = decide(HostHA("hv1"), LOST, RULES, at(seconds)).host
    return after_power(h, power(p), at(seconds))


# ------------------------------------------------------------------ detection


def test_an_answering_host_stays_ok_and_nothing_is_asked() -> None:
    step = decide(HostHA("hv1"), BACK, RULES, at(0))
    assert (step.host.state, step.action, step.journal) == (State.OK, Action.NONE, ())


def test_a_lost_host_is_suspect_not_dead_and_its_bmc_is_asked_first() -> None:
    step = decide(HostHA("hv1"), LOST, RULES, at(1))
    assert step.host.state == State.SUSPECT
    assert step.action is Action.ASK_POWER  # the second path, before anything else
    assert step.journal == ("suspect",)
    assert step.host.lost_at == T0  # since the controller lost it, not since this pass


def test_power_off_at_the_bmc_is_proof_enough_fenced_at_once() -> None:
    step = decide(suspect_with(Power.OFF), LOST, RULES, at(1))
    assert (step.host.state, step.action) == (State.FENCED, Action.RESTART)
    assert step.journal == ("fenced",)
    assert "power off" in step.host.detail


def test_power_on_waits_out_the_grace_period_then_fences() -> None:
    h = suspect_with(Power.ON, 1)
    step = decide(h, LOST, RULES, at(1.5))
    assert (step.host.state, step.action) == (State.SUSPECT, Action.NONE)
    assert "waiting" in step.host.detail
    # The BMC is asked again while waiting (a host may finish dying: the fast path).
    assert decide(h, LOST, RULES, at(3.5)).action is Action.ASK_POWER
    h = after_power(h, power(Power.ON), at(9.9))
    assert decide(h, LOST, RULES, at(9.95)).action is Action.NONE  # not yet: 10 s of grace
    h = after_power(h, power(Power.ON), at(10.0))
    step = decide(h, LOST, RULES, at(10.0))
    assert (step.host.state, step.action, step.journal) == (State.FENCING, Action.FENCE,
                                                           ("fencing",))


def test_no_grace_at_all_fences_as_soon_as_the_bmc_says_on() -> None:
    rules = replace(RULES, grace_seconds=0)
    h = after_power(decide(HostHA("hv1"), LOST, rules, at(0)).host, power(Power.ON), at(0))
    assert decide(h, LOST, rules, at(0)).action is Action.FENCE


def test_a_host_that_answers_during_the_grace_is_ok_again_and_nothing_was_done() -> None:
    h = suspect_with(Power.ON, 1)
    step = decide(h, BACK, RULES, at(5))
    assert step.host.state == State.OK
    assert step.journal == ("back",)
    assert step.host.lost_at is None and step.host.power is None


# ------------------------------------------------------------------ fencing


def test_fenced_only_when_the_power_off_is_confirmed() -> None:
    h = HostHA("hv1", State.FENCING)
    step = after_fence(h, replace(power(Power.OFF), action="off"), at(11))
    assert (step.host.state, step.action, step.journal) == (State.FENCED, Action.RESTART,
                                                           ("fenced",))
    unconfirmed = after_fence(h, replace(power(Power.OFF), action="off", confirmed=False),
                              at(11))
    assert unconfirmed.host.state == State.FENCE_FAILED
    assert unconfirmed.action is Action.NONE


def test_a_failed_fence_restarts_nothing_and_is_retried_after_the_retry_period() -> None:
    h = HostHA("hv1", State.FENCING, lost_at=T0)
    failed = after_fence(h, power(Power.ERROR, False, "the BMC did not answer"), at(11))
    assert (failed.host.state, failed.action, failed.journal) == (
        State.FENCE_FAILED, Action.NONE, ("fence-failed",))
    assert "the BMC did not answer" in failed.host.detail
    assert "stay down" in failed.host.detail
    assert decide(failed.host, LOST, RULES, at(20)).action is Action.NONE
    again = decide(failed.host, LOST, RULES, at(41))
    assert (again.host.state, again.action) == (State.SUSPECT, Action.ASK_POWER)
    # while the retry runs, what failed stays in view (ha status shows it)
    assert "trying its BMC again" in again.host.detail
    assert "the BMC did not answer" in again.host.detail


def test_a_bmc_that_does_not_answer_a_status_call_means_unknown_never_off() -> None:
    h = decide(HostHA("hv1"), LOST, RULES, at(0)).host
    after = after_power(h, power(Power.ERROR, False, "Connection timed out"), at(0))
    assert after.state == State.FENCE_FAILED
    assert "did not answer" in after.detail and "Connection timed out" in after.detail
    assert decide(after, LOST, RULES, at(1)).action is Action.NONE


def test_no_bmc_means_its_vms_stay_down_and_nothing_is_asked() -> None:
    seen = replace(LOST, has_bmc=False)
    step = decide(HostHA("hv1"), seen, RULES, at(0))
    assert (step.host.state, step.action) == (State.FENCE_FAILED, Action.NONE)
    assert step.journal == ("suspect", "fence-failed")
    assert "no BMC configured" in step.host.detail
    # It stays so, however long it is retried, and says it once.
    later = decide(step.host, seen, RULES, at(100))
    assert (later.host.state, later.action, later.journal) == (State.FENCE_FAILED,
                                                              Action.NONE, ())


def test_a_fence_left_unconfirmed_by_a_killed_controller_is_run_again() -> None:
    step = decide(HostHA("hv1", State.FENCING, lost_at=T0), LOST, RULES, at(50))
    assert step.action is Action.FENCE


@pytest.mark.parametrize("unreachable,total,fenced", [(1, 3, True), (2, 3, False),
                                                      (1, 2, True), (2, 4, True),
                                                      (3, 4, False), (1, 1, False)])
def test_fencing_is_held_when_most_of_the_pod_is_unreachable(unreachable: int, total: int,
                                                            fenced: bool) -> None:
    seen = replace(LOST, pod_hosts=total, pod_unreachable=unreachable)
    assert held(seen, RULES) is not fenced
    h = after_power(decide(HostHA("hv1"), seen, RULES, at(20)).host, power(Power.ON), at(20))
    step = decide(h, seen, RULES, at(20))
    assert (step.action is Action.FENCE) is fenced
    if not fenced:
        assert "fencing held" in step.host.detail and "cut off" in step.host.detail


def test_a_host_in_maintenance_is_never_fenced() -> None:
    seen = replace(LOST, maintenance=True)
    step = decide(HostHA("hv1"), seen, RULES, at(100))
    assert (step.host.state, step.action) == (State.SUSPECT, Action.NONE)
    assert "maintenance" in step.host.detail


def test_ha_disabled_in_its_pod_means_no_action_and_a_recovery_pauses() -> None:
    seen = replace(LOST, ha_enabled=False)
    step = decide(HostHA("hv1"), seen, RULES, at(100))
    assert (step.host.state, step.action) == (State.SUSPECT, Action.NONE)
    assert "disabled" in step.host.detail
    paused = decide(HostHA("hv1", State.RESTARTING), seen, RULES, at(100))
    assert (paused.host.state, paused.action) == (State.RESTARTING, Action.NONE)
    assert "paused" in paused.host.detail
    assert decide(HostHA("hv1", State.RESTARTING), LOST, RULES, at(100)).action \
        is Action.RESTART


# ------------------------------------------------------------------ restart and return


def test_restarting_until_every_vm_runs_then_recovered() -> None:
    h = HostHA("hv1", State.RESTARTING)
    part = after_restart(h, 1, 3, "web3: no room", at(1))
    assert (part.host.state, part.journal) == (State.RESTARTING, ())
    assert part.host.detail == "1 of 3 HA VM(s) not running yet: web3: no room"
    done = after_restart(h, 0, 3, "", at(2))
    assert (done.host.state, done.journal) == (State.RECOVERED, ("done",))
    # Recovered waits for the host; nothing more is done while it is away.
    assert decide(done.host, LOST, RULES, at(3)).action is Action.NONE


def test_a_returning_host_is_reconciled_then_ok() -> None:
    step = decide(HostHA("hv1", State.RECOVERED), BACK, RULES, at(5))
    assert step.action is Action.RECONCILE
    assert after_reconcile(step.host, at(6)).state == State.OK


@pytest.mark.parametrize("state", [State.FENCED, State.RESTARTING, State.FENCING])
def test_a_host_back_before_its_recovery_ended_finishes_the_restart_first(
        state: State) -> None:
    # Its own copies then count among the places the VMs may start (restart.py).
    assert decide(HostHA("hv1", state), BACK, RULES, at(5)).action is Action.RESTART


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="grace_seconds"):
        Settings(grace_seconds=-1)
    with pytest.raises(ValueError, match="max_unreachable"):
        Settings(max_unreachable=0)
