"""A plain HTTP client for the controller's REST API, for tests and benchmarks: the standard
library's http.client, over TCP (optionally TLS) or the controller's Unix socket."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    status: int
    body: Any  # the JSON answer (or the raw text if it is not JSON)
    headers: dict[str, str]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


@dataclass
class Api:
    """`Api("127.0.0.1", 8443, token)`; `Api(unix="/run/.../controller-1.sock")`."""

    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    tls: ssl.SSLContext | None = None
    unix: str | None = None
    timeout: float = 120.0

    def as_(self, token: str | None) -> Api:
        return Api(self.host, self.port, token, self.tls, self.unix, self.timeout)

    def _connection(self) -> http.client.HTTPConnection:
        if self.unix is not None:
            return _UnixConnection(self.unix, self.timeout)
        if self.tls is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                               context=self.tls)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> Answer:
        sent = {**({"Authorization": f"Bearer {self.token}"} if self.token else {}),
                **(headers or {})}
        data = raw if raw is not None else (json.dumps(body).encode()
                                             if body is not None else None)
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        conn = self._connection()
        try:
            conn.request(method, path, body=data, headers=sent)
            r = conn.getresponse()
            text = r.read().decode()
        finally:
            conn.close()
        try:
            parsed: Any = json.loads(text) if text else None
        except ValueError:
            parsed = text
        return Answer(r.status, parsed, {k.lower(): v for k, v in r.getheaders()})

    def get(self, path: str) -> Answer:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> Answer:
        return self.call("POST", path, body)
