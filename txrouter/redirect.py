"""
Redirect resources: a C{redirect:} route, and the 301 that adds the
trailing slash to a bare prefix (C{/wiki} to C{/wiki/}).
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from twisted.web.resource import Resource

__all__ = ["AddSlash", "Redirect"]

_SAFE_PATH = "/!$&'()*+,;=:@~-._"


def _query(request: Any) -> bytes:
    uri: bytes = request.uri
    _, question, query = uri.partition(b"?")
    return question + query


def _raw_segments(request: Any) -> list[bytes]:
    """
    The path's segments as the client sent them, still percent-encoded:
    Twisted's C{prepath} and C{postpath} are decoded, so C{a%2Fb} there is
    C{a/b} and C{%2e%2e} is C{..}, and a redirect built from them would
    send the client somewhere else than it asked.
    """
    raw_path: bytes = request.uri.partition(b"?")[0]
    return raw_path.split(b"/")[1:]


def _requote(segments: list[bytes]) -> bytes:
    # Escapes the client sent stay as they are; anything else unsafe in a
    # Location header is escaped.
    return b"/".join(quote(s, safe=_SAFE_PATH + "%").encode("ascii") for s in segments)


def _send(request: Any, status: int, location: bytes) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"location", location)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    text = escape(location.decode("ascii"))
    return f'<html><body><a href="{text}">{text}</a></body></html>\n'.encode()


class Redirect(Resource):
    """
    Redirect every request under a prefix to C{target}, keeping the rest of
    the path and the query: with C{/old/ -> /new/}, C{/old/a?b} goes to
    C{/new/a?b}.
    """

    isLeaf = True

    def __init__(self, target: str, status: int) -> None:
        super().__init__()
        self._target = quote(target, safe=_SAFE_PATH + "?#%").encode("ascii")
        self._status = status

    def render(self, request: Any) -> bytes:
        rest = _requote(_raw_segments(request)[len(request.prepath) :])
        target = self._target
        if rest and not target.endswith(b"/"):
            target += b"/"
        return _send(request, self._status, target + rest + _query(request))


class AddSlash(Resource):
    """
    Redirect a bare prefix to the same path with a trailing slash (301).
    """

    isLeaf = True

    def render(self, request: Any) -> bytes:
        path = b"/" + _requote(_raw_segments(request)[: len(request.prepath)])
        return _send(request, 301, path + b"/" + _query(request))
