"""The URI virtfleet actually opens: the inventory's URI plus transport parameters it adds itself.

The inventory refuses every URI parameter (inventory/uri.py): `command=`, `no_verify=`,
`pkipath=` in a fleet file would let whoever edits it decide what runs and what is trusted.
virtfleet adds its own, built from its transport directory (paths.py), never from input:

    qemu+ssh://root@hv1/system -> ...?command=<dir>/ssh&no_tty=1   (ssh -F <dir>/ssh_config)
    qemu+tls://hv1/system      -> ...?pkipath=<dir>/pki

It never adds `no_verify=1`. Other URIs (local, tcp, unix) are opened as given.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import urlencode

from virtfleet.errors import HostUnavailable
from virtfleet.inventory.uri import parse_uri
from virtfleet.transport.paths import CA_CERT, CLIENT_CERT, CLIENT_KEY, TransportDir
from virtfleet.transport.sshconfig import ensure_ssh_files


def transport_of(uri: str) -> str:
    """`ssh`, `tls`, `tcp`, ... or "" for a local URI."""
    return uri.split("://", 1)[0].partition("+")[2]


def check_pki(pki: Path, host: str) -> None:
    """The three files libvirt's TLS client needs, present and the key private. libvirt itself
    would go on without a client certificate and fail with "Unable to read TLS confirmation"."""
    what = {CA_CERT: "no CA certificate", CLIENT_CERT: "no client certificate",
            CLIENT_KEY: "no client key"}
    for name in (CA_CERT, CLIENT_CERT, CLIENT_KEY):
        path = pki / name
        if not path.is_file():
            raise HostUnavailable(f"TLS: {what[name]}: {path} is missing (qemu+tls needs "
                                  f"{CA_CERT}, {CLIENT_CERT} and {CLIENT_KEY} in {pki}; "
                                  "see docs/transports.md)", host=host)
    key = pki / CLIENT_KEY
    mode = stat.S_IMODE(os.stat(key).st_mode)
    if mode & 0o077:
        raise HostUnavailable(f"TLS: {key} has mode {mode:04o}; the client key must be "
                              f"readable by its owner only (chmod 600 {key})", host=host)


def connect_uri(uri: str, host: str, td: TransportDir | None = None) -> str:
    """`uri` as libvirt should open it, for hypervisor `host` (named in errors)."""
    transport = transport_of(uri)
    if transport not in ("ssh", "tls"):
        return uri
    base = parse_uri(uri).render()  # refuses any parameter already there
    td = td or TransportDir.from_env()
    if transport == "ssh":
        params = {"command": str(ensure_ssh_files(td)), "no_tty": "1"}
    else:
        check_pki(td.pki, host)
        params = {"pkipath": str(td.pki)}
    return f"{base}?{urlencode(params, safe='/')}"
