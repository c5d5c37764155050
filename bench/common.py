"""What several benches do alike: run virtfleet's CLI and time it, find a free loopback port,
read a process's peak memory, simulate the reference fleet (and read back its hypervisors and
VMs), make the API user a bench calls as, wait for a controller's first reading, and stop the
controller and the lab at the end."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VF = str(ROOT / ".venv" / "bin" / "virtfleet")


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run argv; return (seconds, stdout). Fails loudly on error."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})
    secs = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed ({proc.returncode}): "
                         f"{proc.stderr[-2000:]}")
    return secs, proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_peak_mib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else float("nan")


def simulate(lab: str, work: Path, quick: bool, env: dict[str, str] | None = None) -> Path:
    """The simulated reference fleet (150 hypervisors when quick) as lab `lab`, its files
    under work/sim; the fleet file it wrote."""
    sim = ["--hypervisors", "150"] if quick else []
    print(f"simulating the fleet in {work} ...", flush=True)
    _s, out = timed([VF, "lab", "simulate", "--name", lab, "--out", str(work / "sim"), *sim],
                    env)
    return Path(out.strip().splitlines()[-1])


def hypervisor_uris(fleet: dict[str, Any]) -> list[str]:
    """Every hypervisor's URI in a fleet file, in its order."""
    return [hv["uri"] for s in fleet["sites"] for p in s["pods"] for hv in p["hypervisors"]]


def simulated_vms(uris: list[str]) -> int:
    """How many VMs the simulated hypervisors hold: the domains in every node file
    (test+tcp://ADDR/abs/node.xml)."""
    return sum(Path("/" + u.split("//", 1)[1].split("/", 1)[1]).read_text().count("<domain ")
               for u in uris)


def bench_token(env: dict[str, str], role: str) -> str:
    """A user "bench" granted `role` over all the fleet, and a day's API token of it."""
    timed([VF, "user", "add", "bench"], env)
    timed([VF, "grant", "add", "bench", role, "--scope", "all"], env)
    return timed([VF, "token", "create", "bench", "--expires", "1d"], env)[1].strip()


def wait_for_controller(env: dict[str, str], first: str, ctl: subprocess.Popen[bytes],
                        timeout: float) -> None:
    """Until `virtfleet list --host FIRST` says it answered from the controller."""
    deadline = time.monotonic() + timeout
    while True:
        probe = subprocess.run([VF, "list", "--host", first], env={**os.environ, **env},
                               capture_output=True, text=True, check=False)
        if "from the controller" in probe.stderr:
            return
        if ctl.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("controller did not come up: "
                             + (ctl.stderr.read().decode()[-2000:] if ctl.stderr else ""))
        time.sleep(1)


def stop_controller(controller: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, and wait for it to end, if it still runs."""
    if controller is not None and controller.poll() is None:
        controller.send_signal(signal.SIGTERM)
        controller.wait(timeout=120)


def lab_down(lab: str) -> None:
    subprocess.run([VF, "lab", "down", "--name", lab], check=False, stdout=subprocess.DEVNULL)
