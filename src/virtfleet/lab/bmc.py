"""Simulated BMCs for the lab's hypervisors: one OpenIPMI `ipmi_sim` per hypervisor.

    bmcs = LabBmcs(Lab("lab"))
    bmcs.start()              # clears this lab's BMC leftovers first; adds `bmc:` to fleet.yaml
    bmcs.recorded()             # address, port, user, password file, pid of each
    bmcs.stop()               # idempotent; `clear_bmcs(names)` also finds killed runs' pieces

Production fence agents (`fence_ipmilan`) drive these exactly as they drive a real BMC. Powering
a hypervisor off through its BMC is a real power loss for it: its link goes down and every
process in its network namespace (libvirtd, virtlogd, each QEMU it started, dnsmasq) gets
SIGKILL, with no chance to shut down cleanly. Powering on brings the link up, forgets its
/run/libvirt (a tmpfs on a real machine) and starts its daemons again through
`Lab.restart_host`. The power status is read from the machine, never remembered: on while any
process of the hypervisor lives (or its daemons are being started), off when none does.

Why each BMC listens on a loopback address of its own (127.250.K.(10+i), K the lab's subnet
byte, UDP 623) in the root namespace rather than inside the hypervisor's namespace: a BMC has
its own power and its own management NIC. Inside the hypervisor's namespace it would be killed
and cut off by the very power-off it performs, and would share the link a network partition
test drops. Loopback is reachable only from this machine.

How `ipmi_sim` runs the control: `chassis_control "PYTHON -m virtfleet.lab.bmc CONF 0x20"` in
lan.conf; the simulator appends `get power` (we print `power:1` or `power:0`) or `set power 0|1`
and waits for the command before it replies. The control reads CONF (its lab, its hypervisor)
and acts on that hypervisor only, after checking that the namespace and veth it is about to
touch carry that lab's names and claim (see names.py).
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtfleet.errors import LabError
from virtfleet.lab import netns, procs
from virtfleet.lab.names import MAX_HOSTS, LabNames, is_sim
from virtfleet.lab.run import daemon_env, last_line, run
from virtfleet.lab.state import LabHost

if TYPE_CHECKING:
    from virtfleet.lab.lab import Lab

BMC_PROGRAM = "ipmi_sim"
BMC_PORT = 623
BMC_USER = "virtfleet"
MC_ADDR = "0x20"  # the simulated BMC's IPMB address, as in OpenIPMI's examples
CIPHER = 3  # RMCP+ suite 3 answers at once here; without it each call stalls 14-44 s
READY_TIMEOUT = 10.0
KILL_TIMEOUT = 10.0
CONTROL_MODULE = "virtfleet.lab.bmc"

# Everything that ends up inside lan.conf or the chassis_control command line (which ipmi_sim
# hands to /bin/sh through popen) is held to characters no shell or config parser reads
# specially.
_SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9_./+-]+$")


@dataclass
class LabBmc:
    """One hypervisor's simulated BMC."""

    host: str
    index: int
    address: str
    port: int
    username: str
    password_file: str  # 0600; the fleet file names it, never the password
    dir: str
    pid: int | None = None

    def as_json(self) -> dict[str, object]:
        return asdict(self)

    def fleet_bmc(self) -> dict[str, object]:
        """The hypervisor's `bmc:` block for a fleet file."""
        # power_wait 0: this BMC finishes a power change before it replies.
        return {"agent": "ipmilan", "address": self.address, "port": self.port,
                "username": self.username, "password_file": self.password_file,
                "cipher": CIPHER, "power_wait": 0}


# -- names and files --------------------------------------------------------------------------


def bmc_root(names: LabNames) -> Path:
    return names.state_dir / "bmc"


def bmc_address(names: LabNames, index: int) -> str:
    """Hypervisor i's BMC: 127.250.K.(10+i), beside its 10.250.K.(10+i)."""
    if is_sim(index) or not 1 <= index <= MAX_HOSTS:
        raise LabError(f"lab {names.name}: only hypervisors (1..{MAX_HOSTS}) get a BMC")
    return f"127.250.{names.octet}.{10 + index}"


