"""The only package that imports libvirt (see docs/development.md).

libvirt's client library logs warnings and errors to stderr by itself: a failed TLS handshake
prints three timestamped lines ("info : libvirt version ...", "warning : ... Certificate check
failed ...") before virtfleet can say what went wrong in one. virtfleet reports every libvirt
error itself (virt/errors.py), so the library's own log goes nowhere unless the user asked for it
with LIBVIRT_DEBUG or LIBVIRT_LOG_OUTPUTS. The library reads these when it is first loaded, so
this runs before any module of this package imports libvirt.
"""

import os

from virtfleet.config import QUIET_CLIENT_LOG

if "LIBVIRT_DEBUG" not in os.environ and "LIBVIRT_LOG_OUTPUTS" not in os.environ:
    os.environ["LIBVIRT_LOG_OUTPUTS"] = QUIET_CLIENT_LOG
