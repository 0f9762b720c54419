"""Clients of a real server: a websocket peer and a cookie-keeping HTTP client."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from typing import Any

import simple_websocket


class Peer:
    """A websocket client whose thread collects frames and, unless ``silent``, answers pings."""

    def __init__(
        self, url: str, headers: dict[str, str], *, silent: bool = False, tls: Any = None
    ) -> None:
        self.ws = simple_websocket.Client.connect(url, headers=headers, ssl_context=tls)
        self.silent = silent
        self.frames: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                raw = self.ws.receive(timeout=0.05)
            except simple_websocket.ConnectionClosed:
                return
            if raw is None:
                if not self.ws.connected and not self.ws.input_buffer:
                    return
                continue  # frames may have arrived together with the close
            frame = json.loads(raw)
            self.frames.append(frame)
            if frame["type"] == "ping" and not self.silent:
                with contextlib.suppress(Exception):  # closing meanwhile
                    self.ws.send(json.dumps({"type": "pong"}))

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for frame in list(self.frames):
                if predicate(frame):
                    return frame
            time.sleep(0.02)
        raise AssertionError(f"no matching frame in {timeout} s; got {self.frames[-10:]}")

    def lines(self) -> list[str]:
        return [f["data"] for f in list(self.frames) if f["type"] == "status"]

    def close(self) -> None:
        if self.ws.connected:
            self.ws.close()
        self._thread.join(timeout=5)


class Browserless:
    """A cookie-keeping HTTP client that logs in through the real form, CSRF token included."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=10) as response:
            return str(response.read().decode())

    def login(self, username: str, password: str) -> str:
        page = self.get("/login")
        token = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert token, page[:500]
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "csrf_token": token[1], "next": "/"}
        ).encode()
        with self.opener.open(self.base + "/login", data=form, timeout=10) as response:
            return str(response.read().decode())
