"""Power status, off and on of a hypervisor through its BMC, with ClusterLabs' fence agents.

    dev = FenceDevice.of(hypervisor)      # BmcConfigError if it has no usable `bmc:` block
    r = power_status(dev)                 # PowerResult: power ON / OFF / ERROR, the agent's words
    r = power_off(dev)                    # off, then a status call: OFF only when that confirms
    r.raise_for_error()                   # FenceFailed(host=..., agent=..., action=...)

The agents (`fence_ipmilan`, `fence_redfish`; Debian package fence-agents) do the talking; this
module only runs them. Each runs without arguments and reads its options as `name=value` lines
on stdin, so nothing about the BMC is on a command line. The password goes on stdin too for
fence_redfish; fence_ipmilan would put it on ipmitool's command line, so it gets it through
IPMITOOL_PASSWORD instead (see ipmitool_env.py). Each agent gets a minimal environment: not ours,
which may hold other BMCs' passwords. Every call has a deadline; an agent that overruns is
killed with its children (it runs in its own process group).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from virtfleet.errors import VirtfleetError
from virtfleet.ha.credentials import BmcConfigError, Secret, read_password
from virtfleet.ha.ipmitool_env import PASSWORD_ENV, TOOL_ENV
from virtfleet.inventory.fleetfile import BmcSpec, Hypervisor

Action = Literal["status", "off", "on"]
AGENTS = {"ipmilan": "fence_ipmilan", "redfish": "fence_redfish"}
SHIM = "virtfleet-ipmitool"
DEFAULT_CIPHER = 3  # without a cipher suite fence_ipmilan's calls stalled 14-44 s here
STATUS_TIMEOUT = 10.0
ACTION_TIMEOUT = 30.0  # off or on, and the status call that confirms it
AGENT_POWER_TIMEOUT = 20  # the agents' own default wait for the power to change
_SBIN = ("/usr/sbin", "/sbin", "/usr/bin")


class Power(StrEnum):
    ON = "on"
    OFF = "off"
    ERROR = "error"


class FenceFailed(VirtfleetError):
    """A fence agent could not do what was asked (or could not say that it had)."""

    retryable = True

    def __init__(self, host: str, agent: str, action: str, message: str,
                 retryable: bool = True) -> None:
        super().__init__(f"power {action} through {agent} failed: {message}", host=host)
        self.agent = agent
        self.action = action
        self.reason = message
        self.retryable = retryable


@dataclass(frozen=True)
class FenceDevice:
    """A hypervisor and the BMC that powers it."""

    host: str
    bmc: BmcSpec

    @classmethod
    def of(cls, hv: Hypervisor) -> FenceDevice:
        if hv.bmc is None:
            raise BmcConfigError(hv.name, "", "missing: this hypervisor has no bmc: block in "
                                 "the fleet file, so it cannot be fenced")
        return cls(host=hv.name, bmc=hv.bmc)

    @property
    def agent(self) -> str:
        return AGENTS[self.bmc.agent]


@dataclass(frozen=True)
class PowerResult:
    """What one status/off/on call found. `confirmed`: for off and on, a status call after
    the action saw the wanted state; for status, the agent gave an answer."""

    host: str
    agent: str
    action: Action
    power: Power
    message: str  # the agent's own words (the password, if it ever appeared, is masked)
    seconds: float
    confirmed: bool

    @property
    def ok(self) -> bool:
        return self.power is not Power.ERROR

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "agent": self.agent, "action": self.action,
                "power": self.power.value, "message": self.message,
                "seconds": round(self.seconds, 3), "confirmed": self.confirmed}

    def raise_for_error(self) -> PowerResult:
        if self.power is Power.ERROR:
            raise FenceFailed(self.host, self.agent, self.action, self.message)
        return self


# -- running an agent --------------------------------------------------------------------------


def _which(program: str, extra: tuple[str, ...] = _SBIN) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *extra])
    return shutil.which(program, path=path)


def _shim_path() -> str | None:
    # Installed beside the interpreter that runs virtfleet (a venv's bin/), else on PATH.
    return _which(SHIM, (os.path.dirname(sys.executable), *_SBIN))


def agent_input(dev: FenceDevice, action: Action, password: Secret, agent_timeout: int,
                shim: str = "") -> str:
    """The agent's stdin: one `name=value` option per line."""
    bmc = dev.bmc
    opts: list[tuple[str, str]] = [
        ("action", action),
        ("ip", bmc.address),
        ("ipport", str(bmc.effective_port)),
        ("username", bmc.username),
        ("power_timeout", str(agent_timeout)),
        ("verbose", "1"),  # the tool's own error (ipmitool's, requests') is the useful line
    ]
    if bmc.power_wait is not None:
        opts.append(("power_wait", str(bmc.power_wait)))
    if bmc.agent == "ipmilan":
        opts += [("lanplus", "1"),
                 ("cipher", str(bmc.cipher if bmc.cipher is not None else DEFAULT_CIPHER)),
                 ("ipmitool_path", shim)]
    else:
        opts.append(("password", password.reveal()))
        if bmc.ssl_insecure:
            opts.append(("ssl_insecure", "1"))
        if bmc.systems_uri is not None:
            opts.append(("systems_uri", bmc.systems_uri))
    return "".join(f"{name}={value}\n" for name, value in opts)


