"""ISC dhcpd configurations: one per scope, or a primary and a secondary for a failover pair.

What dhcpd -t accepts: `filename "pxelinux.0";` (no `=`), `max-response-delay` and
`max-unacked-updates` as single words, mclt and split on the primary only (dhcpd refuses them
on a secondary), and an OMAPI key made per render with HMAC-SHA256, never a fixed shared
string.
"""

from __future__ import annotations

import base64
import secrets
from typing import Literal

from virtfleet.boot import grub
from virtfleet.boot.scopes import DhcpScope
from virtfleet.boot.templating import render

Role = Literal["primary", "secondary"]


def new_omapi_secret() -> str:
    """A fresh 256-bit key, base64 as dhcpd and omshell expect it."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def roles(scope: DhcpScope) -> list[Role | None]:
    """The configurations a scope needs: both peers of a pair, or one lone server."""
    return ["primary", "secondary"] if scope.servers.dhcp is not None else [None]


def render_dhcpd(scope: DhcpScope, role: Role | None, omapi_secret: str) -> str:
    pair = scope.servers.dhcp
    if (pair is None) != (role is None):
        raise ValueError("a role is needed exactly when the scope has a failover pair")
    me = peer = None
    if pair is not None:
        me, peer = ((pair.primary, pair.secondary) if role == "primary"
                    else (pair.secondary, pair.primary))
    base64.b64decode(omapi_secret, validate=True)  # never interpolate anything but base64
    return render("dhcpd.conf.j2", scope=scope, role=role, pair=pair, me=me, peer=peer,
                  servers=scope.servers, networks=scope.networks, hosts=scope.hosts,
                  omapi_secret=omapi_secret, grub_file=grub.BOOT_FILE)
