"""An ASGI app served by a real uvicorn on a Unix socket, for as long as a test needs it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


@contextmanager
def serving_on_unix_socket(app: Any, path: str) -> Iterator[None]:
    """Serve `app` at `path`; return once uvicorn has started, stop it on leaving."""
    server = uvicorn.Server(uvicorn.Config(app, uds=path, log_level="error"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        t.join(timeout=30)
