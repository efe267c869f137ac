"""
The request class of a worker process: it serves its router over a UNIX
socket, so the facts an application reads from the connection (client
address, scheme, server port) come from headers its router sets instead.

The router sends them, with a secret token the worker was started with, as
C{X-Txrouter-*} headers (see L{txrouter.forwarding.worker_headers}); the
worker removes them before the application sees the request, which then
looks exactly as it would in the router process. A request without the
token is refused: only the worker's own router may speak for a client.

A body the router has spooled to a file is not copied: the router passes
the file's descriptor over the UNIX socket (C{SCM_RIGHTS}) with the request,
which says so with C{X-Txrouter-Body-Length} instead of a body, and the
worker reads the file itself (L{WorkerChannel}, L{PassedBody}).
"""

from __future__ import annotations

import hmac
import io
import os
from collections import deque
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

from txrouter.site import RouterRequest

__all__ = [
    "PassedBody",
    "WorkerChannel",
    "WorkerRequest",
    "worker_application",
    "worker_request_factory",
]

_PREFIX = b"x-txrouter-"
# Kept by the request for the application wrapper, which removes it again.
_PROTOCOL_KEY = "HTTP_X_TXROUTER_PROTOCOL"


class WorkerChannel(HTTPChannel):
    """
    Twisted's channel, keeping the file descriptors its router passes, in
    the order they came (one request at a time is sent on a connection).
    """

    def connectionMade(self) -> None:
        self.passed: deque[int] = deque()
        super().connectionMade()

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self.passed.append(descriptor)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        while self.passed:
            os.close(self.passed.popleft())
        super().connectionLost(reason)


class PassedBody(io.RawIOBase):
    """
    A request body in a file the router passed: read with C{pread} from a
    position of its own (the router's copy of the descriptor shares the
    file offset), and closed with the request.
    """

    def __init__(self, descriptor: int, length: int) -> None:
        super().__init__()
        self._descriptor = descriptor
        self._length = length
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self._length - self._position)
        if wanted <= 0:
            return 0
        data = os.pread(self._descriptor, wanted, self._position)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}
        self._position = max(0, base[whence] + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        if not self.closed:
            os.close(self._descriptor)
        super().close()


class WorkerRequest(RouterRequest):
    """
    A request received from the router, speaking for its client.
    """

    token: bytes = b""
    # The router checked the request at its edge; one without the token is
    # refused in process().
    checked_before = True
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
        passed = own.get(b"body-length")
        if passed is not None and not self._take_passed(passed):
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

    def _take_passed(self, length: bytes) -> bool:
        """
        Take the body the router passed as a file, of C{length} bytes, as
        this request's content.
        """
        passed = getattr(self.channel, "passed", None)
        if not passed or not length.isdigit():
            self.setResponseCode(400)
            self.setHeader(b"content-type", b"text/plain; charset=utf-8")
            self.write(b"400 Bad Request: the body's file did not come.\n")
            self.finish()
            return False
        if self.content is not None:
            self.content.close()
        self.content = io.BufferedReader(PassedBody(passed.popleft(), int(length)))
        self.requestHeaders.setRawHeaders(b"content-length", [length])
        return True

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