def _bmc_dir(names: LabNames, index: int) -> Path:
    return bmc_root(names) / f"h{index}"


def _state_file(names: LabNames) -> Path:
    return bmc_root(names) / "bmcs.json"


def _safe_path(path: Path) -> str:
    text = str(path)
    if not _SAFE_PATH_RE.match(text) or "/../" in text + "/":
        raise LabError(f"{text!r}: the BMC simulator needs paths of letters, digits and "
                       "_ . / + - only (it runs them through a shell)")
    return text


def _write_private(path: Path, text: str) -> None:
    """Create `path` readable by its owner only, from the first byte on."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def lan_conf(address: str, port: int, username: str, password: str, control: str) -> str:
    """ipmi_sim's lan.conf: one LAN channel on `address`, one admin user, our chassis control."""
    for what, value in (("user name", username), ("password", password),
                        ("control command", control)):
        if any(ch in value for ch in '"\\\n\r#') or not value.isprintable():
            raise LabError(f"BMC {what} must not contain quotes, backslashes, '#' or newlines")
    guid = secrets.token_hex(16)
    return "\n".join([
        "# Written by virtfleet lab: one simulated BMC.",
        f'name "vf{guid[:8]}"',
        f"set_working_mc {MC_ADDR}",
        "startlan 1",
        f"  addr {address} {port}",
        "  priv_limit admin",
        "  allowed_auths_callback md5",
        "  allowed_auths_user md5",
        "  allowed_auths_operator md5",
        "  allowed_auths_admin md5",
        f"  guid {guid}",
        "endlan",
        # User 1 (anonymous) is left out on purpose: no access without the password.
        f'user 2 true "{username}" "{password}" admin 10 md5',
        f'chassis_control "{control}"',
        "",
    ])


def emu_commands() -> str:
    """The commands that make ipmi_sim's one management controller a BMC."""
    return "\n".join([
        f"mc_setbmc {MC_ADDR}",
        f"mc_add {MC_ADDR} 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02",
        f"mc_enable {MC_ADDR}",
        "",
    ])




# -- finding our processes --------------------------------------------------------------------


def _ours(pid: int, root: Path) -> bool:
    """Is `pid` one of this lab's BMC processes: an ipmi_sim, or a control/boot worker, whose
    arguments name a file under the lab's bmc directory? (A bare pid is never trusted.)"""
    args = procs.cmdline(pid)
    if not args:
        return False
    prefix = str(root).rstrip("/") + "/"
    names_ours = any(a.startswith(prefix) for a in args[1:])
    if Path(args[0]).name == BMC_PROGRAM:
        return names_ours
    return names_ours and CONTROL_MODULE in args


def bmc_pids(names: LabNames) -> list[int]:
    """Live processes of this lab's BMCs, found on the machine (not from a state file)."""
    root = bmc_root(names)
    found = []
    for entry in procs.PROC.iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            pid = int(entry.name)
            if _ours(pid, root) and procs.alive(pid):
                found.append(pid)
    return found


def clear_bmcs(names: LabNames) -> int:
    """Stop this lab's BMCs and boot workers (also those of killed runs) and remove their
    directory. Returns how many processes it ended. Call it before the lab's state dir goes."""
    pids = bmc_pids(names)
    stuck = procs.terminate(pids)
    if stuck:
        raise LabError(f"lab {names.name}: BMC processes {sorted(stuck)} would not stop")
    shutil.rmtree(bmc_root(names), ignore_errors=True)
    return len(pids)


# -- the UDP socket -----------------------------------------------------------------------------


def _udp_inodes(address: str, port: int) -> set[int]:
    """Inodes of IPv4 UDP sockets bound to address:port (from /proc/net/udp)."""
    want = f"{socket.inet_aton(address)[::-1].hex().upper()}:{port:04X}"
    inodes: set[int] = set()
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return inodes
    for line in lines:
        parts = line.split()
        if len(parts) > 9 and parts[1] == want:
            inodes.add(int(parts[9]))
    return inodes


