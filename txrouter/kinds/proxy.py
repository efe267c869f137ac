"""
C{proxy:} routes: forward requests under the prefix to one or more HTTP
upstreams (C{http://}, C{https://} or C{unix:} URLs), through the shared
proxy engine (L{txrouter.proxy}).

    /api/: {proxy: "http://127.0.0.1:9000/v1/", timeout: 60, connect_timeout: 5}
    /lb/:  {proxy: ["http://127.0.0.1:9001/", "http://127.0.0.1:9002/"]}
    /ws/:  {proxy: "http://127.0.0.1:9003/", tunnel_idle_timeout: 600}

WebSocket handshakes are passed on, and their connections tunnelled, by
default (C{upgrade: [websocket]}); C{upgrade: []} serves them as plain
requests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from txrouter.configreader import describe
from txrouter.kinds.application import (
    ADMISSION_OPTIONS,
    PROXY_MAX_CONCURRENT,
    behind_bulkhead,
    read_admission,
    read_max_body,
)
from txrouter.kinds.contract import Built, RouteKind
from txrouter.proxy import ProxyResource, ProxySettings
from txrouter.routespec import Admission, Origin
from txrouter.upstream import Upstream, UpstreamGroup
from txrouter.yamlsource import LocatedList

if TYPE_CHECKING:
    from txrouter.build import Builder
    from txrouter.configreader import ConfigReader
    from txrouter.forwarding import TrustedProxies
    from txrouter.routetable import RouteKey
    from txrouter.yamlsource import LocatedDict

__all__ = [
    "DEFAULT_UPGRADES",
    "KIND",
    "MAX_TUNNELS",
    "TUNNEL_IDLE_TIMEOUT",
    "ProxyRoute",
    "proxy_settings",
    "read_tunnel_limits",
    "read_upgrades",
]

#: The protocols a proxy route tunnels unless it says otherwise.
DEFAULT_UPGRADES = ("websocket",)

#: Seconds a tunnel may carry nothing either way (nginx's
#: C{proxy_read_timeout} is often raised to an hour for WebSockets).
TUNNEL_IDLE_TIMEOUT = 3600.0

#: Tunnels a route has open at once (each holds two sockets).
MAX_TUNNELS = 4096

# A protocol name as Upgrade carries it (RFC 9110 section 7.8), lower case.
_PROTOCOL = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")


@dataclass(frozen=True)
class ProxyRoute:
    """
    One or more HTTP upstreams (C{http://}, C{https://} or C{unix:} URLs).
    """

    kind: ClassVar[str] = "proxy"
    prefix: str
    origin: Origin
    upstreams: tuple[str, ...]
    timeout: float
    connect_timeout: float
    preserve_host: bool
    tls_verify: bool
    admission: Admission = field(default_factory=Admission)
    max_body: int | None = None
    upgrade: tuple[str, ...] = DEFAULT_UPGRADES
    tunnel_idle_timeout: float = TUNNEL_IDLE_TIMEOUT
    max_tunnels: int = MAX_TUNNELS


def read(
    reader: ConfigReader, prefix: str, spec: LocatedDict, origin: Origin
) -> ProxyRoute | None:
    value = spec.get("proxy")
    line = spec.line_of("proxy")
    where = f"{origin.where}.proxy"
    if isinstance(value, str):
        items = [(value, line, where)]
    elif isinstance(value, LocatedList) and value:
        items = [(v, value.line_of(i), f"{where}[{i}]") for i, v in enumerate(value)]
    else:
        reader.problem(
            line,
            where,
            "expected an upstream URL (http://, https:// or unix:/path.sock) "
            f"or a list of them, got {describe(value)}",
        )
        return None
    upstreams = []
    for item, item_line, item_where in items:
        upstream = _upstream(reader, item, item_line, item_where)
        if upstream is not None:
            upstreams.append(upstream)
    timeout = reader.number(spec, "timeout", f"{origin.where}.timeout", 60.0, 0.001)
    connect_timeout = reader.number(
        spec, "connect_timeout", f"{origin.where}.connect_timeout", 5.0, 0.001
    )
    preserve_host = reader.flag(
        spec, "preserve_host", f"{origin.where}.preserve_host", True
    )
    tls_verify = reader.flag(spec, "tls_verify", f"{origin.where}.tls_verify", True)
    admission = read_admission(reader, spec, origin)
    max_body = read_max_body(reader, spec, origin)
    upgrades = read_upgrades(reader, spec, origin)
    idle, max_tunnels = read_tunnel_limits(reader, spec, origin)
    if len(upstreams) != len(items) or upgrades is None:
        return None
    return ProxyRoute(
        prefix,
        origin,
        tuple(upstreams),
        timeout,
        connect_timeout,
        preserve_host,
        tls_verify,
        admission,
        max_body,
        upgrades,
        idle,
        max_tunnels,
    )


def read_tunnel_limits(
    reader: ConfigReader, spec: LocatedDict, origin: Origin
) -> tuple[float, int]:
    """
    Read C{tunnel_idle_timeout} and C{max_tunnels}.
    """
    idle = reader.number(
        spec,
        "tunnel_idle_timeout",
        f"{origin.where}.tunnel_idle_timeout",
        TUNNEL_IDLE_TIMEOUT,
        0.001,
    )
    max_tunnels = reader.number(
        spec, "max_tunnels", f"{origin.where}.max_tunnels", MAX_TUNNELS, 1, True
    )
    return idle, int(max_tunnels)


def read_upgrades(
    reader: ConfigReader, spec: LocatedDict, origin: Origin
) -> tuple[str, ...] | None:
    """
    Read C{upgrade}: the protocols a request may switch to, through a
    tunnel (L{None} after a problem).
    """
    if "upgrade" not in spec:
        return DEFAULT_UPGRADES
    value = spec["upgrade"]
    line = spec.line_of("upgrade")
    where = f"{origin.where}.upgrade"
    if value is None:
        return ()
    if not isinstance(value, LocatedList) or not all(
        isinstance(v, str) and _PROTOCOL.match(v.lower()) for v in value
    ):
        reader.problem(
            line,
            where,
            "expected a list of protocol names such as [websocket] (or [] to "
            f"tunnel none), got {describe(value)}",
        )
        return None
    names = tuple(dict.fromkeys(v.lower() for v in value))
    if "h2c" in names:
        reader.problem(
            line,
            where,
            "h2c is never tunnelled (RFC 9113 retired it; such a request is "
            "served as plain HTTP/1.1): remove it",
        )
        return None
    return names


def _upstream(reader: ConfigReader, value: Any, line: int, where: str) -> str | None:
    if isinstance(value, str):
        refused = _refused_character(value)
        if refused is not None:
            reader.problem(line, where, refused)
            return None
    if isinstance(value, str) and value.startswith("unix:"):
        socket_path = value[len("unix:") :]
        if not socket_path:
            reader.problem(line, where, "expected 'unix:/path/to/app.sock'")
            return None
        return "unix:" + str(reader.resolve(socket_path))
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or parts.username
    ):
        reader.problem(
            line,
            where,
            "expected an upstream such as 'http://127.0.0.1:9000/base/', "
            "'https://api.internal/' or 'unix:/run/app.sock' (no query, "
            f"fragment or credentials), got {describe(value)}",
        )
        return None
    try:
        parts.port  # noqa: B018 (validates the port)
    except ValueError as e:
        reader.problem(line, where, f"bad port in {value!r}: {e}")
        return None
    return str(value)


def _refused_character(value: str) -> str | None:
    """
    Find a character an upstream may not hold: a control character in any
    (CR and LF would start new lines in the request sent upstream, a
    header injection), and in an C{http(s)://} URL also a space (it would
    split the request line) or anything outside ASCII (the request line is
    ASCII). A socket path may hold spaces and any printable character: it
    is never sent.

    @return: the problem's message, or L{None} when there is none.
    """
    unix = value.startswith("unix:")
    for position, char in enumerate(value):
        if unix and not char.isprintable():
            return (
                f"{char!r} at position {position} is not allowed in a socket "
                "path (no control characters)"
            )
        if not unix and not (char.isascii() and char.isprintable() and char != " "):
            return (
                f"{char!r} at position {position} is not allowed in an upstream "
                "URL (printable ASCII only, no spaces): percent-encode it in the "
                "path ('%20' for a space) and write a host name in its ASCII "
                "'xn--' form"
            )
    return None


def proxy_settings(route: ProxyRoute, trusted: TrustedProxies) -> ProxySettings:
    """
    What the proxy engine needs of a proxy route, besides its upstreams.
    """
    return ProxySettings(
        name=str(route.origin),
        timeout=route.timeout,
        preserve_host=route.preserve_host,
        trusted=trusted,
        # Known once per route: X-Forwarded-Prefix needs no work per request.
        prefix=route.prefix.rstrip("/").encode("utf-8"),
        upgrades=frozenset(u.encode("ascii") for u in route.upgrade),
        tunnel_idle_timeout=route.tunnel_idle_timeout,
        max_tunnels=route.max_tunnels,
    )


def build(route: ProxyRoute, key: RouteKey, builder: Builder) -> Built:
    engines = builder.engines
    members = [
        Upstream.from_url(engines.reactor, url, route.connect_timeout, route.tls_verify)
        for url in route.upstreams
    ]
    settings = proxy_settings(route, engines.trusted)
    group = UpstreamGroup(engines.reactor, members)
    proxy = ProxyResource(engines.reactor, engines.client, group, settings)
    resource = behind_bulkhead(
        builder, route, proxy, PROXY_MAX_CONCURRENT, route.timeout
    )
    return Built(resource, upstreams=group, tunnels=proxy.tunnels)


KIND = RouteKind(
    "proxy",
    (
        "timeout",
        "connect_timeout",
        "preserve_host",
        "tls_verify",
        "upgrade",
        "tunnel_idle_timeout",
        "max_tunnels",
        *ADMISSION_OPTIONS,
    ),
    read,
    build,
)
