"""
Unit tests of L{txrouter.http1client}.

An L{HTTP1Connection} is connected to a C{StringTransport}: the test reads
the request bytes it wrote and feeds raw response bytes back with
C{dataReceived} (whole, one byte at a time, and at every split point), then
closes it with C{connectionLost}. A L{Recorder} notes what the connection
tells its receiver. The L{ConnectionPool} runs on a C{MemoryReactorClock}:
no sockets, no real time.
"""

from __future__ import annotations

import gc
import socket
from io import BytesIO
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ISystemHandle
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txrouter.http1client import ConnectionPool, HTTP1Connection, _socket_of

pytestmark = pytest.mark.unit

KEY = ("tcp", "upstream.example", 8000)
OTHER_KEY = ("tcp", "other.example", 8000)

GET = b"GET /x HTTP/1.1\r\nHost: upstream.example\r\n\r\n"
HEAD = b"HEAD /x HTTP/1.1\r\nHost: upstream.example\r\n\r\n"

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"

# How the response bytes are cut: whole, one byte at a time, 3 bytes at a time.
SPLITS: tuple[int | None, ...] = (None, 1, 3)

# Chunk extensions, upper-case hex, CRLF inside chunk data, a last-chunk
# extension and trailers.
CHUNKED = (
    b"HTTP/1.1 200 OK\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Trailer: X-Sum\r\n"
    b"\r\n"
    b"5;name=value\r\nhello\r\n"
    b"1\r\n \r\n"
    b'A; a=1; b="q"\r\n0123456789\r\n'
    b"6\r\na\r\n\r\nb\r\n"
    b"0;last\r\n"
    b"X-Sum: 42\r\n"
    b"X-Other: 1\r\n"
    b"\r\n"
)
CHUNKED_HEADERS = [(b"Transfer-Encoding", b"chunked"), (b"Trailer", b"X-Sum")]
CHUNKED_BODY = b"hello 0123456789a\r\n\r\nb"


def clean() -> Failure:
    """
    The reason of a connection the upstream closed cleanly.
    """
    return Failure(ConnectionDone())


def unclean() -> Failure:
    """
    The reason of a connection that broke.
    """
    return Failure(ConnectionLost())


def feed(connection: HTTP1Connection, data: bytes, size: int | None = None) -> None:
    """
    Deliver C{data} in one piece, or in pieces of C{size} bytes; nothing
    for no bytes, as a transport does.
    """
    if size is None:
        if data:
            connection.dataReceived(data)
        return
    for i in range(0, len(data), size):
        connection.dataReceived(data[i : i + size])


def chunked(body: bytes, sizes: list[int]) -> bytes:
    """
    A chunked response carrying C{body} in chunks of the given sizes, in turn.
    """
    out = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
    i = n = 0
    while i < len(body):
        size = sizes[n % len(sizes)]
        out.append(b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]))
        i += size
        n += 1
    out.append(b"0\r\n\r\n")
    return b"".join(out)


class Recorder:
    """
    A L{txrouter.http1client.ResponseReceiver} that notes every call.

    @ivar events: C{("started", status, reason, headers)}, C{("body", data)},
        C{("done",)} and C{("failed", why, stale)}, in order.
    """

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.progress = 0

    def response_started(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.events.append(("started", status, reason, headers))

    def response_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def response_done(self) -> None:
        self.events.append(("done",))

    def response_failed(self, why: str, stale: bool) -> None:
        self.events.append(("failed", why, stale))

    def request_progress(self) -> None:
        self.progress += 1

    def outcome(self) -> list[tuple[Any, ...]]:
        """
        The events with consecutive body pieces joined, so that they do not
        depend on how the bytes were split, and failures without their text.
        """
        merged: list[tuple[Any, ...]] = []
        for event in self.events:
            if event[0] == "body" and merged and merged[-1][0] == "body":
                merged[-1] = ("body", merged[-1][1] + event[1])
            elif event[0] == "failed":
                merged.append(("failed", event[2]))
            else:
                merged.append(event)
        return merged

    def failures(self) -> list[str]:
        """
        The C{why} of every C{response_failed}.
        """
        return [event[1] for event in self.events if event[0] == "failed"]


class Transport(StringTransport):
    """
    A C{StringTransport} that also keeps each C{write} call.
    """

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


@implementer(ISystemHandle)
class SocketTransport(Transport):
    """
    A L{Transport} whose system handle is one end of a real socket pair,
    as a TCP or UNIX transport's is; the test writes into the other end.
    """

    def __init__(self) -> None:
        super().__init__()
        self.handle, self.upstream = socket.socketpair()

    def getHandle(self) -> socket.socket:
        return self.handle

    def close_sockets(self) -> None:
        self.handle.close()
        self.upstream.close()


@implementer(ISystemHandle)
class TLSLikeTransport(Transport):
    """
    A transport layered on another, as TLS is: its own handle is not a
    socket, the one of the transport below is.
    """

    def __init__(self, below: SocketTransport) -> None:
        super().__init__()
        self.transport = below

    def getHandle(self) -> object:
        return object()


class WatchingPool(ConnectionPool):
    """
    A pool that notes the transport's producer state of each connection
    released to it.
    """

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor)
        self.released: list[str] = []

    def release(self, connection: HTTP1Connection) -> None:
        self.released.append(connection.transport.producerState)  # type: ignore[union-attr]
        super().release(connection)


