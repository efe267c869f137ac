"""
The short plain-text pages the router answers for a route that cannot
serve a request (a bad path, an upstream or worker that failed, a route
that is busy or too slow), each saying what happened.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BUSY", "TOO_SLOW", "TUNNELS_FULL", "error_page"]

_PAGES = {
    400: b"400 Bad Request: the path is not valid.\n",
    502: b"502 Bad Gateway: the upstream server could not be reached or "
    b"gave an invalid response.\n",
    503: b"503 Service Unavailable: no server for this address is up yet; "
    b"try again shortly.\n",
    504: b"504 Gateway Timeout: the upstream server did not answer in time.\n",
}

#: A 503 for a route whose slots and waiting line are full.
BUSY = b"503 Service Unavailable: this site is busy; try again shortly.\n"

#: A 503 for a route that has as many tunnels open as it may.
TUNNELS_FULL = (
    b"503 Service Unavailable: this site has as many connections open as it "
    b"takes; try again shortly.\n"
)

#: A 504 for an application that did not start its answer in time.
TOO_SLOW = b"504 Gateway Timeout: the application did not answer in time.\n"


def error_page(
    request: Any, code: int, retry_after: int | None = None, body: bytes | None = None
) -> None:
    """
    Finish C{request} with a short plain-text error page.

    @param body: the page, if not the usual one for C{code}.
    """
    if body is None:
        body = _PAGES[code]
    request.setResponseCode(code)
    request.responseHeaders.setRawHeaders(
        b"content-type", [b"text/plain; charset=utf-8"]
    )
    request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
    if retry_after is not None:
        request.responseHeaders.setRawHeaders(b"retry-after", [b"%d" % retry_after])
    request.write(body)
    request.finish()
