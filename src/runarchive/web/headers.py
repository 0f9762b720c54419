"""Response headers that make the pages harder to abuse.

The Content-Security-Policy allows scripts only from this site (``script-src 'self'``: no
inline ``<script>`` code, no inline event handlers — templates pass data to scripts in
``<script type="application/json">`` blocks), connections (fetch, websocket) only to this
site, and no framing. Inline ``style`` attributes stay allowed: they cannot run code.

Every HTML page is ``Cache-Control: no-store``: the pages show run names, archives and the
session's CSRF token, which neither a shared cache nor the browser's disk (a shared machine,
the back button after logout) may keep.

In runarchive's own app the headers go on every response; mounted in a host app, only on the
responses of runarchive's blueprints (the host's pages keep the host's own policy).
"""

from __future__ import annotations

from flask import Flask
from werkzeug.wrappers import Response

from .mount import is_ours

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def init_app(app: Flask) -> None:
    """Add the security headers to every response."""

    @app.after_request
    def _headers(response: Response) -> Response:
        if not is_ours():
            return response
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if response.mimetype == "text/html":
            response.headers.setdefault("Cache-Control", "no-store")
        return response