class AbortingRecorder(Recorder):
    """
    A receiver that aborts its connection from inside one of its callbacks,
    as a proxy does when its client goes away while it writes to it.
    """

    def __init__(self, connection: HTTP1Connection, when: str) -> None:
        super().__init__()
        self.connection = connection
        self.when = when

    def response_started(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        super().response_started(status, reason, headers)
        if self.when == "started":
            self.connection.abort()

    def response_body(self, data: bytes) -> None:
        super().response_body(data)
        if self.when == "body":
            self.connection.abort()


class FakeEndpoint:
    """
    An endpoint whose C{connect} succeeds at once over a L{Transport}.
    """

    def __init__(self) -> None:
        self.factories: list[Factory] = []

    def connect(self, factory: Factory) -> Deferred[Any]:
        self.factories.append(factory)
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        protocol.makeConnection(Transport())
        return succeed(protocol)


class ConnectionTestCase(SynchronousTestCase):
    """
    Connections to C{KEY} in a pool on a fresh clock.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.pool = ConnectionPool(self.reactor)

    def connection(
        self, key: Any = KEY, pool: ConnectionPool | None = None
    ) -> tuple[HTTP1Connection, Transport]:
        """
        A new connection, made on a L{Transport}.
        """
        connection = HTTP1Connection(pool or self.pool, key)
        transport = Transport()
        connection.makeConnection(transport)
        return connection, transport

    def request(
        self, connection: HTTP1Connection, head_request: bool = False
    ) -> Recorder:
        """
        Send a GET (or HEAD) without a body; return its receiver.
        """
        receiver = Recorder()
        head = HEAD if head_request else GET
        connection.send(head, None, 0, receiver, head_request)
        return receiver

    def exchange(
        self, response: bytes, size: int | None = None, head_request: bool = False
    ) -> tuple[HTTP1Connection, Transport, Recorder]:
        """
        A request on a new connection, answered with C{response}.
        """
        connection, transport = self.connection()
        receiver = self.request(connection, head_request)
        feed(connection, response, size)
        return connection, transport, receiver

    def reused(self) -> tuple[HTTP1Connection, Transport]:
        """
        A connection that served one response and was taken back from the
        pool.
        """
        connection, transport, receiver = self.exchange(OK)
        self.assertEqual(receiver.outcome()[-1], ("done",))
        self.assertIs(self.pool.take_idle(KEY), connection)
        transport.clear()
        return connection, transport

    def assert_pooled(self, connection: HTTP1Connection, what: str = "") -> None:
        """
        C{connection} is open and the pool hands it out again.
        """
        transport = connection.transport
        self.assertFalse(transport.disconnecting, what)  # type: ignore[union-attr]
        self.assertIs(self.pool.take_idle(connection.key), connection, what)

    def assert_not_pooled(self, connection: HTTP1Connection, what: str = "") -> None:
        """
        C{connection} is being closed and the pool does not hand it out.
        """
        transport = connection.transport
        self.assertTrue(transport.disconnecting, what)  # type: ignore[union-attr]
        self.assertIsNone(self.pool.take_idle(connection.key), what)


class RequestTests(ConnectionTestCase):
    """
    What L{HTTP1Connection.send} writes.
    """

    def test_head_only(self) -> None:
        """A request without a body is its head, written in one call."""
        connection, transport = self.connection()
        self.request(connection)
        self.assertEqual(transport.writes, [GET])
        self.assertIsNone(transport.producer)

    def test_empty_body(self) -> None:
        """A body file of length 0 writes the head alone."""
        connection, transport = self.connection()
        head = b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        connection.send(head, BytesIO(b""), 0, Recorder(), False)
        self.assertEqual(transport.writes, [head])

    def test_small_body_inline(self) -> None:
        """A small body goes out with the head in one write, C{length} bytes of it."""
        connection, transport = self.connection()
        head = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
        body = BytesIO(b"hello, and not this")
        connection.send(head, body, 5, Recorder(), False)
        self.assertEqual(transport.writes, [head + b"hello"])
        self.assertIsNone(transport.producer)

    def test_inline_limit(self) -> None:
        """A body of exactly 256 KiB is still written inline with the head."""
        connection, transport = self.connection()
        body = b"x" * (256 * 1024)
        head = b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
        connection.send(head, BytesIO(body), len(body), Recorder(), False)
        self.assertEqual(transport.writes, [head + body])
        self.assertIsNone(transport.producer)

    def test_large_body_streamed(self) -> None:
        """A body over 256 KiB follows the head from a pull producer, to its end."""
        connection, transport = self.connection()
        body = bytes(range(256)) * 1200 + b"end"
        head = b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
        connection.send(head, BytesIO(body), len(body), Recorder(), False)
        self.assertEqual(transport.value(), head)
        self.assertFalse(transport.streaming)
        pulls = 0
        while transport.producer is not None:
            transport.producer.resumeProducing()
            pulls += 1
        self.assertGreater(pulls, 2)
        self.assertEqual(transport.value(), head + body)

    def test_large_body_honours_length(self) -> None:
        """A streamed body stops after C{length} bytes, as an inline one does."""
        connection, transport = self.connection()
        body = b"b" * (300 * 1024)
        head = b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
        connection.send(
            head, BytesIO(body + b"NOT THE BODY"), len(body), Recorder(), False
        )
        while transport.producer is not None:
            transport.producer.resumeProducing()
        self.assertEqual(transport.value(), head + body)

    def test_early_response_during_upload_not_reused(self) -> None:
        """A response complete before its request body was all sent is not pooled."""
        connection, transport = self.connection()
        body = b"b" * (300 * 1024)
        head = b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
        receiver = Recorder()
        connection.send(head, BytesIO(body), len(body), receiver, False)
        transport.producer.resumeProducing()  # type: ignore[attr-defined]
        feed(connection, b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(receiver.outcome()[-1], ("done",))
        # Were it reused, the next request's head would land inside the rest
        # of this body, which the producer is still writing.
        self.assertIsNone(self.pool.take_idle(KEY))

    def test_upload_stopped_logs_nothing(self) -> None:
        """A streamed upload stopped by the connection's loss logs no error."""
        connection, transport = self.connection()
        body = b"b" * (300 * 1024)
        head = b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
        receiver = Recorder()
        connection.send(head, BytesIO(body), len(body), receiver, False)
        producer = transport.producer
        assert producer is not None
        producer.resumeProducing()
        # What a TCP transport does when the connection is lost.
        transport.unregisterProducer()
        producer.stopProducing()
        connection.connectionLost(unclean())
        del producer
        gc.collect()
        self.assertEqual(receiver.outcome(), [("failed", False)])
        self.assertEqual(self.flushLoggedErrors(), [])


class FramingTests(ConnectionTestCase):
    """
    How a response's body is delimited, and what the receiver hears.
    """

    def test_content_length(self) -> None:
        """A Content-Length body is delivered whole, however it is split."""
        response = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world"
        for size in SPLITS:
            _, _, receiver = self.exchange(response, size)
            self.assertEqual(
                receiver.outcome(),
                [
                    ("started", 200, b"OK", [(b"Content-Length", b"11")]),
                    ("body", b"hello world"),
                    ("done",),
                ],
                f"split {size}",
            )
            self.assertNotIn(("body", b""), receiver.events)

    def test_content_length_zero(self) -> None:
        """C{Content-Length: 0} completes the response with its head."""
        _, _, receiver = self.exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(
            receiver.outcome(),
            [("started", 200, b"OK", [(b"Content-Length", b"0")]), ("done",)],
        )

    def test_content_length_repeated_same_value(self) -> None:
        """Repeated Content-Length values that agree are accepted."""
        for fields in (
            b"Content-Length: 5, 5\r\n",
            b"Content-Length: 5\r\nContent-Length: 5\r\n",
        ):
            response = b"HTTP/1.1 200 OK\r\n" + fields + b"\r\nhello"
            _, _, receiver = self.exchange(response)
            self.assertEqual(receiver.outcome()[1:], [("body", b"hello"), ("done",)])

    def test_head_fields(self) -> None:
        """Status, reason and headers come as sent, in order, values stripped."""
        response = (
            b"HTTP/1.1 404 Not Found Here\r\n"
            b"Set-Cookie: a=1\r\n"
            b"X-A:   spaced \t\r\n"
            b"set-cookie: b=2\r\n"
            b"Empty:\r\n"
            b"Content-Length: 0\r\n"
            b"\r\n"
        )
        for size in SPLITS:
            _, _, receiver = self.exchange(response, size)
            self.assertEqual(
                receiver.outcome(),
                [
                    (
                        "started",
                        404,
                        b"Not Found Here",
                        [
                            (b"Set-Cookie", b"a=1"),
                            (b"X-A", b"spaced"),
                            (b"set-cookie", b"b=2"),
                            (b"Empty", b""),
                            (b"Content-Length", b"0"),
                        ],
                    ),
                    ("done",),
                ],
                f"split {size}",
            )

    def test_status_without_reason(self) -> None:
        """A status line without a reason phrase gives an empty reason."""
        _, _, receiver = self.exchange(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(receiver.outcome()[0][:3], ("started", 200, b""))

    def test_chunked(self) -> None:
        """A chunked body loses framing, extensions and trailers, however split."""
        expected = [
            ("started", 200, b"OK", CHUNKED_HEADERS),
            ("body", CHUNKED_BODY),
            ("done",),
        ]
        for size in SPLITS:
            connection, _, receiver = self.exchange(CHUNKED, size)
            self.assertEqual(receiver.outcome(), expected, f"split {size}")
            self.assertNotIn(("body", b""), receiver.events)
            self.assert_pooled(connection, f"split {size}")

    def test_chunked_every_split_point(self) -> None:
        """A chunked response cut in two at any byte gives the same result."""
        expected = [
            ("started", 200, b"OK", CHUNKED_HEADERS),
            ("body", CHUNKED_BODY),
            ("done",),
        ]
        for i in range(1, len(CHUNKED)):
            connection, _ = self.connection()
            receiver = self.request(connection)
            connection.dataReceived(CHUNKED[:i])
            connection.dataReceived(CHUNKED[i:])
            self.assertEqual(receiver.outcome(), expected, f"split at {i}")
            self.assert_pooled(connection, f"split at {i}")

    def test_many_chunks(self) -> None:
        """Hundreds of chunks of varied sizes rebuild the body, however split."""
        body = bytes(i % 251 for i in range(40_000))
        response = chunked(body, [1, 2, 3, 7, 17, 64, 100, 255, 256, 1000])
        self.assertGreater(response.count(b"\r\n"), 2 * 200)
        for size in (None, 1, 1000):
            _, _, receiver = self.exchange(response, size)
            self.assertEqual(
                receiver.outcome()[1:], [("body", body), ("done",)], f"split {size}"
            )

    def test_chunked_case_insensitive(self) -> None:
        """C{Transfer-Encoding: Chunked} is chunked."""
        response = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        )
        _, _, receiver = self.exchange(response)
        self.assertEqual(receiver.outcome()[1:], [("body", b"ok"), ("done",)])

    def test_chunked_wins_over_content_length(self) -> None:
        """With both chunked and Content-Length, chunked delimits the body."""
        response = (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
        for size in SPLITS:
            _, _, receiver = self.exchange(response, size)
            self.assertEqual(
                receiver.outcome()[1:], [("body", b"hello"), ("done",)], f"split {size}"
            )

    def test_until_close_clean(self) -> None:
        """A body without length ends, complete, when the upstream closes cleanly."""
        for version in (b"HTTP/1.1", b"HTTP/1.0"):
            response = version + b" 200 OK\r\nContent-Type: text/plain\r\n\r\nsome body"
            for size in SPLITS:
                connection, _, receiver = self.exchange(response, size)
                self.assertEqual(receiver.outcome()[1:], [("body", b"some body")])
                connection.connectionLost(clean())
                self.assertEqual(
                    receiver.outcome(),
                    [
                        ("started", 200, b"OK", [(b"Content-Type", b"text/plain")]),
                        ("body", b"some body"),
                        ("done",),
                    ],
                    f"{version!r} split {size}",
                )
                self.assertIsNone(self.pool.take_idle(KEY))

    def test_until_close_unclean(self) -> None:
        """A body without length fails when the connection breaks."""
        connection, _, receiver = self.exchange(b"HTTP/1.1 200 OK\r\n\r\nsome")
        connection.connectionLost(unclean())
        self.assertEqual(
            receiver.outcome(),
            [("started", 200, b"OK", []), ("body", b"some"), ("failed", False)],
        )
        self.assertIn("in the body", receiver.failures()[0])

    def test_until_close_default_reason(self) -> None:
        """C{connectionLost()}'s default reason completes a body without length."""
        connection, _, receiver = self.exchange(b"HTTP/1.1 200 OK\r\n\r\nsome")
        connection.connectionLost()
        self.assertEqual(receiver.outcome()[-1], ("done",))

    NO_BODY = [
        ("HEAD with Content-Length", True, b"200 OK", b"Content-Length: 1234\r\n"),
        ("HEAD with chunked", True, b"200 OK", b"Transfer-Encoding: chunked\r\n"),
        ("HEAD without length", True, b"200 OK", b""),
        ("204 with Content-Length", False, b"204 No Content", b"Content-Length: 5\r\n"),
        (
            "304 with Content-Length",
            False,
            b"304 Not Modified",
            b"Content-Length: 5\r\n",
        ),
        (
            "304 with chunked",
            False,
            b"304 Not Modified",
            b"Transfer-Encoding: chunked\r\n",
        ),
    ]

    def test_no_body(self) -> None:
        """HEAD, 204 and 304 responses end with their head, whatever the headers."""
        for what, head_request, status, fields in self.NO_BODY:
            response = b"HTTP/1.1 " + status + b"\r\n" + fields + b"\r\n"
            connection, _, receiver = self.exchange(response, head_request=head_request)
            self.assertEqual(
                [event[0] for event in receiver.events], ["started", "done"], what
            )
            self.assert_pooled(connection, what)
            receiver = self.request(connection)
            feed(connection, OK)
            self.assertEqual(
                receiver.outcome()[1:], [("body", b"hello"), ("done",)], what
            )

    def test_interim_responses_skipped(self) -> None:
        """Interim 100 and 103 responses are skipped; only the final one is told."""
        response = (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        for size in SPLITS:
            connection, _, receiver = self.exchange(response, size)
            self.assertEqual(
                receiver.outcome(),
                [
                    ("started", 200, b"OK", [(b"Content-Length", b"2")]),
                    ("body", b"ok"),
                    ("done",),
                ],
                f"split {size}",
            )
            self.assert_pooled(connection, f"split {size}")

    def test_interim_before_head_response(self) -> None:
        """An interim response before a HEAD response does not end it."""
        response = (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
        )
        _, _, receiver = self.exchange(response, head_request=True)
        self.assertEqual([event[0] for event in receiver.events], ["started", "done"])
        self.assertEqual(receiver.events[0][1], 200)


class MalformedTests(ConnectionTestCase):
    """
    Bytes that are not a valid response fail it and abort the connection.
    """

    MALFORMED = [
        ("empty status line", b"\r\n\r\n"),
        ("status line without status", b"HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        ("garbage status line", b"hello world\r\nContent-Length: 0\r\n\r\n"),
        ("two spaces in status line", b"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n"),
        ("HTTP/2", b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ("HTTP/1.2", b"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ("HTTP/0.9", b"HTTP/0.9 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ("lower-case version", b"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ("non-digit status", b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"),
        ("two-digit status", b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"),
        ("four-digit status", b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"),
        ("signed status", b"HTTP/1.1 +20 OK\r\nContent-Length: 0\r\n\r\n"),
        ("101", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"),
        ("header without colon", b"HTTP/1.1 200 OK\r\nX-Foo bar\r\n\r\n"),
        ("space before colon", b"HTTP/1.1 200 OK\r\nX-Foo : bar\r\n\r\n"),
        ("space in name", b"HTTP/1.1 200 OK\r\nX Foo: bar\r\n\r\n"),
        ("empty header name", b"HTTP/1.1 200 OK\r\n: bar\r\n\r\n"),
        ("obs-fold", b"HTTP/1.1 200 OK\r\nX-Foo: bar\r\n baz\r\n\r\n"),
        ("obs-fold with colon", b"HTTP/1.1 200 OK\r\nX-Foo: bar\r\n\tX-Bar: 1\r\n\r\n"),
        (
            "too many header lines",
            b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 300 + b"\r\n",
        ),
        (
            "conflicting Content-Length fields",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "conflicting Content-Length list",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
        ),
        ("letters Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n"),
        ("negative Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"),
        ("signed Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"),
        ("hex Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n"),
        (
            "underscore Content-Length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n",
        ),
        ("empty Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n"),
        (
            "huge Content-Length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999999\r\n\r\n",
        ),
        (
            "Transfer-Encoding gzip",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
        ),
        (
            "Transfer-Encoding gzip, chunked",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"2\r\nxx\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding chunked, chunked",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding gzip with Content-Length",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"
            b"Content-Length: 2\r\n\r\nxx",
        ),
        (
            "non-hex chunk size",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n",
        ),
        (
            "negative chunk size",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
        ),
        (
            "0x chunk size",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n",
        ),
        (
            "underscore chunk size",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n",
        ),
        (
            "empty chunk size",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        ),
        (
            "chunk size too long",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"1" * 16
            + b"\r\n",
        ),
        (
            "missing CRLF after chunk data",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhelloXX\r\n0\r\n\r\n",
        ),
    ]

    def assert_malformed(
        self, receiver: Recorder, transport: Transport, what: str
    ) -> None:
        """
        The response failed once, as invalid and not stale, and the
        connection was aborted.
        """
        outcome = receiver.outcome()
        self.assertEqual(outcome[-1], ("failed", False), what)
        self.assertNotIn(("done",), outcome, what)
        self.assertEqual(len(receiver.failures()), 1, what)
        self.assertTrue(receiver.failures()[0].startswith("invalid response: "), what)
        self.assertTrue(transport.disconnected, f"{what}: not aborted")
        self.assertIsNone(self.pool.take_idle(KEY), what)

    def test_malformed(self) -> None:
        """Each malformed response fails and aborts the connection, however split."""
        for what, response in self.MALFORMED:
            for size in (None, 1):
                _, transport, receiver = self.exchange(response, size)
                self.assert_malformed(receiver, transport, f"{what}, split {size}")

    def test_nothing_after_failure(self) -> None:
        """After a malformed response, nothing more reaches the receiver."""
        connection, _, receiver = self.exchange(b"HTTP/9 200 OK\r\n\r\n")
        feed(connection, OK)
        connection.connectionLost(unclean())
        self.assertEqual(receiver.outcome(), [("failed", False)])

    def test_multiple_transfer_encoding_fields(self) -> None:
        """Fields C{gzip} then C{chunked} are refused like C{gzip, chunked}."""
        response = (
            b"HTTP/1.1 200 OK\r\n"
            b"Transfer-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"2\r\nxx\r\n0\r\n\r\n"
        )
        _, transport, receiver = self.exchange(response)
        self.assert_malformed(receiver, transport, "gzip then chunked")

    def test_head_too_large_in_pieces(self) -> None:
        """A head still unfinished past 64 KiB fails."""
        response = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (65 * 1024)
        _, transport, receiver = self.exchange(response, 1024)
        self.assert_malformed(receiver, transport, "64 KiB head")
        self.assertIn("too large", receiver.failures()[0])

    def test_head_too_large_in_one_piece(self) -> None:
        """A head over 64 KiB fails also when it arrives whole, with its blank line."""
        response = (
            b"HTTP/1.1 200 OK\r\nX-Big: "
            + b"a" * (65 * 1024)
            + b"\r\nContent-Length: 0\r\n\r\n"
        )
        _, transport, receiver = self.exchange(response)
        self.assert_malformed(receiver, transport, "64 KiB head in one piece")

    def test_chunk_line_too_long_in_pieces(self) -> None:
        """A chunk-size line still unfinished past 4 KiB fails."""
        response = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;" + b"x" * 5000
        )
        _, transport, receiver = self.exchange(response, 100)
        self.assert_malformed(receiver, transport, "long chunk line")
        self.assertIn("chunk line too long", receiver.failures()[0])

    def test_chunk_line_too_long_in_one_piece(self) -> None:
        """A chunk line over 4 KiB fails also when it arrives whole, with its CRLF."""
        response = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;"
            + b"x" * 5000
            + b"\r\nhello\r\n0\r\n\r\n"
        )
        _, transport, receiver = self.exchange(response)
        self.assert_malformed(receiver, transport, "long chunk line in one piece")

    def test_bytes_after_response_same_read(self) -> None:
        """Bytes after a response in the same read close the connection, not it."""
        connection, _, receiver = self.exchange(OK + b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(receiver.outcome()[1:], [("body", b"hello"), ("done",)])
        self.assert_not_pooled(connection, "bytes after the response")

    def test_bytes_with_no_request(self) -> None:
        """Bytes while no request is out abort the connection and tell nobody."""
        connection, transport, receiver = self.exchange(OK)
        feed(connection, b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertTrue(transport.disconnected)
        connection.connectionLost(unclean())
        self.assertEqual(receiver.outcome()[1:], [("body", b"hello"), ("done",)])
        self.assertIsNone(self.pool.take_idle(KEY))

    def test_bytes_with_no_request_leave_pool(self) -> None:
        """An idle connection aborted for unsolicited bytes leaves the pool at once."""
        connection, transport, _ = self.exchange(OK)
        feed(connection, b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertTrue(transport.disconnected)
        self.assertIsNone(self.pool.take_idle(KEY))

    def test_bytes_before_any_request(self) -> None:
        """Bytes on a new connection before any request abort it."""
        connection, transport = self.connection()
        feed(connection, OK)
        self.assertTrue(transport.disconnected)


class ReuseTests(ConnectionTestCase):
    """
    Which connections go back to the pool when their response completes.
    """

    REUSE = [
        ("HTTP/1.1 Content-Length", OK, True),
        (
            "HTTP/1.1 chunked",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            True,
        ),
        (
            "Connection: keep-alive",
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            True,
        ),
        (
            "Connection: close",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            False,
        ),
        (
            "Connection: CLOSE",
            b"HTTP/1.1 200 OK\r\nconnection: CLOSE\r\nContent-Length: 0\r\n\r\n",
            False,
        ),
        (
            "Connection: keep-alive, close",
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\n"
            b"Content-Length: 0\r\n\r\n",
            False,
        ),
        (
            "Connection: close, X-Foo",
            b"HTTP/1.1 200 OK\r\nConnection: close, X-Foo\r\nContent-Length: 0\r\n\r\n",
            False,
        ),
        (
            "second Connection field says close",
            b"HTTP/1.1 200 OK\r\nConnection: X-Foo\r\nConnection: close\r\n"
            b"Content-Length: 0\r\n\r\n",
            False,
        ),
        ("HTTP/1.0", b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (
            "HTTP/1.0 keep-alive",
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            False,
        ),
    ]

    def test_reuse(self) -> None:
        """Only HTTP/1.1 responses without C{Connection: close} pool the connection."""
        for what, response, reusable in self.REUSE:
            connection, _, receiver = self.exchange(response)
            self.assertEqual(receiver.outcome()[-1], ("done",), what)
            if reusable:
                self.assert_pooled(connection, what)
                self.assertIsNone(self.pool.take_idle(KEY), f"{what}: twice")
            else:
                self.assert_not_pooled(connection, what)

    def test_until_close_not_reused(self) -> None:
        """A body read until close never puts its connection in the pool."""
        connection, _, receiver = self.exchange(b"HTTP/1.1 200 OK\r\n\r\nbody")
        self.assertIsNone(self.pool.take_idle(KEY))
        connection.connectionLost(clean())
        self.assertEqual(receiver.outcome()[-1], ("done",))
        self.assertIsNone(self.pool.take_idle(KEY))

    def test_chunked_with_content_length_not_reused(self) -> None:
        """A response with both chunked and Content-Length is not pooled."""
        response = (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
        connection, _, receiver = self.exchange(response)
        self.assertEqual(receiver.outcome()[-1], ("done",))
        self.assert_not_pooled(connection, "chunked with Content-Length")

    def test_served_count(self) -> None:
        """A connection counts the responses it completed, one per request."""
        connection, _, _ = self.exchange(OK)
        self.assertEqual(connection.served, 1)
        self.assertIs(self.pool.take_idle(KEY), connection)
        receiver = self.request(connection)
        feed(connection, CHUNKED, 1)
        self.assertEqual(receiver.outcome()[1:], [("body", CHUNKED_BODY), ("done",)])
        self.assertEqual(connection.served, 2)


class StaleTests(ConnectionTestCase):
    """
    Which failures say the request may be retried on a new connection.
    """

    PARTIAL_BODY = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    PARTIAL_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"

    STALE = [
        # what, reused, bytes received, reason, stale
        ("fresh, nothing, clean close", False, b"", clean, False),
        ("fresh, nothing, broken", False, b"", unclean, False),
        ("reused, nothing, clean close", True, b"", clean, True),
        ("reused, nothing, broken", True, b"", unclean, True),
        ("reused, part of the head", True, b"HTTP/1.1 2", clean, False),
        ("reused, after a 100", True, b"HTTP/1.1 100 Continue\r\n\r\n", clean, False),
        ("reused, mid-body", True, PARTIAL_BODY, unclean, False),
        ("reused, mid-body, clean close", True, PARTIAL_BODY, clean, False),
        ("reused, mid-chunked-body", True, PARTIAL_CHUNKED, clean, False),
        ("fresh, mid-body", False, PARTIAL_BODY, unclean, False),
    ]

    def test_stale(self) -> None:
        """Only a reused connection lost before any byte of its response is stale."""
        for what, reused, received, reason, stale in self.STALE:
            if reused:
                connection, _ = self.reused()
            else:
                connection, _ = self.connection()
            receiver = self.request(connection)
            feed(connection, received)
            connection.connectionLost(reason())
            outcome = receiver.outcome()
            self.assertEqual(outcome[-1], ("failed", stale), what)
            self.assertNotIn(("done",), outcome, what)
            self.assertEqual(len(receiver.failures()), 1, what)
            self.assertIn("connection lost", receiver.failures()[0], what)
            self.assertIsNone(self.pool.take_idle(KEY), what)


class BackPressureTests(ConnectionTestCase):
    """
    A slow client pauses the connection's reading.
    """

    def test_pause_resume_reach_transport(self) -> None:
        """C{pauseProducing} and C{resumeProducing} pause and resume the transport."""
        connection, transport = self.connection()
        self.request(connection)
        connection.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        connection.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        connection.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        connection.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_paused_resumed_before_reuse(self) -> None:
        """A connection paused as its response completes is resumed, then pooled."""
        pool = WatchingPool(self.reactor)
        connection, transport = self.connection(pool=pool)
        receiver = self.request(connection)
        feed(connection, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe")
        connection.pauseProducing()
        feed(connection, b"llo")
        self.assertEqual(receiver.outcome()[-1], ("done",))
        self.assertEqual(pool.released, ["producing"])
        self.assertIs(pool.take_idle(KEY), connection)
        self.assertEqual(transport.producerState, "producing")
        receiver = self.request(connection)
        feed(connection, OK)
        self.assertEqual(receiver.outcome()[-1], ("done",))

    def test_stop_producing_aborts(self) -> None:
        """C{stopProducing} aborts the connection and silences the receiver."""
        connection, transport = self.connection()
        receiver = self.request(connection)
        feed(connection, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe")
        connection.stopProducing()
        self.assertTrue(transport.disconnected)
        feed(connection, b"llo")
        connection.connectionLost(unclean())
        self.assertEqual(receiver.outcome()[1:], [("body", b"he")])


class AbortTests(ConnectionTestCase):
    """
    L{HTTP1Connection.abort} drops the connection and its response.
    """

    ABORT_POINTS = [
        ("before the response", b""),
        ("mid-head", b"HTTP/1.1 200 OK\r\nContent-"),
        ("mid-body", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe"),
        (
            "mid-chunked-body",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe",
        ),
        ("mid-until-close-body", b"HTTP/1.1 200 OK\r\n\r\nhe"),
    ]

    def test_abort(self) -> None:
        """After C{abort} the transport is aborted and the receiver hears nothing."""
        for what, before in self.ABORT_POINTS:
            connection, transport = self.connection()
            receiver = self.request(connection)
            feed(connection, before)
            seen = list(receiver.events)
            connection.abort()
            self.assertTrue(transport.disconnected, what)
            feed(connection, b"llo" + OK)
            connection.connectionLost(clean())
            self.assertEqual(receiver.events, seen, what)
            self.assertIsNone(self.pool.take_idle(KEY), what)

    def test_abort_after_loss(self) -> None:
        """C{abort} on a lost connection does not touch its transport again."""
        connection, transport = self.connection()
        receiver = self.request(connection)
        connection.connectionLost(unclean())
        transport.disconnected = False
        connection.abort()
        self.assertFalse(transport.disconnected)
        self.assertEqual(receiver.outcome(), [("failed", False)])

    def test_abort_from_callback(self) -> None:
        """A connection its receiver aborts as the response ends is not pooled."""
        cases = [
            (
                "in response_started of a 204",
                "started",
                b"HTTP/1.1 204 No Content\r\n\r\n",
            ),
            ("in response_body of the last bytes", "body", OK),
        ]
        for what, when, response in cases:
            connection, transport = self.connection()
            receiver = AbortingRecorder(connection, when)
            connection.send(GET, None, 0, receiver, False)
            feed(connection, response)
            self.assertTrue(transport.disconnected, what)
            self.assertNotIn(("done",), receiver.events, what)
            self.assertIsNone(self.pool.take_idle(KEY), what)


class ConnectionPoolTests(ConnectionTestCase):
    """
    L{ConnectionPool} keeps idle connections per key, for a while.
    """

    def complete(self, key: Any = KEY) -> tuple[HTTP1Connection, Transport]:
        """
        A connection to C{key} whose response just completed.
        """
        connection, transport = self.connection(key)
        receiver = self.request(connection)
        feed(connection, OK)
        self.assertEqual(receiver.outcome()[-1], ("done",))
        return connection, transport

    def test_connect(self) -> None:
        """C{connect} makes a connection through the endpoint, for the pool and key."""
        endpoint = FakeEndpoint()
        connection = self.successResultOf(self.pool.connect(KEY, endpoint))
        self.assertIsInstance(connection, HTTP1Connection)
        self.assertEqual((connection.key, connection.served), (KEY, 0))
        self.assertIs(connection.pool, self.pool)
        receiver = self.request(connection)
        feed(connection, OK)
        self.assertEqual(receiver.outcome()[-1], ("done",))
        self.assertIs(self.pool.take_idle(KEY), connection)

    def test_take_idle_per_key(self) -> None:
        """C{take_idle} hands out each idle connection once, and only for its key."""
        self.assertIsNone(self.pool.take_idle(KEY))
        a, _ = self.complete(KEY)
        b, _ = self.complete(OTHER_KEY)
        self.assertIs(self.pool.take_idle(OTHER_KEY), b)
        self.assertIsNone(self.pool.take_idle(OTHER_KEY))
        self.assertIs(self.pool.take_idle(KEY), a)
        self.assertIsNone(self.pool.take_idle(KEY))

    def test_idle_per_key(self) -> None:
        """At most C{idle_per_key} connections are kept per key; more are closed."""
        self.pool.idle_per_key = 2
        kept = [self.complete(KEY) for _ in range(2)]
        _, extra_transport = self.complete(KEY)
        other, _ = self.complete(OTHER_KEY)
        self.assertTrue(extra_transport.disconnecting)
        for _, transport in kept:
            self.assertFalse(transport.disconnecting)
        taken = {self.pool.take_idle(KEY), self.pool.take_idle(KEY)}
        self.assertEqual(taken, {connection for connection, _ in kept})
        self.assertIsNone(self.pool.take_idle(KEY))
        self.assertIs(self.pool.take_idle(OTHER_KEY), other)

    def test_sweep(self) -> None:
        """The sweeper closes connections idle over C{idle_timeout}, and only them."""
        self.pool.idle_timeout = 60.0
        old, old_transport = self.complete()
        self.reactor.advance(59)
        self.assertFalse(old_transport.disconnecting)
        young, young_transport = self.complete()
        self.reactor.advance(11)
        self.assertTrue(old_transport.disconnecting)
        self.assertFalse(young_transport.disconnecting)
        old.connectionLost(clean())
        self.assertIs(self.pool.take_idle(KEY), young)
        self.assertIsNone(self.pool.take_idle(KEY))

    def test_sweep_all(self) -> None:
        """Every connection left idle long enough is closed, on every key."""
        transports = [self.complete(key)[1] for key in (KEY, KEY, OTHER_KEY)]
        self.reactor.advance(self.pool.idle_timeout + 10)
        self.assertEqual([t.disconnecting for t in transports], [True] * 3)
        self.assertIsNone(self.pool.take_idle(KEY))
        self.assertIsNone(self.pool.take_idle(OTHER_KEY))

    def test_lost_while_idle(self) -> None:
        """A connection lost while idle is forgotten: not handed out and not counted."""
        self.pool.idle_per_key = 1
        lost, _ = self.complete()
        lost.connectionLost(clean())
        self.assertIsNone(self.pool.take_idle(KEY))
        lost2, _ = self.complete()
        lost2.connectionLost(unclean())
        kept, kept_transport = self.complete()
        self.assertFalse(kept_transport.disconnecting)
        self.assertIs(self.pool.take_idle(KEY), kept)

    def test_close(self) -> None:
        """
        C{close} closes every idle connection, stops the sweeper, and fires
        once the connections are really gone.
        """
        pairs = [self.complete(key) for key in (KEY, KEY, OTHER_KEY)]
        transports = [transport for _, transport in pairs]
        self.assertTrue(self.reactor.getDelayedCalls())
        closed = self.pool.close()
        self.assertEqual([t.disconnecting for t in transports], [True] * 3)
        self.assertNoResult(closed)
        for connection, _ in pairs:
            connection.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(closed)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertIsNone(self.pool.take_idle(KEY))
        self.assertIsNone(self.pool.take_idle(OTHER_KEY))

    def test_close_empty(self) -> None:
        """C{close} on a pool that never held a connection succeeds."""
        self.successResultOf(self.pool.close())
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class LateBytesTests(ConnectionTestCase):
    """
    A pooled connection with something waiting in its socket (a late
    answer, bytes nobody asked for, or the upstream's close the reactor has
    not read yet) is not handed to the next request.
    """

    def idle(
        self, transport_class: type[Transport] = SocketTransport
    ) -> tuple[HTTP1Connection, SocketTransport]:
        """
        A connection on a real socket that served one response and is idle
        in the pool.
        """
        connection = HTTP1Connection(self.pool, KEY)
        sockets = SocketTransport()
        self.addCleanup(sockets.close_sockets)
        transport = sockets if transport_class is SocketTransport else None
        connection.makeConnection(transport or TLSLikeTransport(sockets))
        receiver = self.request(connection)
        feed(connection, OK)
        self.assertEqual(receiver.outcome()[-1], ("done",))
        return connection, sockets

    def test_quiet_reused(self) -> None:
        """An idle connection whose socket has nothing to read is reused."""
        connection, _ = self.idle()
        self.assertIs(self.pool.take_idle(KEY), connection)

    def test_late_answer_not_reused(self) -> None:
        """
        Bytes waiting in the socket of an idle connection (the reactor has
        not read them yet) close it instead of reaching the next request.
        """
        connection, sockets = self.idle()
        sockets.upstream.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON")
        self.assertIsNone(self.pool.take_idle(KEY))
        self.assertTrue(connection.transport.disconnecting)  # type: ignore[union-attr]
        self.assertEqual(sockets.handle.recv(100, socket.MSG_PEEK)[:8], b"HTTP/1.1")

    def test_closed_by_upstream_not_reused(self) -> None:
        """
        An idle connection the upstream has closed, before the reactor saw
        it, is not reused (a POST on it could not be retried).
        """
        connection, sockets = self.idle()
        sockets.upstream.shutdown(socket.SHUT_WR)
        self.assertIsNone(self.pool.take_idle(KEY))
        self.assertTrue(connection.transport.disconnecting)  # type: ignore[union-attr]

    def test_next_idle_connection_used(self) -> None:
        """
        A connection that is not quiet is skipped for the next idle one.
        """
        good, _ = self.idle()
        bad, sockets = self.idle()
        sockets.upstream.sendall(b"x")
        self.assertIs(self.pool.take_idle(KEY), good)
        self.assertTrue(bad.transport.disconnecting)  # type: ignore[union-attr]

    def test_tls_looks_below(self) -> None:
        """
        On a layered transport (TLS), the socket below is the one looked at.
        """
        connection, sockets = self.idle(TLSLikeTransport)
        self.assertIs(connection.quiet(), True)
        sockets.upstream.sendall(b"x")
        self.assertIs(connection.quiet(), False)
        self.assertIsNone(self.pool.take_idle(KEY))

    def test_bytes_read_while_idle(self) -> None:
        """
        Bytes the reactor reads from an idle connection close it at once.
        """
        connection, _ = self.idle()
        connection.dataReceived(b"HTTP/1.1 200 OK\r\n")
        self.assertTrue(connection.transport.disconnecting)  # type: ignore[union-attr]
        self.assertIsNone(self.pool.take_idle(KEY))

    def test_twisted_transports_give_their_socket(self) -> None:
        """
        Twisted's TCP and UNIX connections hand out their socket
        (C{ISystemHandle.getHandle}), which the look at the receive queue
        relies on: this fails loudly if Twisted changes it.
        """
        listener = socket.create_server(("127.0.0.1", 0))
        tcp_ours = socket.create_connection(listener.getsockname())
        tcp_theirs, _ = listener.accept()
        listener.close()
        for ours, theirs in [(tcp_ours, tcp_theirs), socket.socketpair()]:
            self.addCleanup(ours.close)
            self.addCleanup(theirs.close)
            transport = tcp.Connection(ours, Protocol(), self.reactor)
            self.assertIs(_socket_of(transport), ours)


class NoDelayTests(SynchronousTestCase):
    def test_tcp_nodelay(self) -> None:
        """
        A TCP connection to an upstream sends its segments at once (as
        nginx's C{tcp_nodelay}): a real socket's C{TCP_NODELAY} is set.
        """
        server = socket.socket()
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        client = socket.create_connection(server.getsockname())
        self.addCleanup(client.close)
        reactor = MemoryReactorClock()
        transport = tcp.Connection(client, None, reactor)
        connection = HTTP1Connection(ConnectionPool(reactor), "key")
        connection.makeConnection(transport)
        self.assertEqual(client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)
