"""
What the router checks of each request before any route sees it, so that
nothing ambiguous reaches an application or an upstream (RFC 9112, 9110):

  - the request target: origin-form (C{/path?query}); absolute-form
    (C{http://host/path}) is accepted and its host wins over C{Host}; C{*}
    only with C{OPTIONS}; anything else (C{foo/bar}, C{host:443}), and
    C{CONNECT} whatever its target, is a 400.
    A C{#fragment}, which a client must not send, is dropped;
  - C{Host}: exactly one on HTTP/1.1 (none on HTTP/1.0 is allowed), and a
    valid host with an optional port, whatever the target's form;
  - header names with C{_} are dropped (nginx's C{underscores_in_headers
    off}): WSGI turns C{X_Forwarded_Proto} and C{X-Forwarded-Proto} into the
    same C{HTTP_X_FORWARDED_PROTO}, so a client could pose as a proxy that
    Django's C{SECURE_PROXY_SSL_HEADER} trusts.

    >>> request_target(b"GET", b"http://example.com/a?b#c")
    (b'/a?b', b'example.com')
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["BadRequest", "check_headers", "request_target"]

# RFC 3986 reg-name or IPv4 (unreserved, sub-delims, pct-encoded), or an IP
# literal in brackets; then an optional port.
_HOST = re.compile(
    rb"^(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+(?::[0-9]{0,5})?$"
    rb"|^\[[0-9A-Fa-f:.]+\](?::[0-9]{0,5})?$"
)
_SCHEMES = (b"http://", b"https://")


class BadRequest(Exception):
    """
    The request is refused with a 400; the message says why.
    """


def request_target(method: bytes, target: bytes) -> tuple[bytes, bytes | None]:
    """
    The origin-form of a request target, and the host an absolute-form
    target names (L{None} for the other forms).

    @raise BadRequest: a target in another form.
    """
    if method == b"CONNECT":
        # A tunnel through a forward proxy, which the router is not.
        raise BadRequest("CONNECT is not served here (this is not a forward proxy)")
    target = target.partition(b"#")[0]
    if target.startswith(b"/"):
        return target, None
    if target[:8].lower().startswith(_SCHEMES):
        rest = target.split(b"://", 1)[1]
        end = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=-1)
        authority, path = (rest, b"") if end < 0 else (rest[:end], rest[end:])
        if not authority or b"@" in authority or not _HOST.match(authority):
            raise BadRequest("the request target's host is not valid")
        if not path.startswith(b"/"):
            path = b"/" + path
        return path, authority
    if target == b"*" and method == b"OPTIONS":
        return target, None
    raise BadRequest("the request target must be a path starting with '/'")


def check_headers(
    headers: Any, version: bytes, host: bytes | None, underscored: bool = True
) -> None:
    """
    Check C{Host} (set it to C{host}, from an absolute-form target, when
    given) and drop header names with C{_}.

    @param headers: the request's Twisted C{Headers}.
    @param underscored: whether a name may have C{_} (L{False} when the
        parser saw none, which saves looking).
    @raise BadRequest: C{Host} is missing on HTTP/1.1, repeated, or not a
        valid host.
    """
    if underscored:
        for name, _ in list(headers.getAllRawHeaders()):
            if b"_" in name:
                headers.removeHeader(name)
    values = headers.getRawHeaders(b"host")
    if values is None:
        if version == b"HTTP/1.1":
            raise BadRequest("an HTTP/1.1 request must have a Host header")
    elif len(values) > 1:
        raise BadRequest("more than one Host header")
    elif not _HOST.match(values[0]):
        raise BadRequest("the Host header is not a valid host")
    if host is not None:
        # RFC 9112 section 3.2.2: the target's host wins, once Host is valid.
        headers.setRawHeaders(b"host", [host])
