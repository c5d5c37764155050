"""`vm create` on test-driver hypervisors: volumes and domain made, or nothing at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import libvirt
import pytest
import yaml

from virtfleet.design.spec import vm_spec
from virtfleet.errors import Conflict, InvalidInput
from virtfleet.inventory.fleetfile import load_fleet
from virtfleet.inventory.store import Store
from virtfleet.provision.create import create_vm, reserve_host
from virtfleet.virt import storage
from virtfleet.virt.fanout import ConnectionPool
from virtfleet.virt.guest import Guest

from .cli import run
from .nodes import node_uri
from .tools import require_tool


@pytest.fixture
def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump({"sites": [{"name": "oregon", "pods": [
        {"name": "or-pod1", "hypervisors": [
            {"name": "hv1", "uri": node_uri(tmp_path, "with-pool-nat.xml", "hv1.xml")},
            {"name": "hv2", "uri": node_uri(tmp_path, "empty-nat.xml", "hv2.xml")}]}]}]}))
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.apply(load_fleet(p))
    pool = ConnectionPool()
    yield store, pool, {h.name: h for h in store.hypervisors()}, p
    pool.close()
    store.close()


def spec(name: str = "web01", **kw: object):  # type: ignore[no-untyped-def]
    args: dict = {"name": name, "memory": "1G", "vcpus": 2, "disks": ["size=10G"],  # type: ignore[type-arg]
                  "networks": ["network=default"], "pxe": True}
    args.update(kw)
    return vm_spec(**args)


def test_create_makes_volume_and_domain_and_starts_it(env) -> None:  # type: ignore[no-untyped-def]
    store, pool, hosts, _ = env
    made = create_vm(spec(), hosts["hv1"], store, pool, virt_type="auto",
                     facts={"app": "web"})
    assert made.disks == ("/var/lib/libvirt/images/web01.qcow2",) and made.started
    assert made.virt_type == "test"  # the only type the test driver offers
    h = pool.get(hosts["hv1"])
    g = Guest.lookup(h, "web01")
    assert g.state == "running"
    d = g.domain()
    assert d.facts is not None and (d.facts.site, d.facts.pod, d.facts.app) == (
        "oregon", "or-pod1", "web")
    assert d.devices.interfaces[0].mac != "52:54:00:00:00:01"  # the pod's MACs stay unique
    assert "web01.qcow2" in h.conn.storagePoolLookupByName("default").listVolumes()


def test_taken_names_and_macs_are_refused_before_anything_is_made(env) -> None:  # type: ignore[no-untyped-def]
    store, pool, hosts, _ = env
    with pytest.raises(Conflict, match="'existing' already exists on hv1"):
        create_vm(spec("existing"), hosts["hv2"], store, pool)
    with pytest.raises(Conflict, match="52:54:00:00:00:01 is already used in pod or-pod1"):
        create_vm(spec(networks=["network=default,mac=52:54:00:00:00:01"]), hosts["hv1"],
                  store, pool)
    h = pool.get(hosts["hv1"])
    assert h.conn.storagePoolLookupByName("default").listVolumes() == ["base.qcow2"]


def test_a_failure_halfway_rolls_back_what_was_made(env) -> None:  # type: ignore[no-untyped-def]
    store, pool, hosts, _ = env
    h = pool.get(hosts["hv1"])
    storage.create_volume(h, "default", "db01-disk1.qcow2", 2**30, "qcow2")  # in the way
    with pytest.raises(Conflict, match="nothing was left behind"):
        create_vm(spec("db01", disks=["size=10G", "size=20G"]), hosts["hv1"], store, pool)
    assert sorted(h.conn.storagePoolLookupByName("default").listVolumes()) == [
        "base.qcow2", "db01-disk1.qcow2"]  # db01.qcow2, made first, was removed again
    assert not h.has_domain("db01")


def test_images_must_live_in_a_pool(env) -> None:  # type: ignore[no-untyped-def]
    store, pool, hosts, _ = env
    with pytest.raises(InvalidInput, match="not inside any active storage pool"):
        create_vm(spec(disks=[], pxe=False, import_disk="/etc/shadow"), hosts["hv1"], store,
                  pool)
    made = create_vm(spec(disks=[], pxe=False,
                          import_disk="/var/lib/libvirt/images/base.qcow2"),
                     hosts["hv1"], store, pool, start=False)
    assert made.disks == ("/var/lib/libvirt/images/base.qcow2",) and not made.started
    with pytest.raises(InvalidInput, match="more than the .* free in pool .default. on hv1"):
        create_vm(spec("big", disks=["size=500G,format=raw"]), hosts["hv1"], store, pool)


def test_reserve_host_schedules_claims_and_a_failed_create_gives_it_back(env) -> None:  # type: ignore[no-untyped-def]
    store, pool, hosts, _ = env
    # hv1: 64 GiB with 2 GiB used; hv2 (empty.xml): 384 GiB, nothing used -> spread picks hv2
    target = reserve_host(store, pool, spec(memory="4G", disks=[]), host=None, site=None,
                          pod="or-pod1", group=None)
    assert target.name == "hv2"
    assert [(c.host, c.vm, c.memory_mib) for c in store.placement_claims()] == [
        ("hv2", "web01", 4096)]
    with pytest.raises(Conflict, match="already exists on hv1; nothing was left behind"):
        create_vm(spec("existing"), hosts["hv2"], store, pool)  # no claim for it: harmless
    with pytest.raises(Conflict):
        # beyond the named host: 64 GiB minus the hypervisor's reserve and what runs there
        reserve_host(store, pool, spec("huge", memory="55G"), host="hv1", site=None, pod=None,
                     group=None)
    with pytest.raises(InvalidInput, match="the largest, hv1, takes 56.00 GiB"):
        # beyond what it could hold even empty: its 64 GiB minus the hypervisor's reserve
        reserve_host(store, pool, spec("huge", memory="60G"), host="hv1", site=None, pod=None,
                     group=None)
    made = create_vm(spec(memory="4G", disks=[]), target, store, pool)  # hv2: no pool
    # Defined: the VM is recorded as observed there and its claim is gone (settled), so its
    # room stays counted and nothing of the claim outlives the VM.
    assert made.host == "hv2" and store.placement_claims() == []
    [seen] = store.fleet_vms(name="web01")
    assert (seen.host, seen.domain.uuid, seen.domain.memory_mib) == ("hv2", made.uuid, 4096)
    # a create that fails after its claim gives the room back
    reserve_host(store, pool, spec("db01", memory="2G", disks=[]), host="hv2", site=None,
                 pod=None, group=None)
    with pytest.raises(Conflict, match="nothing was left behind"):
        create_vm(spec("db01", disks=[], networks=["network=default,mac=52:54:00:00:00:01"]),
                  hosts["hv2"], store, pool)
    assert store.placement_claims() == [] and store.fleet_vms(name="db01") == []
    # With a disk, the pod's host without a storage pool is no candidate: hv1 is chosen
    assert reserve_host(store, pool, spec("db02", memory="2G"), host=None, site=None,
                        pod="or-pod1", group=None).name == "hv1"


def test_cli(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _store, _pool, _hosts, fleet = env
    db = tmp_path / "cli.db"
    assert run(db, "apply", "-f", str(fleet)).code == 0
    r = run(db, "vm", "create", "web01", "--host", "hv1", "--memory", "1G", "--vcpus", "2",
            "--disk", "size=10G", "--network", "network=default", "--pxe", "--json")
    assert r.code == 0, r.err
    assert r.json()["host"] == "hv1" and r.json()["disks"] == [
        "/var/lib/libvirt/images/web01.qcow2"]
    for args, field in [
        (["--memory", "0"], "--memory"),
        (["--vcpus", "0"], "--vcpus"),
        (["--disk", "path=../../etc/shadow"], "--disk path"),
        (["--network", "bridge=br0,vlan=9999"], "--network"),
        (["--pod", "or-pod1"], "--host/--pod/--site"),
    ]:
        base = {"--memory": "1G", "--vcpus": "1", "--disk": "size=1G", "--network":
                "network=default"}
        extra = dict(zip(args[::2], args[1::2], strict=True))
        flat = [x for k, v in {**base, **extra}.items() for x in (k, v)]
        r = run(db, "vm", "create", "x1", "--host", "hv1", "--pxe", *flat)
        assert r.code == 2 and r.err.startswith(f"virtfleet: error: {field}: "), (args, r.err)
    r = run(db, "vm", "create", "bad<name>", "--host", "hv1", "--memory", "1G", "--vcpus", "1",
            "--pxe")
    assert r.code == 2 and "NAME" in r.err


def test_a_network_the_host_lacks_is_refused_before_anything_is_made(env) -> None:  # type: ignore[no-untyped-def]
    store, pool, hosts, _ = env
    with pytest.raises(InvalidInput, match="hv1 has no libvirt network 'nosuch'"):
        create_vm(spec("web02", networks=["network=nosuch"]), hosts["hv1"], store, pool)
    h = pool.get(hosts["hv1"])
    assert h.conn.storagePoolLookupByName("default").listVolumes() == ["base.qcow2"]
    assert not h.has_domain("web02") and store.placement_claims() == []


def _cli_env(env, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    db = tmp_path / "cli.db"
    assert run(db, "apply", "-f", str(env[3])).code == 0
    return db


def _nothing_held(db: Path) -> None:
    """No claim and no journal entry left in the store behind a refused or finished create."""
    s = Store(f"sqlite:///{db}")
    try:
        assert s.placement_claims() == [] and s.operations() == []
    finally:
        s.close()


CREATE = ["vm", "create", "--vcpus", "1", "--pxe", "--no-start"]


def test_a_created_vm_holds_no_claim_and_its_name_is_observed(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Regression (issue 10, defect 1): the claim outlived the VM for 15 minutes, holding its
    room and refusing its name ("being created, or was just created") after an undefine."""
    db = _cli_env(env, tmp_path)
    r = run(db, *CREATE, "web01", "--host", "hv1", "--memory", "1G", "--disk", "size=1G")
    assert r.code == 0, r.err
    _nothing_held(db)
    s = Store(f"sqlite:///{db}")
    try:
        [seen] = s.fleet_vms(name="web01")  # the name stays taken fleet-wide, by observation
        assert (seen.host, seen.domain.memory_mib, seen.domain.vcpus) == ("hv1", 1024, 1)
    finally:
        s.close()