def agent_env(dev: FenceDevice, password: Secret, ipmitool: str = "") -> dict[str, str]:
    """A minimal environment for the agent: ours may hold other BMCs' passwords."""
    env = {"PATH": os.pathsep.join([os.environ.get("PATH", "/usr/bin:/bin"), *_SBIN]),
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "PYTHONWARNINGS": "ignore::DeprecationWarning"}  # fence agents import `pipes`
    if dev.bmc.agent == "ipmilan":
        env[PASSWORD_ENV] = password.reveal()
        env[TOOL_ENV] = ipmitool
    return env


@dataclass(frozen=True)
class _Run:
    rc: int | None  # None: killed at the deadline
    out: str
    seconds: float


def _run_agent(dev: FenceDevice, action: Action, timeout: float) -> _Run:
    agent = dev.agent
    path = _which(agent)
    if path is None:
        raise FenceFailed(dev.host, agent, action, f"{agent} is not installed (Debian package "
                          "fence-agents)", retryable=False)
    shim = ipmitool = ""
    if dev.bmc.agent == "ipmilan":
        shim, ipmitool = _shim_path() or "", _which("ipmitool") or ""
        if not shim:
            raise FenceFailed(dev.host, agent, action, f"{SHIM} is not installed (it comes "
                              "with virtfleet: reinstall it)", retryable=False)
        if not ipmitool:
            raise FenceFailed(dev.host, agent, action, "ipmitool is not installed (Debian "
                              "package ipmitool)", retryable=False)
    password = read_password(dev.host, dev.bmc)
    # The agent's own power wait ends before our deadline, so it can still say what it saw.
    agent_timeout = max(1, min(AGENT_POWER_TIMEOUT, int(timeout) - 2))
    text = agent_input(dev, action, password, agent_timeout, shim)
    t0 = time.monotonic()
    proc = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=agent_env(dev, password, ipmitool),
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(text, timeout=max(timeout, 0.1))
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the agent and the ipmitool it runs
        out, _ = proc.communicate()
        rc = None
    return _Run(rc=rc, out=_mask(out or "", password), seconds=time.monotonic() - t0)


def _mask(text: str, password: Secret) -> str:
    secret = password.reveal()
    return text.replace(secret, "***") if secret else text


# -- what the agent said -----------------------------------------------------------------------

_STAMP_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (?P<level>[A-Z]+): (?P<text>.*)$")
_TOOL_ERROR_RE = re.compile(r"\bError: (?P<text>.+)$")
_HINTS = (
    ("RMCP+ session", "the BMC refused the session: check the user name, password and "
                      "cipher suite"),
    ("Connection timed out", "the BMC did not answer"),
    ("401", "the BMC refused the login: check the user name and password"),
    ("Unauthorized", "the BMC refused the login: check the user name and password"),
)


