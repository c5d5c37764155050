"""`virtfleet boot render` through the real command in a subprocess, as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.cli import Result

CHAPTER = Path(__file__).parent / "golden" / "boot" / "chapter-fleet.yaml"

def virtfleet(*args: str) -> Result:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    p = subprocess.run([sys.executable, "-m", "virtfleet.cli.main", *args], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    return Result(p.returncode, p.stdout, p.stderr)


def fleet_file(tmp_path: Path, change: dict[str, Any] | None = None) -> Path:
    data = yaml.safe_load(CHAPTER.read_text())
    for path, value in (change or {}).items():
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


HV = "sites.0.pods.0.hypervisors"  # a path for fleet_file()
HVF = "sites[0].pods[0].hypervisors"  # the same, as the error names it


def test_render_writes_the_tree_and_lists_it(tmp_path: Path) -> None:
    out = tmp_path / "boot"
    r = virtfleet("boot", "render", "-f", str(fleet_file(tmp_path)), "--out", str(out),
                  "--json")
    assert r.code == 0, r.err
    listed = r.json()
    written = sorted(str(p) for p in out.rglob("*") if p.is_file() and p.name[0] != ".")
    assert sorted(f["path"] for f in listed) == written
    assert {f["kind"] for f in listed} >= {"dhcpd", "kea", "haproxy", "kickstart", "ipxe"}
    assert (out / "oregon/dhcpd/oregon-primary.conf").stat().st_mode & 0o077 == 0


def test_render_check_runs_the_validators(tmp_path: Path) -> None:
    from virtfleet.boot import validators

    missing = [k for k in validators.COMMANDS if validators.binary(k) is None]
    if missing:
        reason = f"validators not installed: {missing}"
        if os.environ.get("VIRTFLEET_REQUIRE_VALIDATORS") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    out = tmp_path / "boot"
    r = virtfleet("boot", "render", "-f", str(fleet_file(tmp_path)), "--out", str(out),
                  "--site", "oregon", "--check")
    assert r.code == 0, r.err
    assert "files written under" in r.out and (out / "oregon/haproxy/haproxy.cfg").exists()


@pytest.mark.parametrize("change,field", [
    ({f"{HV}.1.provision.mac": "00:e0:81:c5:76:0a"}, f"{HVF}[1].provision.mac"),
    ({f"{HV}.1.provision.ip": "10.1.1.20"}, f"{HVF}[1].provision.ip"),
    ({f"{HV}.0.provision.ip": "192.168.1.20"}, f"{HVF}[0].provision.ip"),
    ({f"{HV}.0.provision.ip": "10.1.1.60"}, f"{HVF}[0].provision.ip"),
    ({"sites.0.boot.dhcp.secondary": None}, "sites[0].boot.dhcp.secondary"),
    ({f"{HV}.0.provision.mac": "00:e0:81:zz:76:0a"}, f"{HVF}[0].provision.mac"),
    ({"profiles.1.root_password": "$6$short$hash"}, "profiles[1].root_password"),
    ({"profiles.2.disk_gib": 8, "profiles.2.memory_mib": 8192}, "profiles[2].disk_gib"),
])
def test_bad_input_writes_nothing(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    out = tmp_path / "boot"
    r = virtfleet("boot", "render", "-f", str(fleet_file(tmp_path, change)), "--out", str(out))
    assert r.code == 2, (r.out, r.err)
    [line] = r.err.splitlines()
    assert line.startswith(f"virtfleet: error: {field}: "), line
    assert "Traceback" not in r.err and r.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet.yaml"]  # not even a temp dir


def test_unknown_site_and_foreign_out_dir_are_refused(tmp_path: Path) -> None:
    fleet = str(fleet_file(tmp_path))
    r = virtfleet("boot", "render", "-f", fleet, "--out", str(tmp_path / "b"), "--site", "mars")
    assert r.code == 2 and r.err.startswith("virtfleet: error: --site: no site 'mars'"), r.err
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "hosts").write_text("keep\n")
    r = virtfleet("boot", "render", "-f", fleet, "--out", str(etc))
    assert r.code == 2 and "--out" in r.err and (etc / "hosts").read_text() == "keep\n"
    assert not (tmp_path / "b").exists()


def test_check_refuses_a_tree_its_validators_refuse(tmp_path: Path) -> None:
    """--check's gate: a file its tool refuses stops the publish with the tool's verdict."""
    from virtfleet.boot import validators
    from virtfleet.cli.boot import ValidationFailed, _checker

    if validators.binary("haproxy") is None:
        if os.environ.get("VIRTFLEET_REQUIRE_VALIDATORS") == "1":
            pytest.fail("haproxy is not installed", pytrace=False)
        pytest.skip("haproxy is not installed")
    bad = tmp_path / "oregon" / "haproxy" / "haproxy.cfg"
    bad.parent.mkdir(parents=True)
    bad.write_text("frontend f\n  bind 10.1.1.3:80\n  default_backend nowhere\n")
    with pytest.raises(ValidationFailed) as exc:
        _checker(tmp_path)
    assert str(exc.value).startswith("oregon/haproxy/haproxy.cfg: haproxy refused it:")
    assert exc.value.exit_code == 1


def test_check_refuses_a_haproxy_config_this_machine_cannot_run(tmp_path: Path) -> None:
    """`haproxy -c` passes a maxconn the descriptor limit cannot hold, and `haproxy -f` then
    refuses to start: --check compares the two and refuses with the figures (issue 10, #9)."""
    import resource

    from virtfleet.boot import haproxy, validators

    if any(validators.binary(k) is None for k in validators.COMMANDS):
        if os.environ.get("VIRTFLEET_REQUIRE_VALIDATORS") == "1":
            pytest.fail("a validator is not installed", pytrace=False)
        pytest.skip("a validator is not installed")
    fleet = fleet_file(tmp_path)
    out = tmp_path / "boot"

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    p = subprocess.run([sys.executable, "-m", "virtfleet.cli.main", "boot", "render", "-f",
                        str(fleet), "--out", str(out), "--check"], env=env,
                       capture_output=True, text=True, timeout=120, check=False,
                       preexec_fn=low_limit)
    assert p.returncode == 1, (p.stdout, p.stderr)
    [line] = p.stderr.splitlines()
    need = haproxy.fds_needed(_haproxy_text(fleet))
    assert line == (f"virtfleet: error: oregon/haproxy/haproxy.cfg: haproxy needs {need} file "
                    f"descriptors for maxconn 272, but this machine allows 256 (ulimit -Hn); "
                    "raise haproxy's limit (LimitNOFILE=) or install fewer hosts per site"), line
    assert not out.exists()  # nothing published
    # With the machine's own limit the same fleet renders and checks.
    r = virtfleet("boot", "render", "-f", str(fleet), "--out", str(out), "--check")
    assert r.code == 0, r.err


def _haproxy_text(fleet: Path) -> str:
    from virtfleet.boot.haproxy import render_haproxy
    from virtfleet.inventory.fleetfile import load_fleet

    text = render_haproxy(load_fleet(fleet).sites[0])
    assert text is not None
    return text


def test_a_split_kea_cannot_do_is_refused_by_render(tmp_path: Path) -> None:
    out = tmp_path / "boot"
    r = virtfleet("boot", "render", "-f", str(fleet_file(tmp_path, {"sites.0.boot.dhcp.split":
                                                                    100})), "--out", str(out))
    assert r.code == 2
    assert r.err == ("virtfleet: error: sites[0].boot.dhcp.split: 100 has no Kea equivalent: "
                     "Kea's HA hook balances 50/50 (split 128) or serves from one peer (256: "
                     "the primary, 0: the secondary)\n")
    assert not out.exists()
