"""
Unit tests of L{txrouter.channel.RouterChannel}: strict parsing by llhttp
and the edge's limits, with raw request bytes through a real channel of a
L{RouterSite}, on an in-memory transport and clock.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from txrouter.limits import KiB, Limits
from txrouter.privatetwisted import http_channel_of
from txrouter.router import Router
from txrouter.site import RouterSite

pytestmark = pytest.mark.unit


class Echo(Resource):
    """
    Answers with the length of the body it got, and counts its requests.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def render(self, request: Any) -> bytes:
        self.seen += 1
        request.content.seek(0, 2)
        return b"%d" % request.content.tell()


class Hold(Resource):
    """
    Keeps every request open, for the test to answer when it likes.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []

    def render(self, request: Any) -> int:
        self.requests.append(request)
        return NOT_DONE_YET


class Client:
    """
    One connection to a site, on a transport that records what it got.
    """

    def __init__(self, site: RouterSite) -> None:
        self.protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        self.transport = StringTransport()
        if self.protocol is not None:
            self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def answer(self) -> bytes:
        return self.transport.value()  # type: ignore[no-any-return]

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)


class ChannelTestCase(SynchronousTestCase):
    """
    A site with small limits, routing C{/app/} and C{/big/} (which takes
    bodies up to 1 MiB) to an L{Echo}, and C{/slow/} to a L{Hold}.
    """

    limits = Limits(max_body=1000)

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.echo = Echo()
        self.hold = Hold()
        router = Router(
            {"": {"/app/": self.echo, "/big/": self.echo, "/slow/": self.hold}},
            {"": {"/big/": 1024 * KiB}},
        )
        self.site = RouterSite(router, self.reactor, None, self.limits)

    def client(self) -> Client:
        return Client(self.site)

    def assert_refused(self, client: Client, status: bytes) -> None:
        answer = client.answer()
        self.assertTrue(answer.startswith(b"HTTP/1.1 " + status), answer[:200])
        self.assertIn(b"Connection: close", answer)
        self.assertTrue(client.closed)
        self.assertEqual(self.echo.seen, 0)

    def answer_slow(self) -> None:
        """
        Answer the one request C{/slow/} holds.
        """
        [request] = self.hold.requests
        request.write(b"slow")
        request.finish()


GET = b"GET /app/ HTTP/1.1\r\nHost: a.example\r\n\r\n"
SLOW = b"GET /slow/ HTTP/1.1\r\nHost: a\r\n\r\n"


class StrictParsingTests(ChannelTestCase):
    """
    What llhttp refuses is a 400 and a closed connection, whole or split
    byte by byte, and never reaches a resource.
    """

    BAD = {
        "obs-fold": b"GET /app/ HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        "bare LF": b"GET /app/ HTTP/1.1\nHost: a\n\n",
        "bare CR": b"GET /app/ HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
        "NUL in value": b"GET /app/ HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
        "control in value": b"GET /app/ HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
        "name not a token": b"GET /app/ HTTP/1.1\r\nHost: a\r\nX Y: b\r\n\r\n",
        "space before colon": b"GET /app/ HTTP/1.1\r\nHost : a\r\n\r\n",
        "CL and TE": b"POST /app/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "two CL": b"POST /app/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
        b"Content-Length: 4\r\n\r\nabcd",
        "CL list": b"POST /app/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
        "TE gzip": b"POST /app/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        "chunk size overflow": b"POST /app/ HTTP/1.1\r\nHost: a\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\n",
        "HTTP/1.2": b"GET /app/ HTTP/1.2\r\nHost: a\r\n\r\n",
        "space in target": b"GET /a b/ HTTP/1.1\r\nHost: a\r\n\r\n",
    }

    def test_refused(self) -> None:
        """
        Each malformed request gets a 400, whole and split byte by byte.
        """
        for name, raw in self.BAD.items():
            for pieces in ([raw], [raw[i : i + 1] for i in range(len(raw))]):
                client = self.client()
                for piece in pieces:
                    if client.closed:
                        break
                    client.send(piece)
                self.assert_refused(client, b"400 ")
                self.assertIn(b"not valid HTTP/1.1", client.answer(), name)

    def test_valid_and_pipelined(self) -> None:
        """
        Valid requests, two in one packet and a chunked one, are served on
        one keep-alive connection.
        """
        client = self.client()
        client.send(
            GET
            + GET
            + b"POST /app/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        self.assertEqual(client.answer().count(b"HTTP/1.1 200 OK"), 3)
        self.assertTrue(client.answer().endswith(b"3"))
        self.assertFalse(client.closed)


class SizeLimitTests(ChannelTestCase):
    """
    Request line, header fields, head and body sizes.
    """

    def test_request_line(self) -> None:
        """
        A target over C{max_request_line} is a 414.
        """
        client = self.client()
        client.send(b"GET /app/" + b"a" * (8 * KiB) + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assert_refused(client, b"414 ")

    def test_one_header(self) -> None:
        """
        A header field over C{max_header} is a 431.
        """
        client = self.client()
        client.send(
            b"GET /app/ HTTP/1.1\r\nHost: a\r\nX: " + b"v" * (8 * KiB) + b"\r\n\r\n"
        )
        self.assert_refused(client, b"431 ")

    def test_header_count(self) -> None:
        """
        101 header fields are a 431; 100 are served.
        """
        fields = b"".join(b"X-%d: v\r\n" % i for i in range(99))
        client = self.client()
        client.send(b"GET /app/ HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n")
        self.assertTrue(client.answer().startswith(b"HTTP/1.1 200 "))
        self.echo.seen = 0
        client = self.client()
        client.send(b"GET /app/ HTTP/1.1\r\nHost: a\r\nX-x: v\r\n" + fields + b"\r\n")
        self.assert_refused(client, b"431 ")

    def test_whole_head(self) -> None:
        """
        A head over C{max_head}, in fields each under C{max_header}, is a 431.
        """
        fields = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 4000) for i in range(9))
        client = self.client()
        client.send(b"GET /app/ HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n")
        self.assert_refused(client, b"431 ")

    def test_endless_header_bounded(self) -> None:
        """
        A header that never ends is refused once the head passes the limit,
        not kept in memory while it grows.
        """
        client = self.client()
        client.send(b"GET /app/ HTTP/1.1\r\nHost: a\r\nX: ")
        for _ in range(100):
            if client.closed:
                break
            client.send(b"v" * 1024)
        self.assert_refused(client, b"431 ")

    def test_body_with_length_instead_of_continue(self) -> None:
        """
        A Content-Length over C{max_body} is a 413 sent instead of
        C{100 Continue}; the body is never read.
        """
        client = self.client()
        client.send(
            b"POST /app/ HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
            b"Content-Length: 1001\r\n\r\n"
        )
        self.assertNotIn(b"100 Continue", client.answer())
        self.assert_refused(client, b"413 ")

    def test_chunked_body_counted(self) -> None:
        """
        A chunked body is counted as it arrives: past C{max_body}, a 413.
        """
        client = self.client()
        client.send(
            b"POST /app/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(20):
            if client.closed:
                break
            client.send(b"64\r\n" + b"x" * 100 + b"\r\n")
        self.assert_refused(client, b"413 ")

    def test_route_max_body(self) -> None:
        """
        A route's own C{max_body} wins over the limits' one.
        """
        body = b"x" * 5000
        client = self.client()
        client.send(
            b"POST /big/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n" + body
        )
        self.assertTrue(client.answer().startswith(b"HTTP/1.1 200 "), client.answer())
        self.assertTrue(client.answer().endswith(b"5000"))


class DeadlineTests(ChannelTestCase):
    """
    Deadlines for the head, for pauses in a body, for idle connections and
    for clients that stop reading.
    """

    def test_slow_head(self) -> None:
        """
        A head sent one byte every 5 s is a 408 once 10 s have passed.
        """
        client = self.client()
        for byte in GET[:4]:
            client.send(bytes([byte]))
            self.reactor.advance(5)
            if client.closed:
                break
        self.assert_refused(client, b"408 ")
        self.assertIn(b"did not arrive in 10s", client.answer())

    def test_body_pause(self) -> None:
        """
        A body that stops for 60 s is a 408; one that keeps moving is not.
        """
        client = self.client()
        client.send(b"POST /app/ HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\n")
        for _ in range(4):
            self.reactor.advance(59)
            client.send(b"x" * 10)
        self.assertFalse(client.closed)
        self.reactor.advance(60)
        self.assert_refused(client, b"408 ")

    def test_idle_keep_alive(self) -> None:
        """
        A keep-alive connection idle for C{keepalive_timeout} is closed.
        """
        client = self.client()
        client.send(GET)
        self.reactor.advance(74)
        self.assertFalse(client.closed)
        self.reactor.advance(2)
        self.assertTrue(client.closed)

    def test_client_not_reading(self) -> None:
        """
        A client that takes nothing of a response for C{send_timeout} is
        dropped; one that takes some in time is not.
        """
        self.site.set_limits(Limits(keepalive_timeout=1000))  # not idle here
        client = self.client()
        channel = http_channel_of(client.protocol)
        channel.pauseProducing()
        self.reactor.advance(59)
        channel.resumeProducing()
        channel.pauseProducing()
        self.reactor.advance(59)
        self.assertFalse(client.closed)
        self.reactor.advance(2)
        self.assertTrue(client.closed)


class HeldDeadlineTests(ChannelTestCase):
    """
    A head or body deadline counts only the time in which the router reads
    and waits for the client: not while it answers an earlier request on
    the connection (pipelined requests are read as they arrive), nor
    while it holds reading because the client takes nothing of a response.
    """

    def test_pipelined_head_waits_its_turn(self) -> None:
        """
        Part of a pipelined head that arrived while the request before it
        takes longer than C{head_timeout} to answer is no 408: the rest is
        read, and served, once the first one is answered.
        """
        client = self.client()
        client.send(SLOW + GET[:20])
        self.reactor.advance(15)
        self.assertEqual(client.answer(), b"")
        self.assertFalse(client.closed)
        self.answer_slow()
        client.send(GET[20:])
        self.assertEqual(client.answer().count(b"HTTP/1.1 200 OK"), 2)
        self.assertNotIn(b"408", client.answer())
        self.assertEqual(self.echo.seen, 1)
        self.assertFalse(client.closed)

    def test_pipelined_head_late_after_its_turn(self) -> None:
        """
        A client that still does not finish that head once the router has
        turned to it gets its 408 C{head_timeout} later, after the first
        response.
        """
        client = self.client()
        client.send(SLOW + GET[:20])
        self.reactor.advance(15)
        self.answer_slow()
        self.reactor.advance(9)
        self.assertFalse(client.closed)
        self.reactor.advance(1.5)
        self.assertTrue(client.closed)
        answer = client.answer()
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK"), answer)
        self.assertIn(b"\r\n0\r\n\r\nHTTP/1.1 408 ", answer)

    def test_pipelined_body_waits_its_turn(self) -> None:
        """
        Part of a pipelined body that arrived while the request before it
        takes longer than C{body_timeout} to answer is no 408.
        """
        client = self.client()
        client.send(
            SLOW + b"POST /app/ HTTP/1.1\r\nHost: a\r\n"
            b"Content-Length: 50\r\n\r\n" + b"x" * 10
        )
        self.reactor.advance(70)
        self.assertFalse(client.closed)
        self.answer_slow()
        self.reactor.advance(59)
        client.send(b"x" * 40)
        self.assertEqual(client.answer().count(b"HTTP/1.1 200 OK"), 2)
        self.assertTrue(client.answer().endswith(b"50"))
        self.assertFalse(client.closed)

    def test_nothing_after_a_last_request(self) -> None:
        """
        Bytes read ahead after a request whose answer closes the connection
        (here the edge's 400 for a bad C{Host}, which llhttp lets through)
        are never read by Twisted: no 408 follows that answer, however long
        it takes to go out.
        """
        client = self.client()
        client.send(b"GET /app/ HTTP/1.1\r\nHost: a b\r\n\r\n" + GET[:20])
        self.assertTrue(client.answer().startswith(b"HTTP/1.1 400 "))
        self.assertTrue(client.closed)
        self.reactor.advance(30)
        self.assertNotIn(b"408", client.answer())

    def test_head_while_not_reading(self) -> None:
        """
        While the router holds reading because the client takes nothing of
        its response (back-pressure), the head's deadline stands still;
        the time read before and after counts.
        """
        client = self.client()
        channel = http_channel_of(client.protocol)
        client.send(GET + GET[:20])
        self.reactor.advance(4)
        channel.pauseProducing()  # the transport can take no more
        self.reactor.advance(30)
        self.assertFalse(client.closed)
        channel.resumeProducing()
        self.reactor.advance(5)
        self.assertFalse(client.closed)
        self.reactor.advance(1.5)
        self.assertTrue(client.closed)
        self.assertIn(b"HTTP/1.1 408 ", client.answer())

    def test_body_while_not_reading(self) -> None:
        """
        The same for a pause in a body: the time the router does not read
        is not the client's.
        """
        client = self.client()
        channel = http_channel_of(client.protocol)
        client.send(b"POST /app/ HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\n")
        channel.pauseProducing()
        self.reactor.advance(50)
        channel.resumeProducing()
        self.reactor.advance(50)
        self.assertFalse(client.closed)
        self.reactor.advance(11)
        self.assert_refused(client, b"408 ")

    def test_idle_timer_not_while_answering(self) -> None:
        """
        C{keepalive_timeout} never closes a connection whose request is
        still being answered, pipelined bytes arriving or not; it runs
        again once the response is done.
        """
        client = self.client()
        client.send(SLOW)
        self.reactor.advance(100)
        client.send(GET[:20])
        self.reactor.advance(5)
        client.send(GET[20:])
        self.reactor.advance(100)
        self.assertFalse(client.closed)
        self.answer_slow()
        self.assertEqual(client.answer().count(b"HTTP/1.1 200 OK"), 2)
        self.reactor.advance(74)
        self.assertFalse(client.closed)
        self.reactor.advance(2)
        self.assertTrue(client.closed)

    def test_idle_timer_not_while_delivering(self) -> None:
        """
        Nor while the client is still taking a response that the app has
        finished (C{send_timeout} runs then): the connection is idle once
        the response has gone out.
        """
        client = self.client()
        channel = http_channel_of(client.protocol)
        client.send(GET)
        channel.pauseProducing()
        self.reactor.advance(50)
        channel.resumeProducing()  # it took some
        channel.pauseProducing()
        self.reactor.advance(50)
        self.assertFalse(client.closed)
        channel.resumeProducing()  # and the rest
        self.reactor.advance(74)
        self.assertFalse(client.closed)
        self.reactor.advance(2)
        self.assertTrue(client.closed)


class ReadAheadTests(ChannelTestCase):
    """
    Pipelined requests are read as they arrive, and kept while the one
    before them is answered.
    """

    def test_kept_bytes_not_read_twice(self) -> None:
        """
        What was learned of each request read ahead (here: whether it has a
        header name with C{_}) stays with that request.
        """
        seen: list[Any] = []

        class Headers(Resource):
            isLeaf = True

            def render(self, request: Any) -> bytes:
                seen.append(request.requestHeaders.getRawHeaders(b"x_proto"))
                return b"ok"

        site = RouterSite(
            Router({"": {"/slow/": self.hold, "/h/": Headers()}}),
            self.reactor,
            None,
            Limits(),
        )
        client = Client(site)
        client.send(SLOW + b"GET /h/ HTTP/1.1\r\nHost: a\r\n\r\n")
        self.answer_slow()
        client.send(b"GET /h/ HTTP/1.1\r\nHost: a\r\nX_Proto: https\r\n\r\n")
        self.assertEqual(client.answer().count(b"HTTP/1.1 200 OK"), 3)
        self.assertEqual(seen, [None, None])

    def test_kept_bytes_keep_their_route(self) -> None:
        """
        Nor does a later request take the route, and the C{max_body}, of
        one read ahead: a body over C{/app/}'s limit is still a 413 after
        a pipelined request for C{/big/}.
        """
        client = self.client()
        client.send(SLOW + b"GET /big/ HTTP/1.1\r\nHost: a\r\n\r\n")
        self.answer_slow()
        client.send(b"POST /app/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n")
        self.assertIn(b"HTTP/1.1 413 ", client.answer())
        self.assertTrue(client.closed)

    def test_pipelined_kept_as_bytes(self) -> None:
        """
        What a client pipelines behind a request being answered is kept as
        bytes, not parsed into requests (which take far more memory): a
        64 KiB read of tiny requests makes a few dozen requests at most
        while the first is answered, and every one is answered in order
        afterwards.
        """
        client = self.client()
        channel = http_channel_of(client.protocol)
        count = 65536 // len(GET)
        client.send(SLOW + GET * count)
        self.assertLess(len(channel.requests), 64)
        self.answer_slow()
        self.assertEqual(client.answer().count(b"HTTP/1.1 200 OK"), count + 1)
        self.assertEqual(self.echo.seen, count)
        self.assertEqual(channel.requests, [])


class RefusedInTurnTests(ChannelTestCase):
    """
    A pipelined request that is refused is answered after the requests
    before it, never instead of them.
    """

    def test_after_a_slow_answer(self) -> None:
        """
        Garbage arriving while the request before it is being answered
        gets its 400 only after that answer.
        """
        client = self.client()
        client.send(SLOW)
        client.send(b"@@@@ garbage\r\n\r\n")
        self.assertEqual(client.answer(), b"")
        self.answer_slow()
        answer = client.answer()
        self.assertLess(answer.index(b"slow"), answer.index(b"HTTP/1.1 400 "))
        self.assertTrue(client.closed)

    def test_same_read(self) -> None:
        """
        Two valid requests and garbage in one read: both are answered, in
        order, then the 400; the garbage reaches no resource.
        """
        client = self.client()
        client.send(GET + GET + b"GET /app/ HTTP/1.1\r\nHost: a\r\n x\r\n\r\n")
        answer = client.answer()
        self.assertEqual(answer.count(b"HTTP/1.1 200 OK"), 2)
        self.assertGreater(answer.index(b"HTTP/1.1 400 "), answer.rindex(b"200 OK"))
        self.assertEqual(self.echo.seen, 2)
        self.assertTrue(client.closed)

    def test_body_over_limit_not_served(self) -> None:
        """
        A chunked body that passes C{max_body} in the read that also ends
        it gets a 413 and never reaches the resource.
        """
        client = self.client()
        chunk = b"x" * 1500
        client.send(
            b"POST /app/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
        )
        self.assert_refused(client, b"413")

    def test_upgrade_with_body(self) -> None:
        """
        A request asking to switch protocols with a body is refused: llhttp
        would read the body as the new protocol's bytes (a request hidden
        in it would be served next), where the request says it is a body.
        """
        client = self.client()
        inner = b"GET /app/ HTTP/1.1\r\nHost: a\r\nX_Proto: https\r\n\r\n"
        client.send(
            b"POST /app/ HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            b"Upgrade: foo\r\nContent-Length: %d\r\n\r\n%s" % (len(inner), inner)
        )
        self.assert_refused(client, b"400")


class ConnectionLimitTests(ChannelTestCase):
    """
    C{max_connections} open connections at once.
    """

    limits = Limits(max_connections=3)

    def test_refused_over_limit(self) -> None:
        """
        Past C{max_connections}, a new connection gets no protocol (closed
        at once); when one closes, a new one is taken again.
        """
        clients = [self.client() for _ in range(3)]
        self.assertTrue(all(c.protocol is not None for c in clients))
        self.assertIsNone(self.site.buildProtocol(IPv4Address("TCP", "1.2.3.4", 1)))
        self.assertEqual(self.site.refused_connections, 1)
        clients[0].protocol.connectionLost(None)
        self.assertIsNotNone(self.client().protocol)


class HeaderNamesTests(ChannelTestCase):
    """
    The edge's header checks behind strict parsing.
    """

    def test_underscore_names_dropped(self) -> None:
        """
        A name with C{_} is dropped (the channel tells the request whether
        to look), and the others are kept.
        """
        seen: list[Any] = []

        class Headers(Resource):
            isLeaf = True

            def render(self, request: Any) -> bytes:
                seen.append(request.requestHeaders)
                return b"ok"

        site = RouterSite(
            Router({"": {"/h/": Headers()}}), self.reactor, None, Limits()
        )
        client = Client(site)
        client.send(
            b"GET /h/ HTTP/1.1\r\nHost: a\r\nX_Forwarded_Proto: https\r\n"
            b"X-Ok: 1\r\n\r\n"
            b"GET /h/ HTTP/1.1\r\nHost: a\r\nX-Ok: 2\r\n\r\n"
        )
        self.assertEqual(client.answer().count(b"200 OK"), 2)
        first, second = seen
        self.assertFalse(first.hasHeader(b"x_forwarded_proto"))
        self.assertEqual(first.getRawHeaders(b"x-ok"), [b"1"])
        self.assertEqual(second.getRawHeaders(b"x-ok"), [b"2"])
