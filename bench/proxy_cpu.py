"""
CPU time per proxied request, measured in memory: no sockets, no wrk, so it
is far steadier than req/s on a shared machine, and shows what a change to
the proxy path costs or saves.

A real C{Site} with the L{Router} and a L{ProxyResource} behind its
bulkhead (as a proxy route is served) talks to an
in-memory upstream that answers every request with 100 bytes over one
persistent connection.

Usage::

    PYTHONPATH=. .venv/bin/python bench/proxy_cpu.py [REQUESTS]

It prints the best of 5 rounds, in microseconds of CPU per request.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from zope.interface import implementer

from txrouter.bulkhead import Bulkhead, BulkheadResource
from txrouter.forwarding import TrustedProxies
from txrouter.limits import Limits
from txrouter.proxy import ProxyResource, ProxySettings
from txrouter.proxyclient import ProxyClient
from txrouter.router import Router
from txrouter.site import RouterSite
from txrouter.upstream import Upstream, UpstreamGroup

REQUEST = (
    b"GET /api/x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 30 Nov 2026 12:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\n"
    b"Connection: keep-alive\r\n\r\n" + b"x" * 100
)


@implementer(IStreamClientEndpoint)
class MemoryUpstream:
    """
    An endpoint whose connections are in-memory transports we can answer on.
    """

    def __init__(self) -> None:
        self.connections: list[tuple[Any, StringTransport]] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)


def cpu_per_call(one: Callable[[], None], calls: int) -> float:
    """
    Microseconds of CPU per call of C{one}: the best of 5 rounds of
    C{calls}, after 200 to warm up.
    """
    for _ in range(200):
        one()
    rounds = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(calls):
            one()
        rounds.append((time.process_time() - start) / calls * 1e6)
    return min(rounds)


def main(requests: int) -> None:
    reactor = MemoryReactorClock()
    upstream = MemoryUpstream()
    group = UpstreamGroup(reactor, [Upstream("up", upstream, b"up", b"/v1/")])
    settings = ProxySettings("bench", 60, True, TrustedProxies([]))
    proxy = ProxyResource(reactor, ProxyClient(reactor), group, settings)
    route = BulkheadResource(proxy, Bulkhead(reactor, "bench", 1024, 1000, 60))
    # The edge as served: the strict gate and the default limits.
    site = RouterSite(Router({"": {"/api/": route}}), reactor, None, Limits())
    client = IPv4Address("TCP", "127.0.0.1", 5555)
    server = site.buildProtocol(client)
    transport = StringTransport(peerAddress=client)
    server.makeConnection(transport)

    def one() -> None:
        server.dataReceived(REQUEST)
        protocol, upstream_transport = upstream.connections[-1]
        assert upstream_transport.value().startswith(b"GET /v1/x ")
        upstream_transport.clear()
        protocol.dataReceived(RESPONSE)
        assert transport.value().startswith(b"HTTP/1.1 200 OK")
        transport.clear()

    print(
        f"{cpu_per_call(one, requests):.1f} us of CPU per proxied request "
        f"(best of 5 x {requests}), "
        f"{len(upstream.connections)} upstream connection(s)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
