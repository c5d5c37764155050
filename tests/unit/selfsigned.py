"""A self-signed certificate for 127.0.0.1, made with openssl, for the tests that speak HTTPS."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .tools import require_tool


def self_signed(directory: Path) -> tuple[Path, Path]:
    """cert.pem and key.pem in `directory` (the key mode 0600, as the servers want it)."""
    openssl = require_tool("openssl", "openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True,
                   timeout=60)
    key.chmod(0o600)
    return cert, key
