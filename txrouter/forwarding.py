"""
Headers of a proxied request and response: hop-by-hop headers removed,
forwarding headers (C{X-Forwarded-*}, RFC 7239 C{Forwarded}) set by the
router itself, and the upstream path kept inside the upstream's base.

    >>> trusted = TrustedProxies(["10.0.0.0/8"])
    >>> headers = upstream_headers(request.requestHeaders, client, ...)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from twisted.web.http_headers import Headers

__all__ = [
    "Forwarding",
    "TrustedProxies",
    "UnsafePath",
    "downstream_headers",
    "upstream_headers",
    "upstream_path",
    "worker_headers",
]

# RFC 9110 section 7.6.1, plus the non-standard ones still seen in the wild.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by us on the way up; never taken from an untrusted client.
_FORWARDING = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-prefix",
        b"forwarded",
    }
)
# Framing and identity the router sets itself, each way.
# (The router answered any "Expect: 100-continue" and holds the whole body.)
_REQUEST_OWN = frozenset({b"content-length", b"host", b"expect"})
_RESPONSE_OWN = frozenset({b"server", b"date"})
# To a worker the client's Host goes unchanged, so only framing is ours.
_WORKER_OWN = frozenset({b"content-length", b"expect"})

# What each direction never copies, before the names a Connection header
# lists are added.
_NOT_UPSTREAM = _HOP_BY_HOP | _REQUEST_OWN | _FORWARDING
_NOT_TO_WORKER = _HOP_BY_HOP | _WORKER_OWN
_NOT_DOWNSTREAM = _HOP_BY_HOP | _RESPONSE_OWN


class UnsafePath(ValueError):
    """
    A request path whose dot-segments would climb above the upstream's base.
    """


class TrustedProxies:
    """
    The networks whose forwarding headers we extend instead of replacing.
    """

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def __contains__(self, address: str) -> bool:
        if not self._networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped  # a dual-stack listener's view of an IPv4 peer
        return any(ip in network for network in self._networks)


class Forwarding(NamedTuple):
    """
    What the router knows about the client side of one request.

    @ivar client: the peer's IP address, or L{None} for a UNIX socket.
    @ivar scheme: C{b"http"} or C{b"https"}, as the client connected.
    @ivar host: the C{Host} the client asked for.
    @ivar prefix: the route prefix without its trailing slash (C{b""} at /).
    @ivar trusted: whether the peer is a trusted proxy.
    """

    client: str | None
    scheme: bytes
    host: bytes
    prefix: bytes
    trusted: bool


def _listed_in_connection(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """
    The header names listed in C{Connection}: hop-by-hop by declaration.
    """
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def _connection_tokens(headers: Headers) -> set[bytes]:
    """
    L{_listed_in_connection} for a request's L{Headers}.
    """
    values = headers.getRawHeaders(b"connection", ())
    return _listed_in_connection([(b"connection", value) for value in values])


def _not_copied(always: frozenset[bytes], listed: set[bytes]) -> frozenset[bytes]:
    """
    The header names never copied (C{always}) plus those a C{Connection}
    header C{listed}; with none listed, C{always} itself (no new set per
    request).
    """
    return always | listed if listed else always


def _node(address: str | None) -> str:
    if address is None:
        return "unknown"
    if ":" in address:
        return f'"[{address}]"'
    return address


def _quoted(text: str) -> str:
    """
    An RFC 7230 quoted-string: a client-chosen Host can add no element.
    """
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


Pairs = list[tuple[bytes, bytes]]


def upstream_headers(incoming: Headers, forwarding: Forwarding, host: bytes) -> Pairs:
    """
    The headers to send upstream for a request that arrived with
    C{incoming}, as C{(name, value)} pairs in order (repeats kept).

    Values come from Twisted's own parsed and sanitized request headers, or
    from the router: none holds a line break.

    @param host: the C{Host} header to send.
    """
    dropped = _not_copied(_NOT_UPSTREAM, _connection_tokens(incoming))
    outgoing = [(b"Host", host)]
    for name, values in incoming.getAllRawHeaders():
        if name.lower() not in dropped:
            outgoing.extend((name, value) for value in values)
    # What a trusted proxy before us said, extended; from anyone else, not
    # believed (and not copied: the names are in _NOT_UPSTREAM).
    get = incoming.getRawHeaders if forwarding.trusted else _nothing
    client = forwarding.client
    if client is not None:
        chain = [*get(b"x-forwarded-for", ()), client.encode("ascii")]
        outgoing.append((b"X-Forwarded-For", b", ".join(chain)))
    proto = get(b"x-forwarded-proto", ())
    outgoing.append((b"X-Forwarded-Proto", proto[-1] if proto else forwarding.scheme))
    forwarded_host = get(b"x-forwarded-host", ())
    outgoing.append(
        (b"X-Forwarded-Host", forwarded_host[-1] if forwarded_host else forwarding.host)
    )
    prefixes = get(b"x-forwarded-prefix", ())
    prefix = (prefixes[-1].rstrip(b"/") if prefixes else b"") + forwarding.prefix
    if prefix:
        outgoing.append((b"X-Forwarded-Prefix", prefix))
    outgoing.extend((b"Forwarded", value) for value in get(b"forwarded", ()))
    outgoing.append((b"Forwarded", _forwarded_element(forwarding)))
    return outgoing


def _nothing(name: bytes, default: Sequence[bytes]) -> Sequence[bytes]:
    return default


def _forwarded_element(forwarding: Forwarding) -> bytes:
    """
    The C{Forwarded} element (RFC 7239) this router adds.
    """
    return b"for=%s;proto=%s;host=%s" % (
        _node(forwarding.client).encode("ascii"),
        forwarding.scheme,
        _quoted(forwarding.host.decode("latin-1")).encode("latin-1"),
    )


def worker_headers(
    incoming: Headers, token: bytes, request_facts: dict[bytes, bytes]
) -> Pairs:
    """
    The headers to send to one of our own worker processes: the client's
    headers as they came (less hop-by-hop ones), so the application sees
    what it would see in the router process, plus the connection's facts as
    C{X-Txrouter-*} headers with the worker's C{token}
    (see L{txrouter.workerrequest}).

    @param request_facts: C{client}, C{client-port}, C{scheme} and
        C{server-port}.
    """
    dropped = _not_copied(_NOT_TO_WORKER, _connection_tokens(incoming))
    outgoing: Pairs = []
    for name, values in incoming.getAllRawHeaders():
        lower = name.lower()
        if lower not in dropped and not lower.startswith(b"x-txrouter-"):
            outgoing.extend((name, value) for value in values)
    outgoing.append((b"X-Txrouter-Token", token))
    for name, value in request_facts.items():
        outgoing.append((b"X-Txrouter-" + name, value))
    return outgoing


def downstream_headers(incoming: Pairs, outgoing: Headers) -> None:
    """
    Copy an upstream response's headers (as parsed, in order) to
    C{outgoing}, the client's response headers, leaving out hop-by-hop
    headers, those its C{Connection} lists, and our own C{Server} and
    C{Date}. Repeated headers (C{Set-Cookie}) stay repeated. A length is
    not copied from a response that was chunked: Twisted frames the body
    for the client anew.
    """
    dropped = _not_copied(_NOT_DOWNSTREAM, _listed_in_connection(incoming))
    if any(name.lower() == b"transfer-encoding" for name, _ in incoming):
        dropped |= {b"content-length"}
    for name, value in incoming:
        if name.lower() not in dropped:
            outgoing.addRawHeader(name, value)


def upstream_path(base: bytes, rest: list[bytes], query: bytes) -> bytes:
    """
    Join the upstream's base path and the raw (still percent-encoded)
    segments after the route prefix, resolving dot-segments without ever
    leaving C{base}.

    @param base: the upstream URL's path, ending with C{/}.
    @param rest: raw path segments after the prefix.
    @param query: the raw query string, without C{?} (may be empty).
    @raise UnsafePath: a segment hides a separator next to a dot-segment
        (C{..%2f}), which some upstreams would decode and follow.
    """
    kept: list[bytes] = []
    for segment in rest:
        decoded = unquote_to_bytes(segment)
        if decoded in (b".", b".."):
            if decoded == b".." and kept:
                kept.pop()
            continue
        parts = decoded.replace(b"\\", b"/").split(b"/")
        if len(parts) > 1 and any(p in (b".", b"..") for p in parts):
            raise UnsafePath(segment)
        kept.append(segment)
    if rest and unquote_to_bytes(rest[-1]) in (b".", b".."):
        kept.append(b"")  # "/a/.." names the folder: keep the slash
    path = base + b"/".join(kept)
    return path + b"?" + query if query else path
