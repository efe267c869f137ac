"""
A lean HTTP/1.1 client connection and its pool, for the proxy engine.

Twisted's C{HTTP11ClientProtocol} (under C{Agent}) does the same job, but
it spends per request on Deferreds, a state-machine dispatcher, header
sanitizing and a line-by-line parser about as much time as the router's
whole server side. Profiling the proxy showed it as the largest cost, so
the engine speaks HTTP/1.1 to upstreams itself, on Twisted's endpoints,
transports and producers:

  - L{HTTP1Connection} sends one request at a time on a persistent
    connection and parses the response head in one pass, then streams the
    body (C{Content-Length}, chunked, or until close) to a
    L{ResponseReceiver}; it is strict about what it accepts (bounded head,
    no obs-fold, consistent C{Content-Length}, valid chunk sizes);
  - L{ConnectionPool} keeps idle connections per upstream and closes those
    idle too long.

A response that fails before its first byte on a connection that had
already served one is reported as C{stale}, so an idempotent request can be
retried on a new connection (the upstream may have closed it while idle).

A request that asks to switch protocols (C{Upgrade}) may be answered
C{101 Switching Protocols}, naming the protocol it asked for: the
connection then leaves HTTP for good, and carries bytes for a
L{txrouter.tunnel.Tunnel} (L{HTTP1Connection.join}); it is never pooled.

A connection goes back to the pool only when its exchange ended cleanly
(the whole request sent, the whole response read and nothing after it, no
C{Connection: close}), and it leaves the pool the moment it has anything to
say: bytes that arrive while it is idle, or are already waiting in the
socket when it is taken for the next request, can only be a late or
unasked-for answer, and would otherwise reach the next client.
"""

from __future__ import annotations

import re
import select
import socket
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISystemHandle, ITCPTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure

from txrouter.privatetwisted import eager_connection

__all__ = ["ConnectionPool", "HTTP1Connection", "ResponseReceiver"]

# A head may hold no control character but HTAB, and CR only before LF:
# NUL, a lone CR or LF (header injection, response splitting) are refused.
_BAD_HEAD_BYTE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n")
# What a head may hold (checked first, in C, the regex only says which).
_HEAD_BYTES = b"\t\r\n" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
# RFC 9110 token characters: what a header name may consist of.
_TOKEN_BYTES = (
    b"!#$%&'*+-.^_`|~0123456789" + bytes(range(65, 91)) + bytes(range(97, 123))
)

_MAX_HEAD = 64 * 1024
_MAX_HEADERS = 256
_MAX_CHUNK_LINE = 4096
# Bodies up to this size are written with the request head in one call.
_INLINE_BODY = 256 * 1024

# What an idle connection must not have: bytes to read, the upstream's
# close (POLLRDHUP, Linux's), an error. A poll of its socket tells without
# taking anything, and for a third of the cost of a MSG_PEEK receive.
_STIRRED = (
    select.POLLIN
    | select.POLLPRI
    | getattr(select, "POLLRDHUP", 0)
    | select.POLLERR
    | select.POLLHUP
)

(
    _IDLE,
    _HEAD,
    _LENGTH,
    _CHUNK_SIZE,
    _CHUNK_DATA,
    _CHUNK_END,
    _TRAILERS,
    _UNTIL_CLOSE,
    _SWITCHED,
) = range(9)