def _holds_socket(pid: int, inodes: set[int]) -> bool:
    fd_dir = procs.PROC / str(pid) / "fd"
    try:
        links = [os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)]
    except OSError:
        return False
    return bool({f"socket:[{i}]" for i in inodes} & set(links))


def _check_free(address: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LabError(f"BMC address {address}:{port}/udp is already taken by another "
                               "program") from None
            raise LabError(f"BMC address {address}:{port}/udp: {exc.strerror}") from None


def _wait_bound(bmc: LabBmc, log: Path, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pid = bmc.pid
        if pid is None or not procs.alive(pid):
            tail = last_line(log.read_text(errors="replace")) if log.exists() else ""
            raise LabError(f"{bmc.host}: ipmi_sim exited during start" + (f" ({tail})" if tail
                                                                          else ""))
        inodes = _udp_inodes(bmc.address, bmc.port)
        if inodes and _holds_socket(pid, inodes):
            return
        if time.monotonic() >= deadline:
            raise LabError(f"{bmc.host}: ipmi_sim did not listen on {bmc.address}:{bmc.port} "
                           f"within {timeout:g}s")
        time.sleep(0.05)


# -- the BMC set of one lab -------------------------------------------------------------------


class LabBmcs:
    """The simulated BMCs of one lab's hypervisors."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.names = lab.names

    def recorded(self) -> list[LabBmc]:
        """The recorded BMCs (empty when none were started)."""
        try:
            data = json.loads(_state_file(self.names).read_text())
            return [LabBmc(**b) for b in data]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError) as exc:
            raise LabError(f"lab {self.names.name}: unreadable BMC state "
                           f"{_state_file(self.names)} ({exc})") from None

    def start(self, hosts: list[str] | None = None) -> list[LabBmc]:
        """One BMC per hypervisor (or per named one), after clearing this lab's BMC leftovers.
        The lab's fleet file gains each hypervisor's `bmc:` block."""
        if shutil.which(BMC_PROGRAM) is None:
            raise LabError("the lab's BMCs need ipmi_sim: install openipmi")
        st = self.lab.require_state()
        wanted = st.hosts if hosts is None else [st.host(h) for h in hosts]
        if any(is_sim(h.index) for h in wanted):
            raise LabError(f"lab {self.names.name}: simulation daemons get no BMC")
        clear_bmcs(self.names)
        started: list[LabBmc] = []
        try:
            for host in wanted:
                started.append(self._start_one(host))
            self._save(started)
            for bmc in started:
                _wait_bound(bmc, Path(bmc.dir) / "ipmi_sim.log")
            self._write_fleet_file(started)
        except BaseException:
            clear_bmcs(self.names)
            raise
        return started

    def stop(self) -> int:
        """Stop every BMC of this lab; the fleet file loses its `bmc:` blocks. Idempotent."""
        ended = clear_bmcs(self.names)
        if self.lab.state() is not None:
            self._write_fleet_file([])
        return ended

    def _save(self, bmcs: list[LabBmc]) -> None:
        path = _state_file(self.names)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([b.as_json() for b in bmcs], indent=2) + "\n")
        os.replace(tmp, path)

    def _start_one(self, host: LabHost) -> LabBmc:
        n = self.names
        d = _bmc_dir(n, host.index)
        (d / "state").mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)  # lan.conf holds the password, as a real BMC's flash does
        address = bmc_address(n, host.index)
        _check_free(address, BMC_PORT)
        password = secrets.token_urlsafe(12)  # 16 characters; IPMI 2.0 allows 20
        pw_file = d / "password"
        _write_private(pw_file, password + "\n")
        conf = d / "control.json"
        conf.write_text(json.dumps({"lab": n.name, "root": str(n.state_dir.parent),
                                    "host": host.name, "index": host.index}) + "\n")
        control = " ".join([_safe_path(Path(sys.executable)), "-m", CONTROL_MODULE,
                            _safe_path(conf), MC_ADDR])
        lan = d / "lan.conf"
        _write_private(lan, lan_conf(address, BMC_PORT, BMC_USER, password, control))
        emu = d / "bmc.emu"
        emu.write_text(emu_commands())
        log = d / "ipmi_sim.log"
        argv = [BMC_PROGRAM, "-c", _safe_path(lan), "-f", _safe_path(emu),
                "-s", _safe_path(d / "state"), "-n"]
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, cwd=d, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=daemon_env(),
                                    start_new_session=True)
        return LabBmc(host=host.name, index=host.index, address=address, port=BMC_PORT,
                      username=BMC_USER, password_file=str(pw_file), dir=str(d), pid=proc.pid)

    def _write_fleet_file(self, bmcs: list[LabBmc]) -> None:
        from virtfleet.inventory.fleetfile import dump_fleet, load_fleet, parse_fleet

        st = self.lab.state()
        if st is None or st.fleet_file is None or not Path(st.fleet_file).exists():
            return
        by_host = {b.host: b.fleet_bmc() for b in bmcs}
        data: dict[str, Any] = load_fleet(st.fleet_file).model_dump(mode="json",
                                                                    exclude_defaults=True)
        for site in data.get("sites", []):
            for pod in site.get("pods", []):
                for hv in pod.get("hypervisors", []):
                    hv.pop("bmc", None)
                    if hv["name"] in by_host:
                        hv["bmc"] = by_host[hv["name"]]
        text = dump_fleet(parse_fleet(data, source="lab fleet file"))
        tmp = Path(st.fleet_file).with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, st.fleet_file)


# -- the chassis control (runs under ipmi_sim) --------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """The one hypervisor a control acts on, checked against the lab's names."""

    names: LabNames
    host: LabHost
    conf: Path


def _load_target(conf_path: Path) -> _Target:
    from virtfleet.lab import state as statefile

    conf = json.loads(conf_path.read_text())
    names = LabNames.for_lab(str(conf["lab"]), Path(str(conf["root"])))
    index = int(conf["index"])
    st = statefile.load(names.state_file)
    if st is None:
        raise LabError(f"lab {names.name} is not up")
    host = st.host(str(conf["host"]))
    # The hypervisor in the state file must be the one this BMC was made for, by every name
    # the lab derives: a stale or edited record must not send a power-off elsewhere.
    expected = (names.host_name(index), index, names.netns(index), names.veth(index))
    if (host.name, host.index, host.netns, host.veth) != expected:
        raise LabError(f"BMC of {conf['host']}: lab record {host.name}/{host.netns}/"
                       f"{host.veth} is not hypervisor {index} of lab {names.name}")
    if conf_path.resolve().parent != _bmc_dir(names, index).resolve():
        raise LabError(f"BMC config {conf_path} is not in {_bmc_dir(names, index)}")
    return _Target(names=names, host=host, conf=conf_path)


def _netns_pids(ns: str) -> list[int]:
    """Live processes in network namespace `ns` (what `ip netns pids` does, without forking)."""
    inode = netns.netns_inode(ns)
    if not inode:
        return []
    if inode == os.stat("/proc/self/ns/net").st_ino:
        # The BMC lives in the machine's namespace: a hypervisor namespace file bound to it
        # would make "every process of the hypervisor" every process of the machine.
        raise LabError(f"namespace {ns} is the BMC's own network namespace")
    found = []
    for entry in procs.PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino == inode and procs.alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _boot_pidfile(t: _Target) -> Path:
    return t.conf.parent / "boot.pid"


def _booting(t: _Target) -> bool:
    pid = procs.read_pid(_boot_pidfile(t))
    return (pid is not None and procs.alive(pid) and _ours(pid, bmc_root(t.names))
            and str(t.conf) in procs.cmdline(pid))


def power_is_on(t: _Target) -> bool:
    """On while any process of the hypervisor lives, or its daemons are being started."""
    return bool(_netns_pids(t.host.netns)) or _booting(t)


def _own_veth(t: _Target) -> str:
    owned = netns.owned_links(t.names)
    if t.host.veth not in owned:
        raise LabError(f"{t.host.name}: veth {t.host.veth} is missing or not lab "
                       f"{t.names.name}'s")
    return t.host.veth


def power_off(t: _Target) -> None:
    """A power loss: the link drops and every process of the hypervisor dies at once; what its
    kernel held goes too (the interfaces its libvirt networks made)."""
    veth = _own_veth(t)
    run(["ip", "link", "set", "dev", veth, "down"], f"{t.host.name}: dropping link {veth}")
    deadline = time.monotonic() + KILL_TIMEOUT
    # Repeat until none is left: libvirtd may have forked a QEMU between listing and killing.
    while True:
        pids = _netns_pids(t.host.netns)
        if not pids:
            break
        if time.monotonic() >= deadline:
            raise LabError(f"{t.host.name}: processes {sorted(pids)} survived SIGKILL")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        time.sleep(0.02)
    _forget_links(t)


KEPT_LINKS = ("lo", "eth0")  # the namespace's own loopback and the lab's veth end


def _forget_links(t: _Target) -> None:
    """Remove the interfaces the hypervisor made (libvirt's bridges, a guest's tap), as a reboot
    does: left behind, a `default` network could not start again ("already in use by
    interface virbr0")."""
    out = run(["ip", "-n", t.host.netns, "-j", "link", "show"],
              f"{t.host.name}: listing its interfaces").stdout
    for link in json.loads(out or "[]"):
        name = str(link.get("ifname", ""))
        if name and name not in KEPT_LINKS:
            run(["ip", "-n", t.host.netns, "link", "delete", "dev", name],
                f"{t.host.name}: removing {name}", check=False)


def _forget_run_dir(t: _Target) -> None:
    """Empty the hypervisor's /run/libvirt, as a reboot empties a tmpfs (stale pid files could
    name a reused pid; stale domain status would describe QEMUs that died)."""
    run_dir = Path(t.host.dir) / "run"
    if not run_dir.is_dir():
        return
    for child in run_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def power_on(t: _Target) -> None:
    """Power on: link up, then the daemons start in the background, as a real host boots after
    its BMC has answered."""
    if power_is_on(t):
        return
    veth = _own_veth(t)
    _forget_run_dir(t)
    netns.clear_virtual_links(t.host.netns)
    run(["ip", "link", "set", "dev", veth, "up"], f"{t.host.name}: raising link {veth}")
    log = t.conf.parent / "boot.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", CONTROL_MODULE, str(t.conf), "boot"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=daemon_env(), start_new_session=True)
    _boot_pidfile(t).write_text(f"{proc.pid}\n")


def _boot(t: _Target) -> None:
    from virtfleet.lab.lab import Lab

    try:
        host = Lab(t.names.name, t.names.state_dir.parent).restart_host(t.host.name)
        print(f"{time.strftime('%H:%M:%S')} {host.name}: libvirtd pid {host.libvirtd_pid} "
              "answering", flush=True)
    finally:
        _boot_pidfile(t).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """`CONF 0x20 get power`, `CONF 0x20 set power 0|1` (from ipmi_sim), `CONF boot`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        sys.stderr.write("usage: python -m virtfleet.lab.bmc CONF 0x20 get|set power [0|1]\n")
        return 2
    try:
        t = _load_target(Path(args[0]))
        rest = args[1:]
        if rest == ["boot"]:
            _boot(t)
            return 0
        if rest[:1] != [MC_ADDR]:
            raise LabError(f"unknown controller {rest[0]!r} (this BMC is {MC_ADDR})")
        if rest[1:] == ["get", "power"]:
            print(f"power:{1 if power_is_on(t) else 0}", flush=True)
            return 0
        if rest[1:] == ["set", "power", "0"]:
            power_off(t)
            return 0
        if rest[1:] == ["set", "power", "1"]:
            power_on(t)
            return 0
        # reset, boot device, identify ...: not simulated; the simulator reports a failure.
        raise LabError(f"unsupported chassis control {' '.join(rest[1:])!r}")
    except (LabError, OSError, ValueError, KeyError) as exc:
        sys.stderr.write(f"virtfleet BMC: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
