"""Fleet files for `boot serve` tests: QEMU user networking's addresses (10.0.2.0/24, the host
at 10.0.2.2), one distributed-topology site, and N hypervisors with provision sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def mac_of(i: int) -> str:
    return f"52:54:00:12:{i // 256:02x}:{i % 256:02x}"


def boot_fleet(uris: list[str], *, port: int = 8069, kernel: str = "vmlinuz",
               initrd: str = "initrd.img", kernel_args: tuple[str, ...] = ("console=ttyS0",),
               subnet: str = "10.0.2.0/24",
               relays: tuple[str, ...] = ("127.0.0.1",)) -> dict[str, Any]:
    """hv1..hvN (N = len(uris)) in site lab, pod pod1; MAC mac_of(i) and a reserved address
    for each (a /16 when there are more than 250). QEMU user networking NATs its guests: their
    requests reach boot serve from this machine's loopback, its relay for the network."""
    big = len(uris) > 250
    net = "10.0.0.0/16" if big else subnet
    hosts = []
    for i, uri in enumerate(uris, start=1):
        ip = f"10.0.{10 + i // 250}.{i % 250 + 1}" if big else f"10.0.2.{20 + i}"
        hosts.append({"name": f"hv{i}", "uri": uri, "provision": {
            "mac": mac_of(i), "ip": ip, "network": "slirp", "profile": "tiny"}})
    return {
        "profiles": [{"name": "tiny", "os_tree": "http://10.0.2.2/os", "kernel": kernel,
                      "initrd": initrd, "kernel_args": list(kernel_args)}],
        "sites": [{
            "name": "lab",
            "boot": {"topology": "distributed"},
            "networks": [{
                "name": "slirp", "subnet": net, "gateway": "10.0.2.2",
                "pool": {"start": "10.0.2.100", "end": "10.0.2.200"},
                "servers": {"next_server": "10.0.2.2", "http_base": f"http://10.0.2.2:{port}/"},
                "relays": list(relays),
            }],
            # The boot tests' hosts are never connected to: any URI, qemu+tcp included.
            "pods": [{"name": "pod1", "insecure_transport": True, "hypervisors": hosts}],
        }],
    }


def write_fleet(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
