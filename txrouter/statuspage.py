"""
The status page of the admin endpoint, at C{GET /}: L{StatusPage}.

One HTML page (C{statuspage.html} beside this module, shipped in the
package), its style and script inline, with no other asset: it works with
no network but the admin endpoint, through an SSH tunnel too. Its script
asks C{GET stats} (L{txrouter.stats}) every two seconds and shows every host
and route (kind, where it runs, request rate, p50 / p99 latency, 5xx share,
in flight, a rate and a latency sparkline over the last minutes), the
worker processes and upstreams, the thread pool, the connections and the
last reload. Rates and percentiles come from the difference between two
answers, computed in the browser; the history lives in the page alone.

    >>> root.putChild(b"", StatusPage())

The page is answered with a Content-Security-Policy that lets it run only
its own inline script and style (by their SHA-256) and talk only to its own
origin, so that a host or upstream name shown on it can never load or run
anything.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from typing import Any

from twisted.web.resource import Resource

__all__ = ["StatusPage", "content_security_policy", "status_page_html"]

_PAGE = "statuspage.html"

_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


def status_page_html() -> bytes:
    """
    The page, as shipped in the package.
    """
    return files("txrouter").joinpath(_PAGE).read_bytes()


def content_security_policy(html: bytes) -> bytes:
    """
    The Content-Security-Policy for C{html}: its inline C{<script>} and
    C{<style>} blocks (written with no attributes) by their hashes,
    requests to its own origin only, no frames, forms or plugins.
    """
    hashes: dict[bytes, list[bytes]] = {b"script": [], b"style": []}
    for tag, text in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(text).digest())
        hashes[tag].append(b"'sha256-" + digest + b"'")
    return b"; ".join(
        [
            b"default-src 'none'",
            b"script-src " + (b" ".join(hashes[b"script"]) or b"'none'"),
            b"style-src " + (b" ".join(hashes[b"style"]) or b"'none'"),
            b"connect-src 'self'",
            b"img-src data:",
            b"base-uri 'none'",
            b"form-action 'none'",
            b"frame-ancestors 'none'",
        ]
    )


class StatusPage(Resource):
    """
    The status page: put it at the admin endpoint's root, beside C{stats}
    (the page asks C{stats} relative to its own address).
    """

    def __init__(self) -> None:
        super().__init__()
        self._html = status_page_html()
        self._policy = content_security_policy(self._html)

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        # A new router version may bring a new page: never a stale copy.
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-security-policy", self._policy)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"referrer-policy", b"no-referrer")
        return self._html
