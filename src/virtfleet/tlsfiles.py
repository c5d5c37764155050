"""A server's TLS certificate and key as an operator names them (`boot serve` and `serve
--listen` both take `--tls-cert/--tls-key`): checked once, the same way, before anything
listens."""

from __future__ import annotations

import ssl
from pathlib import Path

from virtfleet.errors import InvalidInput


def tls_files(cert: Path | None, key: Path | None) -> tuple[Path, Path] | None:
    """Both or neither; readable PEM that go together; the key private to its owner."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        missing, given = ("tls_key", "tls_cert") if key is None else ("tls_cert", "tls_key")
        raise InvalidInput(missing, f"needed with `{given}`")
    for name, path in (("tls_cert", cert), ("tls_key", key)):
        if not path.is_file():
            raise InvalidInput(name, f"{str(path)!r} is not a file")
    mode = key.stat().st_mode
    if mode & 0o077:
        raise InvalidInput("tls_key", f"{str(key)!r} can be read by others (mode "
                           f"{mode & 0o777:04o}); chmod 600 it")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise InvalidInput("tls_cert", f"cannot use {str(cert)!r} with {str(key)!r}: "
                           f"{getattr(exc, 'reason', None) or exc}") from None
    return cert, key