def test_create_undefine_create_frees_the_name_and_the_room(env) -> None:  # type: ignore[no-untyped-def]
    """What `vm create` then `vm undefine` then `vm create` run, in one process (a test
    hypervisor forgets its VMs between CLI processes)."""
    from virtfleet.provision.remove import undefine_vm
    from virtfleet.provision.schedule import live_fleet
    from virtfleet.virt.guest import Removal

    store, pool, hosts, _ = env

    def create(name: str, memory: str) -> None:
        target = reserve_host(store, pool, spec(name, memory=memory), host="hv1", site=None,
                              pod=None, group=None)
        create_vm(spec(name, memory=memory), target, store, pool, start=False)

    def free_mib() -> int:
        [hv1] = [h for h in live_fleet(store, pod="or-pod1", pool=pool).hosts
                 if h.name == "hv1"]
        return hv1.memory_mib - hv1.used_memory_mib

    before = free_mib()
    create("web01", "20G")
    assert free_mib() == before - 20480
    g = Guest.lookup(pool.get(hosts["hv1"]), "web01")
    assert undefine_vm(store, pool, g, hosts["hv1"], Removal(), None) == [
        "/var/lib/libvirt/images/web01.qcow2"]
    assert free_mib() == before and store.fleet_vms(name="web01") == []
    create("web01", "20G")  # at once, not 15 minutes later
    assert pool.get(hosts["hv1"]).has_domain("web01") and store.placement_claims() == []


