"""
CPU time per request of an in-process WSGI route, measured in memory: the
edge (the strict gate, the default limits), the router, the route's
bulkhead and timeout, and L{txrouter.wsgi.WSGIResource}, with the
application called at once in the reactor's thread (no pool, no sockets),
so that it shows what the router adds around an application, steadily.

Usage::

    PYTHONPATH=. .venv/bin/python bench/wsgi_cpu.py [REQUESTS]

It prints the best of 5 rounds, in microseconds of CPU per request.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from proxy_cpu import cpu_per_call  # beside this script
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from txrouter.bulkhead import Bulkhead, BulkheadResource
from txrouter.limits import Limits
from txrouter.router import Router
from txrouter.site import RouterSite
from txrouter.wsgi import WSGIResource

REQUEST = (
    b"GET /app/hello HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\n\r\n"
)


class _Reactor(MemoryReactorClock):
    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


class _Pool:
    max = 8

    def callInThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def main(requests: int) -> None:
    reactor = _Reactor()
    app = WSGIResource(reactor, _Pool(), _app, 60.0)
    route = BulkheadResource(app, Bulkhead(reactor, "bench", 4, 1000, 60.0))
    site = RouterSite(Router({"": {"/app/": route}}), reactor, None, Limits())
    client = IPv4Address("TCP", "127.0.0.1", 5555)
    server = site.buildProtocol(client)
    transport = StringTransport(peerAddress=client)
    server.makeConnection(transport)

    def one() -> None:
        server.dataReceived(REQUEST)
        assert transport.value().startswith(b"HTTP/1.1 200 OK")
        transport.clear()

    cpu = cpu_per_call(one, requests)
    print(f"{cpu:.1f} us of CPU per request (best of 5 x {requests})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10000)
