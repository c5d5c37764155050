"""The store's network-install records (boot_installs), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from virtfleet.errors import Conflict, InvalidInput, NotFound
from virtfleet.inventory.installs import InstallPlan
from virtfleet.inventory.store import Store

T0 = datetime(2026, 11, 26, 12, 0, 0, 250_000, tzinfo=UTC)
T1 = T0 + timedelta(minutes=3)
PLANS = [InstallPlan("hv2", "52:54:00:00:00:02", "oregon", "pod1", "el9"),
         InstallPlan("hv1", "52:54:00:00:00:01", "oregon", "pod1", "el9"),
         InstallPlan("hv3", "52:54:00:00:00:03", "austin", "pod9", "el9")]


def test_plan_is_idempotent_and_keeps_state(store_url: str) -> None:
    with Store(store_url) as s:
        assert s.plan_installs(PLANS, T0) == 3
        assert [r.host for r in s.installs()] == ["hv3", "hv1", "hv2"]  # site, pod, host
        assert all(r.state == "planned" and r.planned_at == T0 for r in s.installs())
        s.issue_install_token("hv1", "a" * 64, T1, T0)
        moved = [InstallPlan("hv1", "52:54:00:00:00:11", "oregon", "pod2", "el9"), *PLANS[2:]]
        assert s.plan_installs(moved, T1) == 0
        rec = s.install("hv1")
        assert rec is not None
        assert (rec.state, rec.mac, rec.pod, rec.token_hash) == (
            "booting", "52:54:00:00:00:11", "pod2", "a" * 64)
        assert rec.planned_at == T0 and rec.updated_at == T1
        assert s.install_by_mac("52:54:00:00:00:11") == rec
        assert s.install_by_mac("52:54:00:00:00:01") is None
        assert s.install("nope") is None


def test_a_mac_recorded_for_another_host_is_a_conflict(store_url: str) -> None:
    with Store(store_url) as s:
        s.plan_installs(PLANS, T0)
        with pytest.raises(Conflict, match="MAC 52:54:00:00:00:01 of 'hv9' is recorded for "
                                           "'hv1'"):
            s.plan_installs([InstallPlan("hv9", "52:54:00:00:00:01", "o", "p", "el9")], T1)
        assert s.install("hv9") is None


def test_tokens_and_transitions(store_url: str) -> None:
    with Store(store_url) as s:
        s.plan_installs(PLANS, T0)
        rec = s.issue_install_token("hv1", "b" * 64, T1, T0)
        assert (rec.state, rec.booting_at, rec.token_expires_at) == ("booting", T0, T1)
        rec = s.move_install("hv1", "installing", T0, expect=("booting",))
        assert rec.installing_at == T0
        with pytest.raises(Conflict, match="install of 'hv1' is installing, not booting: "
                                           "cannot move it to installed"):
            s.move_install("hv1", "installed", T1, expect=("booting",))
        rec = s.move_install("hv1", "installed", T1, expect=("installing",), clear_token=True)
        assert (rec.state, rec.token_hash, rec.token_expires_at) == ("installed", None, None)
        # Done: a new script issues no token and changes nothing.
        same = s.issue_install_token("hv1", "c" * 64, T1 + T1.resolution, T1)
        assert same == rec
        rec = s.move_install("hv1", "enrolled", T1, expect=("installed",),
                             check=(False, "no KVM: guests would run under TCG"))
        assert (rec.check_ok, rec.check_detail, rec.enrolled_at) == (
            False, "no KVM: guests would run under TCG", T1)
        json = rec.as_json()
        assert json["state"] == "enrolled" and "token_hash" not in json


def test_failure_and_retry(store_url: str) -> None:
    with Store(store_url) as s:
        s.plan_installs(PLANS, T0)
        s.issue_install_token("hv2", "d" * 64, T1, T0)
        rec = s.move_install("hv2", "failed", T1, expect=("booting", "installing"),
                             error="disk not found", clear_token=True)
        assert (rec.state, rec.error, rec.failed_at) == ("failed", "disk not found", T1)
        rec = s.issue_install_token("hv2", "e" * 64, T1 + timedelta(hours=1), T1)
        assert (rec.state, rec.error, rec.failed_at, rec.token_hash) == (
            "booting", "", None, "e" * 64)


def test_bad_arguments(store_url: str) -> None:
    with Store(store_url) as s:
        s.plan_installs(PLANS, T0)
        with pytest.raises(NotFound, match="no install is planned for 'hv9'"):
            s.issue_install_token("hv9", "f" * 64, T1, T0)
        with pytest.raises(NotFound):
            s.move_install("hv9", "installing", T0, expect=("booting",))
        with pytest.raises(InvalidInput, match="^state: must be one of planned, booting"):
            s.move_install("hv1", "done", T0, expect=("booting",))
        with pytest.raises(InvalidInput, match="^at: must be a timezone-aware"):
            s.plan_installs(PLANS, datetime(2026, 1, 1))  # noqa: DTZ001
        assert s.install("hv1").state == "planned"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- replicas


def test_replicas_planning_at_once_all_start(store_url: str) -> None:
    # Three boot serve replicas started together on a fresh store: without the planning lock
    # all three read "no rows" and insert the same ones, and two of them fail to start.
    import threading

    from sqlalchemy import delete

    from virtfleet.inventory import tables as t

    many = [InstallPlan(f"hv{i}", f"52:54:00:00:01:{i:02x}", "oregon", "pod1", "el9")
            for i in range(1, 200)]
    stores = [Store(store_url) for _ in range(3)]
    start = threading.Barrier(len(stores))
    errors: list[Exception] = []
    new: list[int] = []

    def plan(s: Store) -> None:
        start.wait()
        try:
            new.append(s.plan_installs(many, T0))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    try:
        for _round in range(3):
            new.clear()
            threads = [threading.Thread(target=plan, args=(s,)) for s in stores]
            for th in threads:
                th.start()
            for th in threads:
                th.join(60)
            assert not errors, errors
            assert sorted(new) == [0, 0, len(many)]
            assert len(stores[0].installs()) == len(many)
            with stores[0]._tx("test: forget the installs", write=True) as conn:
                conn.execute(delete(t.boot_installs))
    finally:
        for s in stores:
            s.close()


def test_an_enrolment_claim_is_held_by_one_replica(store_url: str) -> None:
    with Store(store_url) as a, Store(store_url) as b:
        with a.enrolment_claim("hv1") as mine:
            assert mine
            with b.enrolment_claim("hv1") as theirs, b.enrolment_claim("hv2") as other:
                # SQLite has one boot serve per store: every claim is its own.
                assert theirs is (a.backend == "sqlite") and other
        with b.enrolment_claim("hv1") as theirs:
            assert theirs  # released with the block


@pytest.mark.postgres
def test_a_killed_replicas_claim_is_free_at_once(store_url: str) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite has no claims held across processes")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom virtfleet.inventory.store import Store\n"
         "with Store(sys.argv[1]).enrolment_claim('hv1') as mine:\n"
         "    print(mine, flush=True)\n    time.sleep(120)\n", store_url],
        stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "True\n"
        with Store(store_url) as s:
            with s.enrolment_claim("hv1") as mine:
                assert not mine  # held by a live process
            holder.send_signal(signal.SIGKILL)
            holder.wait(30)
            deadline = time.monotonic() + 20
            while True:  # PostgreSQL drops the lock when it sees the connection closed
                with s.enrolment_claim("hv1") as mine:
                    if mine:
                        break
                assert time.monotonic() < deadline, "the dead holder's claim stayed"
                time.sleep(0.05)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(30)