def agent_message(out: str) -> str:
    """The agent's output as one line: its result or its error, with the tool's own error and
    a hint when one is known. No timestamps, no echo of the command it ran."""
    results: list[str] = []
    errors: list[str] = []
    tool: list[str] = []
    for raw in out.splitlines():
        line = raw.strip()
        if not line or "DeprecationWarning" in line or line.startswith("from pipes"):
            continue
        m = _STAMP_RE.match(line)
        level, text = (m.group("level"), m.group("text").strip()) if m else ("", line)
        if text.startswith("Executing:"):
            continue
        te = _TOOL_ERROR_RE.search(text)
        if te and level in ("", "DEBUG"):
            tool.append(te.group("text").strip())
        elif level in ("ERROR", "CRITICAL"):
            errors.append(text)
        elif level == "" and (text.startswith(("Status:", "Success:", "Failed:"))):
            (errors if text.startswith("Failed:") else results).append(text)
    if errors or tool:
        parts = [*dict.fromkeys(tool), *dict.fromkeys(errors)]
        msg = "; ".join(parts)
        hint = next((h for key, h in _HINTS if key in msg), "")
        return f"{hint} ({msg})" if hint else msg
    if results:
        return results[-1]
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def _status_of(run: _Run) -> Power:
    # fence agents' status exit codes: 0 on, 2 off, anything else an error.
    return {0: Power.ON, 2: Power.OFF}.get(run.rc if run.rc is not None else -1, Power.ERROR)


def _timed_out(dev: FenceDevice, timeout: float) -> str:
    return f"{dev.agent} did not finish within {timeout:g}s and was killed"


# -- the three calls ---------------------------------------------------------------------------


def power_status(dev: FenceDevice, timeout: float = STATUS_TIMEOUT) -> PowerResult:
    """Is the hypervisor's power on or off, by its BMC?"""
    run = _run_agent(dev, "status", timeout)
    power = _status_of(run)
    msg = _timed_out(dev, timeout) if run.rc is None else agent_message(run.out)
    return PowerResult(host=dev.host, agent=dev.agent, action="status", power=power,
                       message=msg, seconds=run.seconds, confirmed=power is not Power.ERROR)


def _act(dev: FenceDevice, action: Literal["off", "on"], want: Power,
         timeout: float) -> PowerResult:
    t0 = time.monotonic()
    run = _run_agent(dev, action, timeout)
    said = _timed_out(dev, timeout) if run.rc is None else agent_message(run.out)
    # Whatever the action reported, the answer is what a status call sees afterwards: an agent
    # can time out after the power changed, or report success before it has.
    left = timeout - (time.monotonic() - t0)
    if left < 1.0:
        return PowerResult(host=dev.host, agent=dev.agent, action=action, power=Power.ERROR,
                           message=f"{said}; no time left to confirm the power state",
                           seconds=time.monotonic() - t0, confirmed=False)
    check = power_status(dev, timeout=left)
    seconds = time.monotonic() - t0
    if check.power is want:
        return PowerResult(host=dev.host, agent=dev.agent, action=action, power=want,
                           message=said, seconds=seconds, confirmed=True)
    if check.power is Power.ERROR:
        msg = f"{said}; then the status call failed: {check.message}"
    else:
        msg = f"{said}; the power is still {check.power.value.upper()} afterwards"
    return PowerResult(host=dev.host, agent=dev.agent, action=action, power=Power.ERROR,
                       message=msg, seconds=seconds, confirmed=False)


def power_off(dev: FenceDevice, timeout: float = ACTION_TIMEOUT) -> PowerResult:
    """Power the hypervisor off (a hard power-off: this is fencing, not a shutdown). OFF only
    when a status call afterwards says off."""
    return _act(dev, "off", Power.OFF, timeout)


def power_on(dev: FenceDevice, timeout: float = ACTION_TIMEOUT) -> PowerResult:
    """Power the hypervisor on; ON when a status call afterwards says on (the host may still be
    booting: that is for its libvirt connection to say)."""
    return _act(dev, "on", Power.ON, timeout)
