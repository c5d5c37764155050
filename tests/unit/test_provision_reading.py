"""Provisioning asks each host once (issue 16): one reading of the pod per call, shared by the
name check, placement and the MAC rule; capabilities once per connection; an overlay made in
one call, its name clash still refused. On test-driver hypervisors; the counts are of
virtfleet's own Host methods (and of libvirt calls through a counting wrapper), never of a
mock: each call still reaches libvirt."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from virtfleet.errors import Conflict, VirtfleetError
from virtfleet.virt import storage
from virtfleet.virt.guest import Guest
from virtfleet.virt.host import Host

from .test_templates import Env, env  # noqa: F401  (the fixture: a pod with a template)

__all__ = ["env"]


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[tuple[str, str]]]:
    """How many times each host's domains were listed (with or without their XML), and
    looked up by name: (what, host) -> times."""
    seen: Counter[tuple[str, str]] = Counter()

    def counted(what: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Host, *args: Any) -> Any:
            seen[what, self.label] += 1
            return real(self, *args)
        return call

    for name, what in (("list_domains", "listed"), ("domains_with_xml", "listed"),
                       ("has_domain", "looked up")):
        monkeypatch.setattr(Host, name, counted(what, getattr(Host, name)))
    yield seen


def test_a_clone_run_lists_each_pod_host_once(env: Env,
                                              listings: Counter[tuple[str, str]]) -> None:
    from virtfleet.provision.clone import CloneRequest, clone

    made = clone(env.store, env.pool, CloneRequest(template="tpl", name="web", count=3,
                                                   host="hv1"))
    assert [c.ok for c in made] == [True, True, True]
    # the name check, placement and the MAC rule shared one listing of each pod host (before:
    # three each, one for the preflight's names, one for placement, one for the MACs); the
    # lookups are finding the template, which the store has not seen yet
    assert listings == {("listed", "hv1"): 1, ("listed", "hv2"): 1,
                        ("looked up", "hv1"): 1, ("looked up", "hv2"): 1}


def test_the_reading_still_refuses_a_taken_name_and_mac(env: Env) -> None:
    """The checks read from the shared reading are the same checks: a name on another pod
    host is refused, and the clones' MACs avoid every MAC already in the pod."""
    from virtfleet.provision.clone import CloneRequest, clone

    with pytest.raises(Conflict, match="a VM named 'plain' already exists on hv1"):
        clone(env.store, env.pool, CloneRequest(template="tpl", name="plain", host="hv2",
                                                linked=False))
    before = {str(i.mac).lower() for h in ("hv1", "hv2") for d in env.host(h).list_domains()
              for i in Guest.lookup(env.host(h), d.name).domain().devices.interfaces if i.mac}
    assert before  # the fixture's VMs have MACs to avoid
    made = clone(env.store, env.pool, CloneRequest(template="tpl", name="w", count=5))
    assert all(c.ok for c in made)
    mine = {m for c in made for m in c.macs}
    assert len(mine) == 5 and not mine & before


def test_vm_create_reads_the_pod_once(env: Env, listings: Counter[tuple[str, str]]) -> None:
    from virtfleet.design.spec import vm_spec
    from virtfleet.provision.create import create_vm, reserve_and_read

    spec = vm_spec(name="db01", vcpus=1, memory="512M", disks=[], networks=["network=default"],
                   pxe=True)
    target, reading = reserve_and_read(env.store, env.pool, spec, host=None, site=None,
                                       pod="or-pod1", group=None)
    made = create_vm(spec, target, env.store, env.pool, start=False, reading=reading)
    assert made.name == "db01"
    # one listing each, and no lookup of the name on each pod host once the room is claimed
    assert listings == {("listed", "hv1"): 1, ("listed", "hv2"): 1}


class _Counting:
    """A libvirt connection that counts the calls made through it (and makes them)."""

    def __init__(self, conn: Any) -> None:
        self._conn, self.calls = conn, Counter[str]()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._conn, name)
        if not callable(attr):
            return attr

        def call(*args: Any) -> Any:
            self.calls[name] += 1
            return attr(*args)
        return call


def test_capabilities_are_asked_once_per_connection(env: Env) -> None:
    uri = env.hosts["hv1"].uri
    with Host.open(uri, keepalive=False) as h:
        counting = _Counting(h._conn)
        h._conn = counting
        first = h.capabilities_xml()
        assert h.capabilities_xml() == first and "<capabilities>" in first
        outcomes = []
        for _ in range(2):
            try:
                outcomes.append(h.domain_capabilities_xml("kvm")[:20])
            except VirtfleetError as exc:  # a refusal is remembered too
                outcomes.append(exc.message)
        assert outcomes[0] == outcomes[1]
        assert counting.calls == {"getCapabilities": 1, "getDomainCapabilities": 1}
    with Host.open(uri, keepalive=False) as again:  # a new connection asks again
        counting = _Counting(again._conn)
        again._conn = counting
        assert again.capabilities_xml() == first
        assert counting.calls == {"getCapabilities": 1}


def test_an_overlay_whose_name_is_taken_is_refused(env: Env, tmp_path: Path) -> None:
    h = env.host()
    [base] = [v for v in storage.volumes(h, "default") if v.name == "base.qcow2"]
    pool = storage.OverlayPool(h, "default")
    path = pool.create("web.qcow2", base)
    assert storage.volume_at(h, path) is not None
    with pytest.raises(Conflict, match="volume 'web.qcow2' already exists in pool 'default'"):
        pool.create("web.qcow2", base)
    vol = storage.volume_at(h, path)
    assert vol is not None and vol.backing_path == base.path  # the first one untouched
