"""
CPU time per request of a worker process's side of a worker route,
measured in memory: the request as the router sends it (its token and
the client's facts in C{X-Txrouter-*} headers) read by the worker's
channel, its L{txrouter.workerrequest.WorkerRequest}, the router and
L{txrouter.wsgi.WSGIResource} as a worker builds them (L{txrouter.worker}),
with the application called at once in the reactor's thread (no pool, no
sockets).

Usage::

    PYTHONPATH=. .venv/bin/python bench/worker_cpu.py [REQUESTS]

It prints the best of 5 rounds, in microseconds of CPU per request.
"""

from __future__ import annotations

import sys

from proxy_cpu import cpu_per_call  # beside this script
from twisted.internet.address import UNIXAddress
from twisted.internet.testing import StringTransport
from wsgi_cpu import _app, _Pool, _Reactor  # beside this script

from txrouter.privatetwisted import http_protocol_factory
from txrouter.router import Router
from txrouter.site import RouterSite
from txrouter.workerrequest import (
    WorkerChannel,
    worker_application,
    worker_request_factory,
)
from txrouter.wsgi import WSGIResource

TOKEN = b"f8e52259d9ecd78f73619653d0930efd"
REQUEST = (
    b"GET /app/hello HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\nX-Txrouter-Token: " + TOKEN + b"\r\n"
    b"X-Txrouter-client: 127.0.0.1\r\nX-Txrouter-client-port: 55350\r\n"
    b"X-Txrouter-scheme: http\r\nX-Txrouter-server-port: 8080\r\n"
    b"X-Txrouter-protocol: HTTP/1.1\r\n\r\n"
)


def main(requests: int) -> None:
    reactor = _Reactor()
    application = worker_application(_app, False)
    app = WSGIResource(reactor, _Pool(), application)
    site = RouterSite(Router({"": {"/app/": app}}), reactor, access_log=None)
    site.timeOut = None
    site.counts_routes = False
    site.requestFactory = worker_request_factory(TOKEN)
    site.protocol = http_protocol_factory(WorkerChannel)  # type: ignore[method-assign]
    address = UNIXAddress(b"/run/worker.sock")
    server = site.buildProtocol(address)
    transport = StringTransport(hostAddress=address, peerAddress=address)
    server.makeConnection(transport)

    def one() -> None:
        server.dataReceived(REQUEST)
        assert transport.value().startswith(b"HTTP/1.1 200 OK"), transport.value()
        transport.clear()

    cpu = cpu_per_call(one, requests)
    print(f"{cpu:.1f} us of CPU per request (best of 5 x {requests})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10000)