def test_a_running_vm_is_not_undefined(env) -> None:  # type: ignore[no-untyped-def]
    """libvirt would keep it running, transient, with its disks, while saying 'undefined'."""
    from virtfleet.provision.remove import undefine_vm
    from virtfleet.virt.guest import Removal

    store, pool, hosts, _ = env
    g = Guest.lookup(pool.get(hosts["hv1"]), "existing")
    assert g.is_active()
    with pytest.raises(Conflict, match="hv1/existing: domain is running; destroy it"):
        undefine_vm(store, pool, g, hosts["hv1"], Removal(), [])
    assert g.is_active() and pool.get(hosts["hv1"]).has_domain("existing")


def test_a_disk_larger_than_its_pool_is_refused_like_vol_create(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Regression (issue 10, defect 3): a 100T qcow2 passed (thin: only raw was checked),
    while `vol create` refused the same size. One rule, before anything is made."""
    db = _cli_env(env, tmp_path)
    r = run(db, *CREATE, "big", "--host", "hv1", "--memory", "1G", "--disk", "size=100T")
    assert r.code == 2, r.err
    assert r.err == ("virtfleet: error: --disk size: 100.00 TiB is more than the 92.00 GiB "
                     "free in pool 'default' on hv1\n")
    # two disks that fit one by one but not together: refused before the first is made
    r = run(db, *CREATE, "big", "--host", "hv1", "--memory", "1G", "--disk", "size=60G",
            "--disk", "size=40G,format=raw")
    assert r.code == 2 and "100.00 GiB is more than the 92.00 GiB free" in r.err, r.err
    _nothing_held(db)
    r = run(db, "vol", "create", "big.qcow2", "--host", "hv1", "--pool", "default", "--size",
            "100T")
    assert r.code == 2 and r.err == ("virtfleet: error: --size: 100.00 TiB is more than the "
                                     "92.00 GiB free in pool 'default'\n"), r.err


@pytest.mark.parametrize("args,code,message", [
    # Regression (new-user trial): the option was not named.
    (["--disk", "size=1G,pool=nosuch"], 3, "hv1: has no storage pool 'nosuch' (--disk pool)"),
    (["--network", "bridge=nosuch"], 2, "--network: hv1 has no bridge 'nosuch'"),
    (["--network", "network=nosuch"], 2, "--network: hv1 has no libvirt network 'nosuch'"),
    (["--disk", "size=1T"], 2, "--disk size: 1.00 TiB is more than the 92.00 GiB free"),
    (["--disk", "path=/etc/shadow"], 2, "--disk path: '/etc/shadow' is not inside any "),
], ids=["pool", "bridge", "network", "size", "path"])
def test_certain_checks_come_before_capacity(env, tmp_path: Path, args: list[str], code: int,
                                             message: str) -> None:  # type: ignore[no-untyped-def]
    """Regression (issue 10, defect 4): with a host too small for the VM, an unknown pool or
    bridge was reported as "RamFilter removed 1"; the certain problem is named instead."""
    db = _cli_env(env, tmp_path)
    for where in (["--host", "hv1"], ["--pod", "or-pod1"]):
        # --pod: hv2 has no pool at all, and no room for 100 GiB either
        r = run(db, *CREATE, "x1", *where, "--memory", "100G", *args)
        assert r.code == code and message in r.err, (where, r.code, r.err)
        assert "Filter" not in r.err and len(r.err.splitlines()) == 1, r.err
    _nothing_held(db)


def test_a_missing_default_pool_names_the_option_left_out(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Regression (new-user trial): hv2 has no pool 'default', and the error named no option,
    so nothing said that `--disk pool=` was the way out."""
    db = _cli_env(env, tmp_path)
    r = run(db, *CREATE, "d1", "--host", "hv2", "--memory", "1G", "--disk", "size=1G")
    assert r.code == 3 and r.err == ("virtfleet: error: hv2: has no storage pool 'default' "
                                     "(--disk pool not given: the default)\n"), r.err
    _nothing_held(db)


def test_a_taken_name_is_reported_before_capacity(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = _cli_env(env, tmp_path)
    r = run(db, *CREATE, "existing", "--pod", "or-pod1", "--memory", "1000G")
    assert r.code == 4 and r.err == ("virtfleet: error: a VM named 'existing' already exists "
                                     "on hv1\n"), r.err


def test_the_scheduler_places_only_where_the_vm_can_be_made(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """hv2 has more room but no storage pool: a VM with a disk goes to hv1, one without to
    hv2 (spread), and a pool neither has is named with both hosts counted."""
    db = _cli_env(env, tmp_path)
    r = run(db, *CREATE, "a1", "--pod", "or-pod1", "--memory", "1G", "--disk", "size=1G",
            "--json")
    assert r.code == 0 and r.json()["host"] == "hv1", r.err
    r = run(db, *CREATE, "a2", "--pod", "or-pod1", "--memory", "1G", "--json")
    assert r.code == 0 and r.json()["host"] == "hv2", r.err
    r = run(db, *CREATE, "a3", "--pod", "or-pod1", "--memory", "1G", "--disk",
            "size=1G,pool=nosuch")
    assert r.code == 3 and r.err == (
        "virtfleet: error: hv1: has no storage pool 'nosuch' (--disk pool) (and 1 other "
        "hypervisor(s) in or-pod1 cannot take it either)\n"), r.err


SECRET = "pw-Zq81x"  # distinctive: any appearance in argv or output is this test's password


def _every_argv() -> str:
    """What `ps` shows every user of this machine: the command line of every process."""
    ps = require_tool("ps", "procps")
    return subprocess.run([ps, "-eww", "-o", "pid=,args="], capture_output=True, text=True,
                          check=True).stdout


def test_graphics_password_never_on_argv(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _store, _pool, _hosts, fleet = env
    db = tmp_path / "cli.db"
    assert run(db, "apply", "-f", str(fleet)).code == 0
    base = ["vm", "create", "web01", "--host", "hv1", "--memory", "1G", "--vcpus", "1",
            "--network", "network=default", "--pxe", "--os-variant", "rhel9.0"]
    # The old form is refused, the password never repeated back.
    r = run(db, *base, "--graphics", f"spice,password={SECRET}")
    assert r.code == 2 and r.err.startswith("virtfleet: error: --graphics: "), r.err
    assert "--graphics-password-file" in r.err and SECRET not in r.out + r.err

    # From stdin: watch every process's argv while the CLI reads it and makes the VM.
    proc = subprocess.Popen(
        [sys.executable, "-m", "virtfleet.cli.main", *base, "--graphics", "spice",
         "--graphics-password-file", "-", "--json"],
        env={**os.environ, "VIRTFLEET_DB": str(db)}, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    seen_while_running = 0
    try:
        listing = _every_argv()
        assert f"{proc.pid} " in listing  # the check does see the CLI ...
        assert SECRET not in listing  # ... and nobody's argv holds the password
        proc.stdin.write(SECRET + "\n")
        proc.stdin.close()
        while proc.poll() is None:  # bounded by the CLI's own run
            listing = _every_argv()
            assert SECRET not in listing
            seen_while_running += f"{proc.pid} " in listing
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()  # a few lines: the pipes never fill
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert seen_while_running, "the CLI ended before ps could look at it once"
    assert SECRET not in out + err and json.loads(out)["name"] == "web01"

    # From the environment, and from a file; a bad one is named, the password never shown.
    r = run(db, *base[:2], "web02", *base[3:], "--graphics", "vnc",
            env={"VIRTFLEET_GRAPHICS_PASSWORD": "toolongforvnc"})
    assert r.code == 2 and "VIRTFLEET_GRAPHICS_PASSWORD: a vnc password is at most 8" in r.err
    assert "toolongforvnc" not in r.err
    secret_file = tmp_path / "pw"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    r = run(db, *base[:2], "web03", *base[3:], "--graphics", "spice",
            "--graphics-password-file", str(secret_file))
    assert r.code == 0 and SECRET not in r.out + r.err, r.err
    r = run(db, *base[:2], "web04", *base[3:], "--graphics", "spice",
            "--graphics-password-file", str(tmp_path / "missing"))
    assert r.code == 2 and r.err.startswith("virtfleet: error: --graphics-password-file: "), \
        r.err


def test_the_password_reaches_libvirt_and_dumpxml_hides_it(env) -> None:  # type: ignore[no-untyped-def]
    store, pool, hosts, _ = env
    s = spec(graphics="spice", graphics_password=SECRET)
    create_vm(s, hosts["hv1"], store, pool, start=False)
    h = pool.get(hosts["hv1"])
    guest = Guest.lookup(h, "web01")
    assert SECRET not in guest.xml()  # what `vm dumpxml` prints
    assert guest.domain().devices.graphics[0].type == "spice"
    secure = h.conn.lookupByName("web01").XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
    assert f'passwd="{SECRET}"' in secure or f"passwd='{SECRET}'" in secure


def test_os_variant_is_recorded_and_unknown_ones_refused(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, pool, hosts, fleet = env
    create_vm(spec(os_variant="win2k19", disks=["size=20G"]), hosts["hv1"], store, pool,
              start=False)
    d = Guest.lookup(pool.get(hosts["hv1"]), "web01").domain()
    assert d.os_id == "http://microsoft.com/win/2k19"  # read back from libvirt
    assert [x.target_bus for x in d.devices.disks] == ["sata"]
    assert d.devices.interfaces[0].model == "e1000e"
    db = tmp_path / "cli.db"
    assert run(db, "apply", "-f", str(fleet)).code == 0
    r = run(db, "vm", "create", "x1", "--host", "hv1", "--memory", "1G", "--vcpus", "1",
            "--pxe", "--os-variant", "windows-server-2019")
    assert r.code == 2, r.err
    [line] = r.err.splitlines()
    assert line.startswith("virtfleet: error: --os-variant: 'windows-server-2019' is not an "
                           "OS libosinfo knows"), line
    h = pool.get(hosts["hv1"])
    assert h.conn.storagePoolLookupByName("default").listVolumes().count("x1.qcow2") == 0


BASE = {"name": "web01", "memory": "1G", "vcpus": 1, "disks": ("size=1G",), "cdrom": "/x.iso",
        "host": "hv1", "os_variant": "nosuch"}  # libosinfo knows no 'nosuch'


@pytest.mark.parametrize("bad,field", [
    ({}, "os_variant"),  # alone, the unknown OS variant is what is wrong
    ({"virt_type": "fast"}, "virt_type"),
    ({"app": "a b"}, "app"),
    ({"host": None}, "host/pod/site"),
    ({"pod": "or-pod1"}, "host/pod/site"),
    ({"ha_priority": 5}, "ha_priority"),
    ({"pxe": True}, "cdrom/pxe/kernel/import_disk"),
    ({"cdrom": "x.iso"}, "cdrom"),
    ({"graphics": "foo"}, "graphics"),
    # each value on its own before how values combine, in the command's order
    ({"cdrom": "x.iso", "disks": ()}, "cdrom"),
    ({"os_variant": "Bad Variant", "pxe": True}, "os_variant"),
    ({"graphics": "foo", "virt_type": "fast", "pxe": True}, "graphics"),
    ({"virt_type": "fast", "host": None}, "virt_type"),
], ids=lambda v: ",".join(v) if isinstance(v, dict) else v)
def test_the_cheap_certain_check_is_reported_first(bad: dict[str, object], field: str) -> None:
    """Regression: a bad --virt-type, --app, place or --ha-priority was reported only after
    libosinfo (a quarter of a second) refused the OS variant, and --virt-type only after the
    store. The order is spec_form's: each value alone in the command's order, then how they
    combine, then libosinfo, then the store and the hypervisors."""
    from virtfleet.fleet.vms import CreateRequest

    with pytest.raises(InvalidInput) as info:
        CreateRequest(**{**BASE, **bad}).check()  # type: ignore[arg-type]
    assert info.value.field == field, info.value.message


def test_a_bad_virt_type_is_named_before_the_store_is_asked(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = _cli_env(env, tmp_path)
    r = run(db, *CREATE, "x1", "--host", "nosuch", "--memory", "1G", "--virt-type", "fast")
    assert (r.code, r.err) == (2, "virtfleet: error: virt type: 'fast' is not auto, kvm or "
                               "qemu\n"), r.err
    _nothing_held(db)


@pytest.mark.parametrize("iso", ["/nonexistent.iso", "/var/lib/libvirt/images/nope.iso"],
                         ids=["outside-every-pool", "no-such-volume"])
def test_an_iso_that_is_no_volume_is_refused_before_anything_is_made(
        env, tmp_path: Path, iso: str) -> None:  # type: ignore[no-untyped-def]
    """Regression (new-user trial): `--cdrom /nonexistent.iso` defined the VM (and made its
    disk); only the start failed, "Cannot access storage file". Refused like virt-install."""
    store, pool, hosts, _ = env
    db = _cli_env(env, tmp_path)
    for where in (["--host", "hv1"], ["--pod", "or-pod1"]):
        r = run(db, "vm", "create", "ok1", *where, "--vcpus", "1", "--no-start", "--cdrom",
                iso, "--memory", "128M", "--disk", "size=1G,pool=default")
        assert r.code == 2 and r.out == "", (where, r)
        assert r.err == (f"virtfleet: error: --cdrom: {iso!r} is not a volume in an active "
                         "storage pool of hv1 (the ISO must be one: 'virtfleet vol "
                         "upload')\n"), r.err
    h = pool.get(hosts["hv1"])
    assert h.conn.storagePoolLookupByName("default").listVolumes() == ["base.qcow2"]
    assert not h.has_domain("ok1")
    _nothing_held(db)
    r = run(db, "vm", "create", "ok1", "--host", "hv1", "--vcpus", "1", "--no-start",
            "--cdrom", "/var/lib/libvirt/images/base.qcow2", "--memory", "128M",
            "--disk", "size=1G,pool=default")
    assert r.code == 0, r.err


def test_a_size_no_host_in_scope_could_ever_hold_names_the_option_and_the_largest(
        env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Regression (new-user trial): `--memory 1T` said "capacity: placed 0 of 1 VMs ...
    (RamFilter removed 1)", as if the pod were only full for now."""
    db = _cli_env(env, tmp_path)
    r = run(db, *CREATE, "big", "--pod", "or-pod1", "--memory", "1T")
    assert r.code == 2, r.err
    assert r.err.startswith("virtfleet: error: --memory: 1.00 TiB is more than any hypervisor "
                            "in scope can ever hold: the largest, hv2, takes "), r.err
    assert r.err.endswith(" GiB under the placement policy\n") and "Filter" not in r.err, r.err
    r = run(db, *CREATE, "big", "--host", "hv1", "--memory", "100G")
    assert r.code == 2 and "--memory: 100.00 GiB is more than any" in r.err, r.err
    assert "the largest, hv1, takes " in r.err, r.err
    r = run(db, *CREATE, "big", "--pod", "or-pod1", "--memory", "1G", "--vcpus", "500")
    assert r.code == 2 and r.err.startswith("virtfleet: error: --vcpus: 500 is more than any "
                                            "hypervisor in scope can ever hold: the "), r.err
    assert r.err.endswith(" vCPUs under the placement policy\n"), r.err
    _nothing_held(db)
    # Room that is only taken for now is still the scheduler's word.
    r = run(db, *CREATE, "fits", "--pod", "or-pod1", "--memory", "1G")
    assert r.code == 0, r.err
