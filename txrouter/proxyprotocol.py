"""
Listeners behind a load balancer that speaks HAProxy's PROXY protocol
(C{haproxy:} endpoint strings, Twisted's wrapper): the client's address
comes from the header the balancer sends first, so anyone who could
connect to such a port could claim any address. Only C{trusted_proxies}
may: a connection from another peer is closed before anything is read
(L{txrouter.site.ListenerFactory.proxy_peers}), and a routes file with a
C{haproxy:} listener over TCP and no C{trusted_proxies} is refused
(L{check_proxy_listeners}).

    listen: haproxy:tcp:8080:interface=10.0.0.11
    trusted_proxies: [10.0.0.5]        # HAProxy's address
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from txrouter.endpointstrings import split_endpoint
from txrouter.yamlsource import LocatedDict, LocatedList

if TYPE_CHECKING:
    from txrouter.configreader import ConfigReader

__all__ = ["LiveTrustedProxies", "check_proxy_listeners", "proxy_header_from_network"]


def proxy_header_from_network(description: str) -> bool:
    """
    Whether a listener on the endpoint C{description} takes a PROXY header
    from peers with an IP address: C{haproxy:} around anything but a UNIX
    socket (whose file's permissions say who connects).

        >>> proxy_header_from_network("haproxy:tcp:8080")
        True
        >>> proxy_header_from_network("haproxy:unix:/run/lb.sock")
        False
    """
    try:
        args, named = split_endpoint(description)
    except ValueError:
        return False
    if not args or args[0].lower() != "haproxy":
        return False
    while args and args[0].lower() == "haproxy":
        args = args[1:]
    kind = args[0].lower() if args else ""
    if kind == "unix":
        return False
    if kind == "systemd":
        domain = named.get("domain", args[1] if len(args) > 1 else "")
        return domain.upper() != "UNIX"
    return True


class LiveTrustedProxies:
    """
    The C{trusted_proxies} of the routes file a router serves now (a
    reload may change them), as a container of addresses; none while it
    has no routes file.
    """

    def __init__(self, top: Any) -> None:
        """
        @param top: the L{txrouter.services.RouterService}; its C{reloader}
            holds the engines of the file it serves.
        """
        self._top = top

    def __contains__(self, address: object) -> bool:
        reloader = self._top.reloader
        return reloader is not None and address in reloader.engines.trusted


def check_proxy_listeners(
    reader: ConfigReader,
    data: LocatedDict,
    accepted: Iterable[str],
    trusted: tuple[str, ...],
) -> None:
    """
    With no C{trusted_proxies}, refuse each C{listen:} entry that would take
    a PROXY header from the network: nobody could send it.

    @param accepted: the endpoint strings of the entries read without a
        problem (the others have theirs already).
    """
    if trusted or "listen" not in data:
        return
    value = data["listen"]
    if isinstance(value, str):
        items = [(value, data.line_of("listen"), "listen")]
    elif isinstance(value, LocatedList):
        items = [
            (item, value.line_of(i), f"listen[{i}]") for i, item in enumerate(value)
        ]
    else:
        return  # read_listeners says what is wrong
    valid = set(accepted)
    for item, line, where in items:
        endpoint = item.get("endpoint") if isinstance(item, LocatedDict) else item
        if endpoint in valid and proxy_header_from_network(endpoint):
            reader.problem(
                line,
                where,
                f"{endpoint!r} takes the client's address from a PROXY header, "
                "and no trusted_proxies may send one: list your load "
                "balancer's address, e.g. trusted_proxies: ['10.0.0.5'] "
                "(connections from any other address are closed)",
            )
