"""ha/fence.py without a BMC: what each agent is given, how its words are read, deadlines.

The agents are the real ones (fence-agents); the BMC side of these tests is a loopback socket
the test owns. The lab BMC tests (tests/integration/test_fence.py) drive real power changes.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtfleet.ha.credentials import BmcConfigError, Secret
from virtfleet.ha.fence import (
    FenceDevice,
    FenceFailed,
    Power,
    PowerResult,
    agent_env,
    agent_input,
    agent_message,
    power_off,
    power_status,
)
from virtfleet.ha.ipmitool_env import rewrite
from virtfleet.inventory.fleetfile import BmcSpec, Hypervisor

PASSWORD = "Zq9-secret-pw"


def device(tmp_path: Path, **bmc: Any) -> FenceDevice:
    pw = tmp_path / "bmc.pass"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    spec = {"agent": "ipmilan", "address": "127.0.0.1", "username": "admin",
            "password_file": str(pw), **bmc}
    return FenceDevice(host="hv1", bmc=BmcSpec.model_validate(spec))


def lines(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_ipmilan_gets_its_options_on_stdin_and_the_password_in_its_environment(
        tmp_path: Path) -> None:
    dev = device(tmp_path, port=6230, power_wait=0)
    text = agent_input(dev, "off", Secret(PASSWORD), 8, shim="/venv/bin/virtfleet-ipmitool")
    opts = lines(text)
    assert opts["action"] == "off" and opts["ip"] == "127.0.0.1" and opts["ipport"] == "6230"
    assert opts["username"] == "admin" and opts["lanplus"] == "1" and opts["cipher"] == "3"
    assert opts["ipmitool_path"] == "/venv/bin/virtfleet-ipmitool"
    assert opts["power_timeout"] == "8" and opts["power_wait"] == "0"
    assert PASSWORD not in text and "password" not in opts
    env = agent_env(dev, Secret(PASSWORD), ipmitool="/usr/bin/ipmitool")
    assert env["IPMITOOL_PASSWORD"] == PASSWORD
    assert env["VIRTFLEET_IPMITOOL"] == "/usr/bin/ipmitool"


def test_redfish_gets_the_password_on_stdin(tmp_path: Path) -> None:
    dev = device(tmp_path, agent="redfish", ssl_insecure=True,
                 systems_uri="/redfish/v1/Systems/7")
    opts = lines(agent_input(dev, "status", Secret(PASSWORD), 8))
    assert opts["password"] == PASSWORD and opts["ipport"] == "443"
    assert opts["ssl_insecure"] == "1" and opts["systems_uri"] == "/redfish/v1/Systems/7"
    assert "ipmitool_path" not in opts and "cipher" not in opts
    assert "IPMITOOL_PASSWORD" not in agent_env(dev, Secret(PASSWORD))


def test_agents_never_inherit_our_environment(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # With password_env, every BMC password of the fleet may be in our environment.
    monkeypatch.setenv("OTHER_HOST_BMC_PW", "other-secret")
    env = agent_env(device(tmp_path), Secret(PASSWORD), ipmitool="/usr/bin/ipmitool")
    assert "OTHER_HOST_BMC_PW" not in env
    assert set(env) <= {"PATH", "LANG", "LC_ALL", "PYTHONWARNINGS", "IPMITOOL_PASSWORD",
                        "VIRTFLEET_IPMITOOL"}


def test_a_host_without_a_bmc_cannot_be_fenced() -> None:
    hv = Hypervisor(name="hv9", uri="qemu+ssh://hv9/system")
    with pytest.raises(BmcConfigError) as exc:
        FenceDevice.of(hv)
    assert exc.value.host == "hv9" and exc.value.field == "bmc"
    assert "cannot be fenced" in exc.value.message


def test_the_shim_drops_the_empty_password_and_refuses_a_real_one() -> None:
    argv = ["-I", "lanplus", "-H", "10.1.0.11", "-p", "623", "-U", "admin", "-P", "",
            "-C", "3", "-L", "ADMINISTRATOR", "-N", "2", "chassis", "power", "status"]
    out = rewrite(argv)
    assert out[0] == "-E" and "-P" not in out and "" not in out
    assert out[1:] == [a for a in argv if a not in ("-P", "")]
    for bad in (["-P", "hunter2"], ["-Phunter2"], ["-f", "/tmp/pw"], ["-a"], ["-P"]):
        with pytest.raises(ValueError):
            rewrite(["-H", "10.1.0.11", *bad, "chassis", "power", "off"])


# Real agent output, as fence-agents 4.12 prints it with verbose=1.
BAD_LOGIN = """\
2026-12-01 00:07:23,761 INFO: Executing: /x/virtfleet-ipmitool -I lanplus -H 127.250.102.11 \
-p 623 -U virtfleet -P [set] -C 3 -L ADMINISTRATOR -N 2 chassis power status

