"""The monitor's two questions to a BMC, answered for any hypervisor of the inventory.

`BmcFencer` looks the host's BMC up in the store (the fleet file's `bmc:` block, as the last
`apply` wrote it) and asks it through the fence agents (fence.py). Anything that stops the
question being asked (no BMC, an unreadable password file, a missing agent) comes back as a
result with power ERROR and the reason, never as an exception: ERROR means unknown, and the
state machine treats unknown as "not fenced".
"""

from __future__ import annotations

import time
from typing import Protocol

from virtfleet.errors import VirtfleetError
from virtfleet.ha.credentials import BmcConfigError
from virtfleet.ha.fence import (
    AGENTS,
    Action,
    FenceDevice,
    Power,
    PowerResult,
    power_off,
    power_on,
    power_status,
)
from virtfleet.inventory.store import Store


class Fencer(Protocol):
    def has_bmc(self, host: str) -> bool: ...
    def status(self, host: str) -> PowerResult: ...
    def off(self, host: str) -> PowerResult: ...


class BmcFencer:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _device(self, host: str) -> FenceDevice:
        bmc = self.store.hypervisor_bmcs().get(host)
        if bmc is None:
            raise BmcConfigError(host, "", "missing: this hypervisor has no bmc: block in the "
                                 "fleet file, so it cannot be fenced")
        return FenceDevice(host=host, bmc=bmc)

    def has_bmc(self, host: str) -> bool:
        return host in self.store.hypervisor_bmcs()

    def _call(self, host: str, action: Action) -> PowerResult:
        t0 = time.monotonic()
        agent = "fence agent"
        try:
            dev = self._device(host)
            agent = AGENTS[dev.bmc.agent]
            run = {"status": power_status, "off": power_off, "on": power_on}[action]
            return run(dev)
        except VirtfleetError as exc:
            return PowerResult(host=host, agent=agent, action=action, power=Power.ERROR,
                               message=exc.in_row(host), seconds=time.monotonic() - t0,
                               confirmed=False)

    def status(self, host: str) -> PowerResult:
        return self._call(host, "status")

    def off(self, host: str) -> PowerResult:
        return self._call(host, "off")

    def on(self, host: str) -> PowerResult:
        """An operator's power-on (`ha power --on`): the monitor never powers a host on."""
        return self._call(host, "on")
