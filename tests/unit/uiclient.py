"""A cookie-keeping HTTP client for the web console's tests (no browser): the standard library's
http.client, redirects not followed, so each answer's status and cookies can be checked."""

from __future__ import annotations

import http.client
import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode


@dataclass
class Page:
    status: int
    text: str
    headers: dict[str, str]
    set_cookies: list[str]  # the raw Set-Cookie lines

    def csrf(self) -> str:
        """The session's CSRF token as the page carries it (in the sign-out form)."""
        m = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert m, self.text[:500]
        return m.group(1)


@dataclass
class Browserless:
    port: int
    host: str = "127.0.0.1"
    cookies: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, form: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> Page:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=sent)
            r = conn.getresponse()
            text = r.read().decode()
            raw = r.msg.get_all("set-cookie") or []
        finally:
            conn.close()
        for line in raw:
            c: SimpleCookie = SimpleCookie()
            c.load(line)
            for k, morsel in c.items():
                if morsel["max-age"] == "0" or morsel.value in ("", '""'):
                    self.cookies.pop(k, None)
                else:
                    self.cookies[k] = morsel.value
        return Page(r.status, text, {k.lower(): v for k, v in r.getheaders()}, raw)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Page:
        return self.call("GET", path, headers=headers)

    def post(self, path: str, form: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> Page:
        return self.call("POST", path, form, headers)

    def sign_in(self, user: str, token: str) -> Page:
        """The sign-in form as a browser sends it: fetch it (its CSRF cookie), post it."""
        form = self.get("/ui/login")
        m = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert m, form.text
        return self.post("/ui/login", {"csrf": m.group(1), "next": "/ui/vms", "user": user,
                                       "token": token})