class ResponseReceiver(TypingProtocol):
    """
    What a connection tells about the response to the request it sent.
    """

    def response_started(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """
        The head arrived: C{headers} keeps order and repeats.
        """

    def response_body(self, data: bytes) -> None:
        """
        Some of the body arrived.
        """

    def response_done(self) -> None:
        """
        The whole body arrived.
        """

    def response_switched(
        self, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """
        The upstream switched to the protocol the request asked for (its
        C{101} head arrived): the receiver joins the connection to a tunnel
        (L{HTTP1Connection.join}), or aborts it.
        """

    def request_progress(self) -> None:
        """
        More of a streamed request body went out (or the last of it): the
        upstream is taking it, so the wait for its answer starts again.
        """

    def response_failed(self, why: str, stale: bool) -> None:
        """
        The response will not be completed.

        @param stale: nothing arrived, on a connection reused from the
            pool: the request may be retried on a new connection.
        """


class BadResponse(Exception):
    """
    The upstream's bytes are not a valid HTTP/1.1 response.
    """


def _parse_head(
    head: bytes,
) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
    """
    Parse a response head (without its final blank line).

    @return: status, reason, headers, and the HTTP version.
    """
    crlf = head.count(b"\r\n")
    if (
        head.translate(None, _HEAD_BYTES)
        or head.count(b"\r") != crlf
        or head.count(b"\n") != crlf
    ):
        bad = _BAD_HEAD_BYTE.search(head)
        found = head[bad.start() : bad.end()] if bad else b"?"
        raise BadResponse(f"invalid byte {found!r} in the head")
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if (
        version not in (b"HTTP/1.1", b"HTTP/1.0")
        or len(code) != 3
        or not code.isdigit()
    ):
        raise BadResponse(f"bad status line {lines[0][:80]!r}")
    if len(lines) > _MAX_HEADERS:
        raise BadResponse("too many header lines")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name.translate(None, _TOKEN_BYTES):
            raise BadResponse(f"bad header line {line[:80]!r}")
        headers.append((name, value.strip(b" \t")))
    return int(code), reason, headers, version


class HTTP1Connection(Protocol):
    """
    One persistent HTTP/1.1 connection to an upstream.

    @ivar key: the pool key it belongs to.
    @ivar served: responses completed on it so far.
    @ivar body_buffered: once the head of a response has arrived, whether
        its whole body has arrived with it.
    """

    def __init__(self, pool: ConnectionPool, key: Any) -> None:
        self.pool = pool
        self.key = key
        self.served = 0
        self.idle_since = 0.0
        self._receiver: ResponseReceiver | None = None
        self._state = _IDLE
        self._buffer = b""
        self._remaining = 0
        self._received_any = False
        self._reusable = False
        self._head_request = False
        self.body_buffered = False
        self._lost = False
        self._paused = False
        self._uploading = False
        self._switching: bytes | None = None
        self._tunnel: Any = None
        self._poller: select.poll | None = None
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        # As nginx's tcp_nodelay: the last segment of a request, or of a
        # tunnelled message, is not held back waiting for an ACK.
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        # A request's head goes out at the end of the pass, in one send().
        eager_connection(self.transport)

    # -- sending

    def send(
        self,
        head: bytes,
        body: Any,
        length: int,
        receiver: ResponseReceiver,
        head_request: bool,
        switching: bytes | None = None,
    ) -> None:
        """
        Send one request.

        @param head: the request line and headers, with C{Content-Length}
            when there is a body, and the final blank line.
        @param body: a file positioned at the body's start, or L{None}.
        @param length: the body's length.
        @param head_request: the method is HEAD (the response has no body).
        @param switching: the protocol (lower case) the request asks to
            switch to, if any: only then may the answer be a C{101}.
        """
        self._receiver = receiver
        self._state = _HEAD
        self._received_any = False
        self._head_request = head_request
        self._switching = switching
        transport = self.transport
        assert transport is not None
        if body is None or length == 0:
            transport.write(head)
        elif length <= _INLINE_BODY:
            transport.write(head + body.read(length))
        else:
            transport.write(head)
            # Streamed, as the client's own upload was spooled to a file;
            # until it is all written the connection cannot be reused.
            self._uploading = True
            limited = _Limited(body, length, self._upload_progress)
            sending = FileSender().beginFileTransfer(limited, transport)
            sending.addBoth(self._uploaded)

    def _upload_progress(self) -> None:
        if self._receiver is not None:
            self._receiver.request_progress()

    def _uploaded(self, result: object) -> None:
        self._uploading = False
        if isinstance(result, Failure) and self._receiver is not None:
            self._fail(f"sending the request body failed: {result.getErrorMessage()}")

    def abort(self) -> None:
        """
        Drop the connection and whatever it was doing; no more callbacks.
        """
        self._receiver = None
        self._reusable = False
        self.pool.forget(self)
        if self.transport is not None and not self._lost:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def quiet(self) -> bool:
        """
        Whether this idle connection can carry a new request: it is open
        and nothing waits to be read from it (no late answer, no close by
        the upstream that the reactor has not noticed yet).
        """
        if self._lost:
            return False
        poller = self._poller
        if poller is None:
            handle = _socket_of(self.transport)
            if handle is None:
                return True
            poller = self._poller = select.poll()
            poller.register(handle, _STIRRED)
        return not poller.poll(0)

    # -- receiving

    def dataReceived(self, data: bytes) -> None:
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.from_upstream(data)
            return
        if self._receiver is None:
            # Bytes nobody asked for: an upstream talking out of turn.
            self.abort()
            return
        self._received_any = True
        self._buffer += data
        try:
            self._parse()
        except BadResponse as e:
            self._fail(f"invalid response: {e}")

    def _parse(self) -> None:
        while self._buffer and self._receiver is not None:
            state = self._state
            if state == _HEAD:
                if not self._parse_head():
                    return
            elif state == _LENGTH:
                if self._deliver_remaining():
                    self._finish()
            elif state == _UNTIL_CLOSE:
                data, self._buffer = self._buffer, b""
                self._receiver.response_body(data)
            elif state in (_CHUNK_SIZE, _CHUNK_END, _TRAILERS):
                if not self._parse_chunk_line():
                    return
            elif state == _CHUNK_DATA:
                if self._deliver_remaining():
                    self._state = _CHUNK_END
            else:
                raise BadResponse("bytes after the end of the response")

    def _deliver_remaining(self) -> bool:
        """
        Hand buffered bytes, up to the C{_remaining} the framing allows, to
        the receiver.

        @return: whether that count is now reached.
        """
        data = self._buffer[: self._remaining]
        self._buffer = self._buffer[len(data) :]
        self._remaining -= len(data)
        assert self._receiver is not None
        self._receiver.response_body(data)
        return self._remaining == 0

    def _parse_head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end > _MAX_HEAD or (end < 0 and len(self._buffer) > _MAX_HEAD):
            raise BadResponse("response head too large")
        if end < 0:
            return False
        head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
        status, reason, headers, version = _parse_head(head)
        if status == 101:
            self._switched(reason, headers)
            return True
        if 100 <= status < 200:
            return True  # an interim response: the real one follows
        self._reusable = version == b"HTTP/1.1"
        framing = self._framing(status, headers)
        # Known before the receiver hears of the head, so that it can skip
        # flow control for a body that is already here.
        self.body_buffered = framing is None or 0 <= framing <= len(self._buffer)
        assert self._receiver is not None
        self._receiver.response_started(status, reason, headers)
        if framing is None:
            self._finish()
        elif framing == -1:
            self._state = _CHUNK_SIZE
        elif framing == -2:
            self._reusable = False
            self._state = _UNTIL_CLOSE
        elif framing == 0:
            self._finish()
        else:
            self._remaining = framing
            self._state = _LENGTH
        return True

    def _switched(self, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """
        A C{101}: valid only as the answer to a request that asked to
        switch, naming the protocol it asked for (RFC 9110 section 15.2.2).
        """
        asked = self._switching
        if asked is None:
            raise BadResponse("unexpected 101 Switching Protocols")
        named = [v for n, v in headers if n.lower() == b"upgrade"]
        if len(named) != 1 or named[0].strip().lower() != asked:
            raise BadResponse(
                f"a 101 must name the protocol asked for ({asked.decode()!r}), "
                f"not {b', '.join(named).decode('latin-1')!r}"
            )
        receiver, self._receiver = self._receiver, None
        self._state = _SWITCHED
        self._reusable = False
        self.pool.forget(self)
        assert receiver is not None
        receiver.response_switched(reason, headers)

    def join(self, tunnel: Any) -> None:
        """
        Carry this connection's bytes for C{tunnel} (a
        L{txrouter.tunnel.Tunnel}) from now on, those that came with the
        C{101} first.
        """
        self._tunnel = tunnel
        early, self._buffer = self._buffer, b""
        if self._paused:
            self.resumeProducing()
        if early:
            tunnel.from_upstream(early)
        if self._lost:
            tunnel.upstream_lost()

    def _framing(self, status: int, headers: list[tuple[bytes, bytes]]) -> int | None:
        """
        How the body is delimited: L{None} for no body, -1 chunked, -2 until
        close, else its length. A C{Connection: close} makes the connection
        not reusable.
        """
        lengths: set[bytes] = set()
        codings: list[bytes] = []
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                lengths.update(v.strip() for v in value.split(b","))
            elif lower == b"transfer-encoding":
                codings += [c.strip().lower() for c in value.split(b",")]
            elif lower == b"connection" and b"close" in (
                t.strip().lower() for t in value.split(b",")
            ):
                self._reusable = False
        if self._head_request or status in (204, 304):
            return None
        if codings:
            # Only chunked can be undone here: a body in another transfer
            # coding would reach the client still encoded.
            if codings != [b"chunked"]:
                raise BadResponse("unsupported transfer coding")
            # Transfer-Encoding wins over Content-Length (RFC 9112 6.3);
            # such a connection is not reused.
            if lengths:
                self._reusable = False
            return -1
        if not lengths:
            return -2
        if len(lengths) > 1:
            raise BadResponse("conflicting Content-Length values")
        (text,) = lengths
        if not text.isdigit() or len(text) > 18:
            raise BadResponse(f"bad Content-Length {text[:20]!r}")
        return int(text)

    def _parse_chunk_line(self) -> bool:
        end = self._buffer.find(b"\r\n")
        if end > _MAX_CHUNK_LINE or (end < 0 and len(self._buffer) > _MAX_CHUNK_LINE):
            raise BadResponse("chunk line too long")
        if end < 0:
            return False
        line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
        if self._state == _CHUNK_END:
            if line:
                raise BadResponse("missing CRLF after chunk data")
            self._state = _CHUNK_SIZE
        elif self._state == _TRAILERS:
            if not line:
                self._finish()
        else:
            size = line.partition(b";")[0].strip()
            if not size or len(size) > 15 or size.strip(b"0123456789abcdefABCDEF"):
                raise BadResponse(f"bad chunk size {size[:20]!r}")
            self._remaining = int(size, 16)
            self._state = _TRAILERS if self._remaining == 0 else _CHUNK_DATA
        return True

    def _finish(self) -> None:
        receiver, self._receiver = self._receiver, None
        self._state = _IDLE
        self.served += 1
        leftover = bool(self._buffer)
        self._buffer = b""
        # A slow client may have paused our reading; the next user of this
        # connection must hear its response.
        self.resumeProducing()
        if self._reusable and not leftover and not self._uploading:
            self.pool.release(self)
        elif self.transport is not None:
            self.transport.loseConnection()
        if receiver is not None:
            receiver.response_done()

    def _fail(self, why: str, stale: bool = False) -> None:
        receiver = self._receiver
        self.abort()
        self._state = _IDLE
        if receiver is not None:
            receiver.response_failed(why, stale)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self.lost.callback(None)
        self.pool.forget(self)
        if self._tunnel is not None:
            self._tunnel.upstream_lost()
            return
        if self._receiver is None:
            return
        if self._state == _UNTIL_CLOSE and reason.check(ConnectionDone):
            self._finish()
            return
        stale = self._state == _HEAD and not self._received_any and self.served > 0
        where = "before the response" if self._state == _HEAD else "in the body"
        self._fail(f"connection lost {where}: {reason.getErrorMessage()}", stale)

    # -- back-pressure: the client's request pauses and resumes our reading

    def pauseProducing(self) -> None:
        if self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        if self.transport is not None and self._paused:
            self._paused = False
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        self.abort()

    @property
    def paused(self) -> bool:
        """
        Whether reading is paused because the receiver's consumer is full.
        """
        return self._paused


def _socket_of(transport: Any) -> socket.socket | None:
    """
    The socket under C{transport} (TCP, UNIX, or TLS over either), or
    L{None} for a transport without one.
    """
    while ISystemHandle.providedBy(transport):
        handle = transport.getHandle()
        if isinstance(handle, socket.socket):
            return handle
        # TLS: the handle is the TLS connection; the socket is below.
        transport = getattr(transport, "transport", None)
    return None


class _Limited:
    """
    The first C{length} bytes of a file, for L{FileSender}, telling
    C{progress} each time it hands out more.
    """

    def __init__(self, file: Any, length: int, progress: Any) -> None:
        self._file = file
        self._left = length
        self._progress = progress

    def read(self, size: int) -> bytes:
        data: bytes = self._file.read(min(size, self._left))
        self._left -= len(data)
        self._progress()
        return data


class _ConnectionFactory(Factory):
    noisy = False

    def __init__(self, pool: ConnectionPool, key: Any) -> None:
        self.pool = pool
        self.key = key

    def buildProtocol(self, addr: Any) -> HTTP1Connection:
        return HTTP1Connection(self.pool, self.key)


class ConnectionPool:
    """
    Idle persistent connections, per upstream key.

    @ivar idle_per_key: at most this many idle connections are kept per
        upstream; more are opened under load and closed when they fall idle.
    @ivar idle_timeout: seconds an idle connection is kept.
    """

    idle_per_key = 32
    idle_timeout = 60.0

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._idle: dict[Any, list[HTTP1Connection]] = {}
        self._sweeper: LoopingCall | None = None
        self._closed = False

    def take_idle(self, key: Any) -> HTTP1Connection | None:
        """
        An idle connection to C{key}, or L{None}.
        """
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.quiet():
                return connection
            connection.abort()
        return None

    def connect(self, key: Any, endpoint: Any) -> Deferred[HTTP1Connection]:
        """
        A new connection to C{key} through C{endpoint}.
        """
        return endpoint.connect(_ConnectionFactory(self, key))  # type: ignore[no-any-return]

    def release(self, connection: HTTP1Connection) -> None:
        """
        Keep a connection whose response is complete, or close it.
        """
        idle = self._idle.setdefault(connection.key, [])
        if self._closed or len(idle) >= self.idle_per_key:
            connection.transport.loseConnection()  # type: ignore[union-attr]
            return
        connection.idle_since = self._reactor.seconds()
        idle.append(connection)
        if self._sweeper is None:
            # One timer for the pool, not one per connection and request.
            self._sweeper = LoopingCall(self._sweep)
            self._sweeper.clock = self._reactor
            self._sweeper.start(min(self.idle_timeout, 5.0), now=False)

    def forget(self, connection: HTTP1Connection) -> None:
        """
        A connection was closed: it is no longer idle.
        """
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    def close_key(self, key: Any) -> None:
        """
        Close the idle connections to C{key} (an upstream no route uses
        any more); connections busy with a request finish it first.
        """
        for connection in self._idle.pop(key, []):
            connection.transport.loseConnection()  # type: ignore[union-attr]

    def _sweep(self) -> None:
        oldest = self._reactor.seconds() - self.idle_timeout
        for idle in list(self._idle.values()):
            for connection in [c for c in idle if c.idle_since < oldest]:
                idle.remove(connection)
                connection.transport.loseConnection()  # type: ignore[union-attr]

    def close(self) -> Deferred[None]:
        """
        Close every idle connection and stop the sweeper.

        @return: fires when the idle connections are closed.
        """
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None
        closing = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        self._closed = True
        waits = []
        for connection in closing:
            waits.append(connection.lost)
            connection.transport.loseConnection()  # type: ignore[union-attr]
        return gatherResults(waits).addCallback(lambda _: None)
