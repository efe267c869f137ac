"""
The request class of a worker process: it serves its router over a UNIX
socket, so the facts an application reads from the connection (client
address, scheme, server port) come from headers its router sets instead.

The router sends them, with a secret token the worker was started with, as
C{X-Txrouter-*} headers (see L{txrouter.forwarding.worker_headers}); the
worker removes them before the application sees the request, which then
looks exactly as it would in the router process. A request without the
token is refused: only the worker's own router may speak for a client.
"""

from __future__ import annotations

import hmac
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address

from txrouter.site import RouterRequest

__all__ = ["WorkerRequest", "worker_application", "worker_request_factory"]

_PREFIX = b"x-txrouter-"
# Kept by the request for the application wrapper, which removes it again.
_PROTOCOL_KEY = "HTTP_X_TXROUTER_PROTOCOL"


class WorkerRequest(RouterRequest):
    """
    A request received from the router, speaking for its client.
    """

    token: bytes = b""
    # Set from the router's headers in process(); until then (and for a
    # request refused there), the worker's own unknowns.
    _client: Any = IPv4Address("TCP", "0.0.0.0", 0)
    _secure = False
    _server_port = 0

    def process(self) -> None:
        own = {}
        for name, values in list(self.requestHeaders.getAllRawHeaders()):
            if name.lower().startswith(_PREFIX):
                own[name.lower()[len(_PREFIX) :]] = values[-1]
                self.requestHeaders.removeHeader(name)
        if not self.token or not hmac.compare_digest(
            own.get(b"token", b""), self.token
        ):
            self.setResponseCode(403)
            self.setHeader(b"content-type", b"text/plain; charset=utf-8")
            self.write(b"403 Forbidden: not from this worker's router.\n")
            self.finish()
            return
        host = own.get(b"client", b"0.0.0.0").decode("ascii", "replace")
        port = int(own.get(b"client-port", b"0") or 0)
        self._client = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
        self._secure = own.get(b"scheme") == b"https"
        self._server_port = int(own.get(b"server-port", b"0") or 0)
        protocol = own.get(b"protocol")
        if protocol in (b"HTTP/1.0", b"HTTP/1.1"):
            # The client's own protocol, for SERVER_PROTOCOL; our connection
            # to the router stays HTTP/1.1 (and persistent).
            self.requestHeaders.setRawHeaders(b"x-txrouter-protocol", [protocol])
        super().process()

    def getClientAddress(self) -> Any:
        return self._client

    def isSecure(self) -> bool:
        return self._secure

    def getHost(self) -> Any:
        return IPv4Address("TCP", "0.0.0.0", self._server_port)


def worker_application(application: Any, multiprocess: bool) -> Any:
    """
    Wrap a worker's WSGI application so its environ is the one it would get
    in the router process: the client's C{SERVER_PROTOCOL}, and
    C{wsgi.multiprocess} true when the route has several workers.
    """

    def in_worker(environ: dict[str, Any], start_response: Any) -> Any:
        protocol = environ.pop(_PROTOCOL_KEY, None)
        if protocol is not None:
            environ["SERVER_PROTOCOL"] = protocol
        environ["wsgi.multiprocess"] = multiprocess
        return application(environ, start_response)

    return in_worker


def worker_request_factory(token: bytes) -> type[WorkerRequest]:
    """
    A L{WorkerRequest} class that accepts requests carrying C{token}.
    """
    return type("WorkerRequest", (WorkerRequest,), {"token": token})