2026-12-01 00:07:23,795 DEBUG: 1  Error: Unable to establish IPMI v2 / RMCP+ session


2026-12-01 00:07:23,795 ERROR: Failed: Unable to obtain correct plug status or plug is not \
available
"""


def test_agent_words_are_read_into_one_line() -> None:
    msg = agent_message(BAD_LOGIN)
    assert msg.startswith("the BMC refused the session: check the user name, password")
    assert "Unable to establish IPMI v2 / RMCP+ session" in msg
    assert "Executing" not in msg and "2026-" not in msg
    assert agent_message("Status: ON\n") == "Status: ON"
    assert agent_message("/usr/sbin/fence_ipmilan:5: DeprecationWarning: 'pipes' is "
                         "deprecated\n  from pipes import quote\nSuccess: Powered OFF\n") \
        == "Success: Powered OFF"
    assert agent_message("2026-12-01 00:07:43,935 ERROR: Connection timed out\n") == \
        "the BMC did not answer (Connection timed out)"


def test_an_error_result_raises_with_its_subject() -> None:
    r = PowerResult(host="hv1", agent="fence_ipmilan", action="off", power=Power.ERROR,
                    message="the BMC did not answer", seconds=2.0, confirmed=False)
    with pytest.raises(FenceFailed) as exc:
        r.raise_for_error()
    assert (exc.value.host, exc.value.agent, exc.value.action) == ("hv1", "fence_ipmilan",
                                                                   "off")
    assert exc.value.retryable and exc.value.message.startswith("hv1: power off through")
    ok = PowerResult(host="hv1", agent="fence_ipmilan", action="status", power=Power.OFF,
                     message="Status: OFF", seconds=0.1, confirmed=True)
    assert ok.raise_for_error() is ok and ok.as_json()["power"] == "off"


class SilentBmc:
    """A TCP listener on loopback that accepts and never says a word: a hung BMC."""

    def __init__(self) -> None:
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.srv.settimeout(0.2)
        self.port: int = self.srv.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.srv.accept()
                self.conns.append(conn)
            except OSError:
                continue

    def all_closed_by_peer(self, within: float = 10.0) -> bool:
        """True when every client hung up (a killed agent's socket is closed by the kernel)."""
        deadline = time.monotonic() + within
        for conn in self.conns:
            while True:
                conn.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    if conn.recv(4096) == b"":
                        break
                except TimeoutError:
                    return False
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for c in self.conns:
            c.close()
        self.srv.close()


@pytest.fixture
def silent_bmc() -> Iterator[SilentBmc]:
    bmc = SilentBmc()
    try:
        yield bmc
    finally:
        bmc.close()


def test_a_hung_bmc_is_cut_off_at_the_deadline(tmp_path: Path, silent_bmc: SilentBmc) -> None:
    # fence_redfish calls `requests` with no timeout: against a BMC that never answers it
    # would wait forever. The deadline kills it (the kernel then closes its connection).
    dev = device(tmp_path, agent="redfish", port=silent_bmc.port, ssl_insecure=True)
    r = power_status(dev, timeout=3.0)
    assert r.power is Power.ERROR and not r.confirmed
    assert "did not finish within 3s and was killed" in r.message
    assert silent_bmc.conns, "the agent never reached the silent BMC"
    assert silent_bmc.all_closed_by_peer()
    off = power_off(dev, timeout=3.0)
    assert off.power is Power.ERROR
    assert "no time left to confirm" in off.message
