"""How a lab's hypervisors are reached: qemu+tcp (the default, fast, lab only), qemu+ssh or
qemu+tls, as a real estate reaches its own.

    client = prepare_client(names, "ssh")     # the lab's client side: STATE/client/
    prepare_host(client, names, index, name)  # the hypervisor's sshd, or its certificate
    listen_settings(client, names, index)     # its libvirtd.conf listeners

The client side is a transport directory (transport/paths.py) of the lab's own,
STATE/client/, 0700: for ssh the lab's client key (id_ed25519), whose public half is in every
hypervisor's authorized_keys, and an empty known_hosts, so host keys are pinned the way an
operator pins them (`apply --accept-new` after comparing fingerprints); for tls pki/ with the lab
CA's certificate and a client certificate it issued. Point VIRTFLEET_TRANSPORT_DIR at it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from virtfleet.errors import InvalidInput
from virtfleet.lab import pki, sshd
from virtfleet.lab.names import LIBVIRT_PORT, LabNames

TRANSPORTS = ("tcp", "ssh", "tls")
TLS_PORT = 16514
# Live migration is peer to peer: the source hypervisor's libvirtd opens the target's URI
# itself, as root, with root's ssh keys or the machine's TLS client certificate, as on a real
# estate. So each hypervisor gets its own copy of those places, bind-mounted in its namespace
# by nsboot: STATE/hosts/hN/<key> over <value>.
PEER_DIRS = {"rootssh": "/root/.ssh", "etcpki": "/etc/pki"}


def check_transport(transport: str) -> str:
    if transport not in TRANSPORTS:
        raise InvalidInput("transport", f"{transport!r} is not one of {', '.join(TRANSPORTS)}")
    return transport


@dataclass(frozen=True)
class ClientSide:
    transport: str
    dir: Path | None = None  # the lab's transport directory (None for tcp)
    authorized_key: str = ""  # ssh: the client's public key line
    ca: pki.LabCA | None = None  # tls: the CA that signs the hypervisors' certificates


def client_dir(names: LabNames) -> Path:
    return names.state_dir / "client"


def prepare_client(names: LabNames, transport: str) -> ClientSide:
    check_transport(transport)
    if transport == "tcp":
        return ClientSide("tcp")
    d = client_dir(names)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    if transport == "ssh":
        (d / "known_hosts").touch(mode=0o600)
        return ClientSide("ssh", d, authorized_key=sshd.client_key(d))
    ca = pki.LabCA(names.state_dir / "ca", f"virtfleet lab {names.name}")
    ca.create()
    ca.issue_client(d / "pki")
    return ClientSide("tls", d, ca=ca)


def resume_client(names: LabNames, transport: str) -> ClientSide:
    """The client side of a lab that is already up (to add or rebuild a hypervisor)."""
    d = client_dir(names)
    if transport == "ssh":
        return ClientSide("ssh", d, authorized_key=(d / "id_ed25519.pub").read_text().strip())
    if transport == "tls":
        return ClientSide("tls", d, ca=pki.LabCA(names.state_dir / "ca",
                                                 f"virtfleet lab {names.name}"))
    return ClientSide("tcp")


def prepare_host(client: ClientSide, names: LabNames, index: int, name: str) -> None:
    host_dir = names.host_dir(index)
    if client.transport == "ssh":
        sshd.prepare(host_dir, names.address(index), name, client.authorized_key)
        sshd.prepare_root_ssh(host_dir / "rootssh", name)
    elif client.transport == "tls":
        assert client.ca is not None
        client.ca.issue_server(host_dir / "pki", name, names.address(index))
        # The hypervisor as a TLS client of its peers: libvirtd (root) looks in /etc/pki.
        etc_pki = host_dir / "etcpki"
        client.ca.issue_client(etc_pki / "libvirt", cn=name)
        (etc_pki / "CA").mkdir(mode=0o755, exist_ok=True)
        os.replace(etc_pki / "libvirt" / pki.CA_CERT, etc_pki / "CA" / pki.CA_CERT)
        (etc_pki / "libvirt" / "private").mkdir(mode=0o700, exist_ok=True)
        os.replace(etc_pki / "libvirt" / pki.CLIENT_KEY,
                   etc_pki / "libvirt" / "private" / pki.CLIENT_KEY)


def link_hosts(client: ClientSide, host_dirs: list[Path], addresses: list[str]) -> None:
    """Once every hypervisor exists: each one's root trusts the others' host keys, and each
    one's sshd lets in the lab client and every hypervisor's root (for peer-to-peer
    migration). TLS needs nothing more: they share the CA, and the DNs are allowed by
    pattern."""
    if client.transport != "ssh":
        return
    keys = [sshd.host_key(d) for d in host_dirs]
    known = "".join(f"{a} {k.type} {k.data}\n" for a, k in zip(addresses, keys, strict=True))
    roots = [(d / "rootssh" / "id_ed25519.pub").read_text().strip() for d in host_dirs]
    for d in host_dirs:
        (d / "rootssh" / "known_hosts").write_text(known)
        auth = sshd.ssh_dir(d) / "authorized_keys"
        auth.write_text("".join(f"{k}\n" for k in [client.authorized_key, *roots]))


def describe_host(transport: str, host_dir: Path) -> str:
    """What an operator compares when pinning: the fingerprint of the host's ssh key."""
    if transport != "ssh":
        return ""
    return f"; sshd host key {sshd.host_key(host_dir).describe()}"


def listen_settings(client: ClientSide | None, address: str,
                    host_dir: Path | None = None) -> dict[str, str | int | list[str]]:
    """libvirtd.conf's listeners for the hypervisor at `address` (its files in `host_dir`)."""
    transport = client.transport if client is not None else "tcp"
    if transport == "ssh":
        # Only the Unix socket: ssh logins reach it through virt-ssh-helper (or nc).
        return {"listen_tcp": 0, "listen_tls": 0}
    if transport == "tls":
        assert client is not None and client.ca is not None and host_dir is not None
        server = host_dir / "pki"
        return {
            "listen_tcp": 0,
            "listen_tls": 1,
            "tls_port": str(TLS_PORT),
            "listen_addr": address,
            "key_file": str(server / pki.SERVER_KEY),
            "cert_file": str(server / pki.SERVER_CERT),
            "ca_file": str(server / pki.CA_CERT),
            "auth_tls": "none",  # the client certificate is the authentication
            # virtfleet, and the lab's hypervisors (their libvirtd migrating peer to peer).
            "tls_allowed_dn_list": [client.ca.client_dn(), client.ca.client_dn("*-hv*")],
        }
    return {
        "listen_tcp": 1,
        "listen_tls": 0,  # else libvirtd dies looking for TLS certificates
        "tcp_port": str(LIBVIRT_PORT),
        "listen_addr": address,
        "auth_tcp": "none",  # lab only: the subnet is reachable from this machine alone
    }
