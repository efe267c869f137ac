"""
In-memory tests of L{txrouter.proxy.ProxyResource} and
L{txrouter.upstream.UpstreamGroup}.

The client side is a real C{Site} reading raw request bytes from a
C{StringTransport}; each upstream is a L{FakeEndpoint} whose connections are
C{StringTransport}s: the test reads what the proxy wrote upstream and writes
raw response bytes back. The reactor is a C{MemoryReactorClock}: no sockets,
no real time.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest
from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ISSLTransport, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from txrouter.bulkhead import Bulkhead, BulkheadResource
from txrouter.errorpage import error_page
from txrouter.forwarding import TrustedProxies
from txrouter.proxy import ProxyResource, ProxySettings
from txrouter.proxyclient import ProxyClient
from txrouter.upstream import (
    DOWN_FOR,
    STUCK_AFTER,
    WARN_EVERY,
    Upstream,
    UpstreamGroup,
    endpoint_for,
)

pytestmark = pytest.mark.unit

ROUTE = "routes.yaml:7: routes['/api/']"
PEER = IPv4Address("TCP", "203.0.113.7", 40000)


class FakeTransport(StringTransport):
    """
    A C{StringTransport} that closes like a TCP transport: the protocol
    hears C{connectionLost} on the next reactor turn, and C{stopProducing}
    closes the connection.

    @ivar aborted: whether C{abortConnection} was called.
    """

    def __init__(self, clock: MemoryReactorClock, peer: Any = None) -> None:
        super().__init__(peerAddress=peer)
        self.clock = clock
        self.protocol: Any = None
        self.aborted = False

    def loseConnection(self) -> None:
        self._close(ConnectionDone())

    def abortConnection(self) -> None:
        self.aborted = True
        self._close(ConnectionAborted())

    def stopProducing(self) -> None:
        super().stopProducing()
        self.loseConnection()

    def _close(self, reason: Exception) -> None:
        if not self.disconnecting:
            self.disconnecting = True
            self.clock.callLater(0, self.protocol.connectionLost, Failure(reason))


@implementer(ISSLTransport)
class TLSFakeTransport(FakeTransport):
    """
    A L{FakeTransport} that says it is TLS, so C{request.isSecure()} holds.
    """

    def getPeerCertificate(self) -> None:
        return None

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


class UpstreamConnection:
    """
    One connection the proxy opened to a L{FakeEndpoint}.
    """

    def __init__(self, protocol: Any, transport: FakeTransport) -> None:
        self.protocol = protocol
        self.transport = transport

    def received(self) -> bytes:
        """
        Everything the proxy wrote on this connection.
        """
        return self.transport.value()

    def respond(self, data: bytes) -> None:
        """
        Deliver raw response bytes to the proxy.
        """
        self.protocol.dataReceived(data)

    def close(self, reason: Exception) -> None:
        """
        The upstream closes the connection (cleanly or not).
        """
        self.transport.disconnecting = True
        self.protocol.connectionLost(Failure(reason))


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    An upstream's endpoint: each C{connect} succeeds at once with an
    in-memory connection, fails with the exception in C{refuse} when it is
    set, or stays pending (a L{Deferred} in C{pending}) when C{hold} is set.
    """

    def __init__(self, clock: MemoryReactorClock) -> None:
        self.clock = clock
        self.refuse: Exception | None = None
        self.hold = False
        self.attempts = 0
        self.connections: list[UpstreamConnection] = []
        self.pending: list[Deferred[Any]] = []
        self.cancelled = 0

    def connect(self, factory: Factory) -> Deferred[Any]:
        self.attempts += 1
        if self.refuse is not None:
            return fail(self.refuse)
        if self.hold:

            def cancel(d: Deferred[Any]) -> None:
                self.cancelled += 1

            d: Deferred[Any] = Deferred(cancel)
            self.pending.append(d)
            return d
        protocol = factory.buildProtocol(None)
        transport = FakeTransport(self.clock)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.connections.append(UpstreamConnection(protocol, transport))
        return succeed(protocol)


class RecordingRequest(Request):
    """
    A real server C{Request} that keeps itself in its site's C{requests}.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.channel.site.requests.append(self)
        self.producers_registered = 0

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producers_registered += 1
        super().registerProducer(producer, streaming)


class Client:
    """
    One client connection to the proxy's site.
    """

    def __init__(self, world: World, peer: Any, secure: bool = False) -> None:
        self.channel = world.site.buildProtocol(peer)
        kind = TLSFakeTransport if secure else FakeTransport
        self.transport = kind(world.reactor, peer)
        self.transport.protocol = self.channel
        self.channel.makeConnection(self.transport)
        self.world = world

    def send(self, data: bytes) -> None:
        """
        Raw request bytes from the client; then run what is due now.
        """
        self.channel.dataReceived(data)
        self.world.reactor.advance(0)

    def response(self) -> tuple[bytes, dict[bytes, list[bytes]], bytes]:
        """
        The response written so far: status line, headers (lower-case
        names, repeated ones in order) and body (chunked framing removed).
        """
        return parse_response(self.transport.value())

    def disconnect(self) -> None:
        """
        The client goes away.
        """
        self.transport.disconnecting = True
        self.channel.connectionLost(Failure(ConnectionLost("client went away")))
        self.world.reactor.advance(0)


class World:
    """
    A L{ProxyResource} at C{/api/} on a real C{Site}, with one
    L{FakeEndpoint} upstream per name, all in memory.

    Request bodies are written upstream by the client's cooperator, which
    runs on this world's clock.
    """

    def __init__(
        self,
        test: SynchronousTestCase,
        names: tuple[str, ...] = ("a",),
        base: bytes = b"/v1/",
        timeout: float = 60.0,
        preserve_host: bool = True,
        trusted: tuple[str, ...] = (),
        prefix: bytes | None = b"api",
        stuck: Callable[[Upstream], None] | None = None,
    ) -> None:
        self.reactor = MemoryReactorClock()
        self.endpoints = {name: FakeEndpoint(self.reactor) for name in names}
        self.upstreams = {
            name: Upstream(
                f"http://{name}.internal:8080{base.decode()}",
                endpoint,
                f"{name}.internal:8080".encode(),
                base,
            )
            for name, endpoint in self.endpoints.items()
        }
        self.group = UpstreamGroup(self.reactor, list(self.upstreams.values()), stuck)
        self.settings = ProxySettings(
            name=ROUTE,
            timeout=timeout,
            preserve_host=preserve_host,
            trusted=TrustedProxies(trusted),
            prefix=b"/" + prefix if prefix else b"",
        )
        self.client = ProxyClient(self.reactor)
        self.resource = ProxyResource(
            self.reactor, self.client, self.group, self.settings
        )
        if prefix is None:
            root: Resource = self.resource
        else:
            root = Resource()
            root.putChild(prefix, self.resource)
        self.site = Site(root, requestFactory=RecordingRequest, reactor=self.reactor)
        self.site.requests = []

    def connect(self, peer: Any = PEER, secure: bool = False) -> Client:
        """
        A new client connection from C{peer}, over TLS if C{secure}.
        """
        return Client(self, peer, secure)

    def request(self, data: bytes, peer: Any = PEER, secure: bool = False) -> Client:
        """
        A new client connection that sends C{data}.
        """
        client = self.connect(peer, secure)
        client.send(data)
        return client

    def upstream(self, name: str = "a", index: int = 0) -> UpstreamConnection:
        """
        Connection C{index} the proxy opened to upstream C{name}.
        """
        return self.endpoints[name].connections[index]

    def in_flight(self) -> dict[str, int]:
        """
        Each upstream's count of requests in flight.
        """
        return {name: u.in_flight for name, u in self.upstreams.items()}


def get(path: bytes, *headers: bytes, method: bytes = b"GET") -> bytes:
    """
    Raw bytes of a bodiless HTTP/1.1 request with a C{Host}.
    """
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: example.com", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def parse_response(raw: bytes) -> tuple[bytes, dict[bytes, list[bytes]], bytes]:
    """
    Split raw response bytes into status line, headers and body, removing
    chunked framing (a missing last chunk just ends the body).
    """
    head, _, rest = raw.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers: dict[bytes, list[bytes]] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if headers.get(b"transfer-encoding") != [b"chunked"]:
        return status, headers, rest
    body = b""
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        body, rest = body + rest[:size], rest[size + 2 :]
        if size == 0:
            break
    return status, headers, body


def parse_request(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """
    Split the raw bytes a proxy sent upstream into request line, header
    lines in order (lower-case names) and body.
    """
    head, _, body = raw.partition(b"\r\n\r\n")
    line, *lines = head.split(b"\r\n")
    headers = []
    for header in lines:
        name, _, value = header.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return line, headers, body


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """
    The values of C{name} among parsed request headers.
    """
    return [v for n, v in headers if n == name]


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class RequestTests(SynchronousTestCase):
    """
    What the proxy writes upstream: request line, headers and body.
    """

    PATHS = [
        # client URI, upstream request target (route /api/, base /v1/)
        (b"/api/", b"/v1/"),
        (b"/api/x", b"/v1/x"),
        (b"/api/x/y/?q=1&r=%20", b"/v1/x/y/?q=1&r=%20"),
        (b"/api/a/../b", b"/v1/b"),
        (b"/api/../../etc/passwd", b"/v1/etc/passwd"),
        (b"/api/%2e%2e/%2E%2e/x", b"/v1/x"),
        (b"/api/a%20b/c%2Fd", b"/v1/a%20b/c%2Fd"),
        (b"/api//x", b"/v1//x"),
    ]

    def test_path_mapping(self) -> None:
        """
        The path after the route prefix lands under the upstream's base,
        with the query and encoding kept and dot-segments resolved.
        """
        for uri, target in self.PATHS:
            world = World(self)
            world.request(get(uri))
            line, _, _ = parse_request(world.upstream().received())
            self.assertEqual(line, b"GET " + target + b" HTTP/1.1", f"for {uri!r}")

    def test_route_at_root(self) -> None:
        """
        A proxy at C{/} passes the whole path on and sends no
        C{X-Forwarded-Prefix}.
        """
        world = World(self, prefix=None, base=b"/")
        world.request(get(b"/x/y?z"))
        line, headers, _ = parse_request(world.upstream().received())
        self.assertEqual(line, b"GET /x/y?z HTTP/1.1")
        self.assertEqual(header(headers, b"x-forwarded-prefix"), [])

    def test_headers(self) -> None:
        """
        The client's C{Host} is passed on, forwarding headers are the
        router's own, and hop-by-hop headers are dropped while repeated ones
        stay repeated.
        """
        world = World(self)
        world.request(
            get(
                b"/api/x",
                b"X-Forwarded-For: 6.6.6.6",
                b"Forwarded: for=6.6.6.6",
                b"Connection: keep-alive, X-Hop",
                b"X-Hop: 1",
                b"Keep-Alive: timeout=5",
                b"TE: trailers",
                b"Upgrade: websocket",
                b"Proxy-Connection: keep-alive",
                b"Cookie: a=1",
                b"Cookie: b=2",
                b"Accept: text/html",
            )
        )
        _, headers, _ = parse_request(world.upstream().received())
        self.assertEqual(
            sorted(headers),
            sorted(
                [
                    (b"host", b"example.com"),
                    (b"cookie", b"a=1"),
                    (b"cookie", b"b=2"),
                    (b"accept", b"text/html"),
                    (b"x-forwarded-for", b"203.0.113.7"),
                    (b"x-forwarded-proto", b"http"),
                    (b"x-forwarded-host", b"example.com"),
                    (b"x-forwarded-prefix", b"/api"),
                    (b"forwarded", b'for=203.0.113.7;proto=http;host="example.com"'),
                ]
            ),
        )

    def test_upstream_host(self) -> None:
        """
        With C{preserve_host: false} the upstream's own C{Host} is sent and
        the client's goes to C{X-Forwarded-Host}.
        """
        world = World(self, preserve_host=False)
        world.request(get(b"/api/x"))
        _, headers, _ = parse_request(world.upstream().received())
        self.assertEqual(header(headers, b"host"), [b"a.internal:8080"])
        self.assertEqual(header(headers, b"x-forwarded-host"), [b"example.com"])

    def test_trusted_peer(self) -> None:
        """
        A peer in C{trusted_proxies} has its C{X-Forwarded-For} extended.
        """
        world = World(self, trusted=("10.0.0.0/8",))
        world.request(
            get(b"/api/x", b"X-Forwarded-For: 6.6.6.6"),
            peer=IPv4Address("TCP", "10.0.0.1", 40000),
        )
        _, headers, _ = parse_request(world.upstream().received())
        self.assertEqual(header(headers, b"x-forwarded-for"), [b"6.6.6.6, 10.0.0.1"])

    def test_client_addresses(self) -> None:
        """
        IPv6 and UNIX-socket clients are named as RFC 7239 asks.
        """
        cases = [
            (IPv6Address("TCP", "::1", 40000), [b"::1"], b'for="[::1]"'),
            (UNIXAddress(None), [], b"for=unknown"),
        ]
        for peer, xff, node in cases:
            world = World(self)
            world.request(get(b"/api/x"), peer=peer)
            _, headers, _ = parse_request(world.upstream().received())
            self.assertEqual(
                (header(headers, b"x-forwarded-for"), header(headers, b"forwarded")),
                (xff, [node + b';proto=http;host="example.com"']),
                f"for {peer!r}",
            )

    def test_secure_client(self) -> None:
        """
        A client on TLS is forwarded as C{https}.
        """
        world = World(self)
        world.request(get(b"/api/x"), secure=True)
        _, headers, _ = parse_request(world.upstream().received())
        self.assertEqual(header(headers, b"x-forwarded-proto"), [b"https"])
        self.assertEqual(
            header(headers, b"forwarded"),
            [b'for=203.0.113.7;proto=https;host="example.com"'],
        )

    FRAMING = [
        # request bytes after the request line, expected (content-length,
        # transfer-encoding, body) upstream
        (
            b"POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
            ([b"3"], [], b"abc"),
        ),
        (
            b"POST /api/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            ([b"5"], [], b"abcde"),
        ),
        (
            b"POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
            ([b"0"], [], b""),
        ),
        (b"POST /api/x HTTP/1.1\r\nHost: h\r\n\r\n", ([b"0"], [], b"")),
        (b"PUT /api/x HTTP/1.1\r\nHost: h\r\n\r\n", ([b"0"], [], b"")),
        (b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n", ([], [], b"")),
        (b"DELETE /api/x HTTP/1.1\r\nHost: h\r\n\r\n", ([], [], b"")),
        (
            b"DELETE /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nid",
            ([b"2"], [], b"id"),
        ),
    ]

    def test_body_reframed(self) -> None:
        """
        The body goes upstream with C{Content-Length}, never the client's
        chunked framing, and an empty POST or PUT says C{Content-Length: 0}.
        """
        for raw, expected in self.FRAMING:
            world = World(self)
            world.request(raw)
            _, headers, body = parse_request(world.upstream().received())
            self.assertEqual(
                (
                    header(headers, b"content-length"),
                    header(headers, b"transfer-encoding"),
                    body,
                ),
                expected,
                f"for {raw!r}",
            )

    def test_large_body(self) -> None:
        """
        A body bigger than Twisted's in-memory limit (kept in a temporary
        file) arrives whole.
        """
        body = bytes(range(256)) * 4096
        world = World(self)
        world.request(
            b"PUT /api/blob HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        transport = world.upstream().transport
        # A large body is streamed by a pull producer, which a real
        # transport drives as its buffer drains; drive it here.
        while transport.producer is not None:
            transport.producer.resumeProducing()
        _, headers, sent = parse_request(world.upstream().received())
        self.assertEqual(header(headers, b"content-length"), [b"%d" % len(body)])
        self.assertEqual(sent, body)

    def test_expect_continue_answered_here(self) -> None:
        """
        C{Expect: 100-continue} is answered by the router and not sent on.
        """
        world = World(self)
        client = world.connect()
        client.send(
            b"POST /api/x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
            b"Content-Length: 2\r\n\r\n"
        )
        self.assertEqual(client.transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        client.send(b"hi")
        _, headers, body = parse_request(world.upstream().received())
        self.assertEqual(header(headers, b"expect"), [])
        self.assertEqual(body, b"hi")


class ResponseTests(SynchronousTestCase):
    """
    What the proxy relays to the client.
    """

    def test_relayed(self) -> None:
        """
        Status, phrase, end-to-end headers and body are relayed, with the
        upstream's C{Content-Length} (not chunked), two C{Set-Cookie} kept,
        and hop-by-hop headers and the upstream's C{Server} left out.
        """
        world = World(self)
        client = world.request(get(b"/api/x"))
        world.upstream().respond(
            b"HTTP/1.1 201 Made It\r\n"
            b"Content-Length: 5\r\n"
            b"Content-Type: text/plain\r\n"
            b"Set-Cookie: a=1\r\n"
            b"Set-Cookie: b=2\r\n"
            b"Connection: keep-alive\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"Server: upstream/1.0\r\n"
            b"\r\n"
            b"hello"
        )
        status, headers, body = client.response()
        self.assertEqual(status, b"HTTP/1.1 201 Made It")
        self.assertEqual(body, b"hello")
        self.assertEqual(headers[b"content-length"], [b"5"])
        self.assertEqual(headers[b"content-type"], [b"text/plain"])
        self.assertEqual(headers[b"set-cookie"], [b"a=1", b"b=2"])
        for name in (b"transfer-encoding", b"keep-alive", b"connection"):
            self.assertNotIn(name, headers)
        self.assertNotEqual(headers[b"server"], [b"upstream/1.0"])
        self.assertEqual(world.site.requests[0].finished, 1)
        self.assertEqual(world.in_flight(), {"a": 0})

    def test_connection_listed_headers_dropped(self) -> None:
        """
        Headers the upstream names in its C{Connection} header are hop-by-hop
        and do not reach the client.
        """
        world = World(self)
        client = world.request(get(b"/api/x"))
        world.upstream().respond(
            b"HTTP/1.1 200 OK\r\n"
            b"Connection: keep-alive, X-Internal-Token\r\n"
            b"X-Internal-Token: secret\r\n"
            b"X-Public: 1\r\n"
            b"Content-Length: 2\r\n"
            b"\r\n"
            b"ok"
        )
        _, headers, _ = client.response()
        self.assertEqual(headers[b"x-public"], [b"1"])
        self.assertNotIn(b"x-internal-token", headers)

    def test_no_content_type_added(self) -> None:
        """
        A response the upstream sent without C{Content-Type} reaches the
        client without one: the proxy does not label it C{text/html}.
        """
        problems = []
        for method, response in [
            (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndata"),
            (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"),
        ]:
            world = World(self)
            client = world.request(get(b"/api/x", method=method))
            world.upstream().respond(response)
            _, headers, _ = client.response()
            if b"content-type" in headers:
                problems.append((method, response, headers[b"content-type"]))
        self.assertEqual(problems, [])

    def test_streamed(self) -> None:
        """
        A chunked upstream body reaches the client piece by piece, before
        the upstream has finished.
        """
        world = World(self)
        client = world.request(get(b"/api/x"))
        world.upstream().respond(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
        )
        status, headers, body = client.response()
        self.assertEqual((status, body), (b"HTTP/1.1 200 OK", b"first"))
        self.assertEqual(headers[b"transfer-encoding"], [b"chunked"])
        self.assertNotIn(b"content-length", headers)
        self.assertFalse(world.site.requests[0].finished)
        world.upstream().respond(b"6\r\nsecond\r\n0\r\n\r\n")
        _, _, body = client.response()
        self.assertEqual(body, b"firstsecond")
        self.assertTrue(client.transport.value().endswith(b"0\r\n\r\n"))
        self.assertEqual(world.site.requests[0].finished, 1)

    def test_read_until_close(self) -> None:
        """
        A body delimited by the upstream closing cleanly is relayed whole
        and the client's response finished.
        """
        world = World(self)
        client = world.request(get(b"/api/x"))
        world.upstream().respond(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall")
        world.upstream().close(ConnectionDone())
        _, _, body = client.response()
        self.assertEqual(body, b"all")
        self.assertEqual(world.site.requests[0].finished, 1)
        self.assertFalse(client.transport.aborted)

    NO_BODY = [
        # method, upstream response, expected client Content-Length
        (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n", None),
        (b"GET", b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n', None),
        # A 304 may carry the 200's length (RFC 9110 8.6): passed on as sent.
        (
            b"GET",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n",
            [b"1234"],
        ),
        (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", [b"10"]),
    ]

    def test_no_body_responses(self) -> None:
        """
        A 204 or 304 gets no C{Content-Length: 0} of ours (RFC 9110 8.6
        forbids it on a 204, and on a 304 unless it is the 200's length, so
        the upstream's own is passed on), and a HEAD keeps the upstream's
        length.
        """
        problems = []
        for method, response, expected in self.NO_BODY:
            world = World(self)
            client = world.request(get(b"/api/x", method=method))
            world.upstream().respond(response)
            status, headers, body = client.response()
            got = (headers.get(b"content-length"), body)
            if got != (expected, b""):
                problems.append((method, status, got))
            self.assertEqual(world.site.requests[0].finished, 1)
        self.assertEqual(problems, [])

    def test_connection_reused(self) -> None:
        """
        Sequential requests share one pooled upstream connection.
        """
        world = World(self)
        for n in range(3):
            client = world.request(get(b"/api/%d" % n))
            world.upstream().respond(OK)
            _, _, body = client.response()
            self.assertEqual(body, b"ok")
        self.assertEqual(len(world.endpoints["a"].connections), 1)
        requests = world.upstream().received().count(b" HTTP/1.1\r\n")
        self.assertEqual(requests, 3)


class FailureTests(SynchronousTestCase):
    """
    Refused, slow, malformed and broken upstreams.
    """

    def test_refused_retried(self) -> None:
        """
        A refused first upstream is marked down and the request is sent to
        the next; the refused one is skipped until C{DOWN_FOR} has passed.
        """
        world = World(self, names=("a", "b"))
        world.endpoints["a"].refuse = error.ConnectionRefusedError()
        client = world.request(get(b"/api/x"))
        world.upstream("b").respond(OK)
        self.assertEqual(client.response()[2], b"ok")
        self.assertEqual(world.endpoints["a"].attempts, 1)
        a, b = world.upstreams["a"], world.upstreams["b"]
        self.assertEqual(a.down_until, DOWN_FOR)
        for _ in range(3):
            self.assertIs(world.group.choose(), b)
        world.reactor.advance(DOWN_FOR - 0.5)
        self.assertIs(world.group.choose(), b)
        world.reactor.advance(0.5)
        self.assertEqual({world.group.choose() for _ in range(2)}, {a, b})
        self.assertEqual(world.in_flight(), {"a": 0, "b": 0})

    CONNECT_FAILURES = [
        error.ConnectionRefusedError(),
        error.TCPTimedOutError(),
        error.TimeoutError(),
        error.DNSLookupError(),
        error.NoRouteError(),
        error.ConnectError(),
    ]

    def test_connect_failures_retried(self) -> None:
        """
        Each kind of failure to connect marks the upstream down and sends
        the request, even a POST (nothing was sent yet), to the next one.
        """
        for failure in self.CONNECT_FAILURES:
            world = World(self, names=("a", "b"))
            world.endpoints["a"].refuse = failure
            client = world.request(
                b"POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
            )
            line, _, body = parse_request(world.upstream("b").received())
            why = f"for {failure!r}"
            self.assertEqual((line, body), (b"POST /v1/x HTTP/1.1", b"hi"), why)
            world.upstream("b").respond(OK)
            self.assertEqual(client.response()[2], b"ok", why)
            self.assertEqual(world.upstreams["a"].down_until, DOWN_FOR, why)

    def test_all_refused(self) -> None:
        """
        When every upstream refuses, each is tried once and the client gets
        a short plain 502 page.
        """
        world = World(self, names=("a", "b"))
        world.endpoints["a"].refuse = error.ConnectionRefusedError()
        world.endpoints["b"].refuse = error.ConnectionRefusedError()
        client = world.request(get(b"/api/x"))
        status, headers, body = client.response()
        self.assertEqual(status, b"HTTP/1.1 502 Bad Gateway")
        self.assertEqual(headers[b"content-type"], [b"text/plain; charset=utf-8"])
        self.assertEqual(headers[b"content-length"], [b"%d" % len(body)])
        self.assertIn(b"could not be reached", body)
        self.assertEqual(
            (world.endpoints["a"].attempts, world.endpoints["b"].attempts), (1, 1)
        )
        self.assertEqual(world.in_flight(), {"a": 0, "b": 0})

    def test_timeout(self) -> None:
        """
        No response within C{timeout}: 504 for the client and the upstream
        connection aborted.
        """
        world = World(self, timeout=30)
        client = world.request(get(b"/api/x"))
        world.reactor.advance(29.9)
        self.assertEqual(client.transport.value(), b"")
        world.reactor.advance(0.1)
        status, _, body = client.response()
        self.assertTrue(status.startswith(b"HTTP/1.1 504 "), status)
        self.assertIn(b"did not answer in time", body)
        self.assertTrue(world.upstream().transport.aborted)
        self.assertEqual(world.in_flight(), {"a": 0})
        self.assertEqual(world.upstreams["a"].down_until, 0.0)

    def test_stuck_after_timeouts_in_a_row(self) -> None:
        """
        An upstream that leaves C{STUCK_AFTER} requests in a row unanswered
        is reported stuck (a worker is then restarted); an answer in
        between starts the count again.
        """
        stuck: list[Upstream] = []
        world = World(self, timeout=30, stuck=stuck.append)
        for _ in range(STUCK_AFTER - 1):
            world.request(get(b"/api/x"))
            world.reactor.advance(30)
        client = world.request(get(b"/api/x"))
        world.upstream(index=STUCK_AFTER - 1).respond(OK)
        self.assertEqual(client.response()[2], b"ok")
        for _ in range(STUCK_AFTER - 1):
            world.request(get(b"/api/x"))
            world.reactor.advance(30)
        self.assertEqual(stuck, [])
        world.request(get(b"/api/x"))
        world.reactor.advance(30)
        self.assertEqual(stuck, [world.upstreams["a"]])
        self.assertEqual(world.upstreams["a"].timeouts, 0)

    def test_warnings_throttled(self) -> None:
        """
        An upstream that refuses every request gets at most one warning a
        second; the next one says how many were left out.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        world = World(self)
        world.endpoints["a"].refuse = error.ConnectionRefusedError()
        for _ in range(5):
            world.request(get(b"/api/x"))
        world.reactor.advance(WARN_EVERY)
        world.request(get(b"/api/x"))
        warned = [
            formatEvent(e)
            for e in events
            if "cannot connect" in e.get("log_format", "")
        ]
        self.assertEqual(len(warned), 2, warned)
        self.assertIn("(4 more such line(s) left out)", warned[1])

    def test_timeout_starts_after_upload(self) -> None:
        """
        An upload that takes longer than C{timeout} but keeps moving is not
        timed out; the wait for the answer is timed from its last byte.
        """
        body = bytes(range(256)) * 4096  # 1 MiB: streamed by a producer
        world = World(self, timeout=30)
        client = world.request(
            b"PUT /api/blob HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        transport = world.upstream().transport
        while transport.producer is not None:
            world.reactor.advance(20)  # a slow link: 20 s between pieces
            transport.producer.resumeProducing()
        self.assertEqual(client.transport.value(), b"")
        world.reactor.advance(29.9)
        self.assertEqual(client.transport.value(), b"")
        world.reactor.advance(0.1)
        status, _, _ = client.response()
        self.assertTrue(status.startswith(b"HTTP/1.1 504 "), status)

    def test_slow_body_within_timeout(self) -> None:
        """
        Once the headers arrived, C{timeout} is the longest wait between two
        reads of the body: a body that keeps coming takes as long as it
        takes.
        """
        world = World(self, timeout=30)
        client = world.request(get(b"/api/x"))
        world.upstream().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\na")
        for piece in (b"b", b"c", b"d"):
            world.reactor.advance(20)
            world.upstream().respond(piece)
        status, _, body = client.response()
        self.assertEqual((status, body), (b"HTTP/1.1 200 OK", b"abcd"))
        self.assertFalse(world.upstream().transport.aborted)
        timers = [
            call
            for call in world.reactor.getDelayedCalls()
            if getattr(call.func, "__name__", "") in ("_stalled", "_time_out")
        ]
        self.assertEqual(timers, [])

    def test_stalled_body(self) -> None:
        """
        A body that stops for C{timeout} seconds has both connections
        aborted (the status was already sent, so no 504 is possible), with
        a log line naming the route and upstream.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        world = World(self, timeout=30)
        client = world.request(get(b"/api/x"))
        world.upstream().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        world.reactor.advance(29)
        self.assertFalse(client.transport.aborted)
        world.reactor.advance(1)
        self.assertTrue(client.transport.aborted)
        self.assertTrue(world.upstream().transport.aborted)
        self.assertEqual(client.response()[2], b"ab")
        self.assertEqual(world.in_flight(), {"a": 0})
        messages = [formatEvent(e) for e in events]
        self.assertTrue(
            any("no data for 30" in m and "failed" in m for m in messages), messages
        )

    def test_paused_client_is_not_a_stall(self) -> None:
        """
        While our own client is too slow to take more, the upstream is not
        waited for, so its silence does not count.
        """
        world = World(self, timeout=30)
        client = world.request(get(b"/api/x"))
        world.upstream().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        client.transport.producer.pauseProducing()
        world.reactor.advance(90)
        self.assertFalse(client.transport.aborted)
        client.transport.producer.resumeProducing()
        world.upstream().respond(b"cd")
        self.assertEqual(client.response()[2], b"abcd")

    MALFORMED = [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
    ]

    def test_malformed(self) -> None:
        """
        An unparseable response is a 502 for the client.
        """
        for raw in self.MALFORMED:
            world = World(self)
            client = world.request(get(b"/api/x"))
            world.upstream().respond(raw)
            world.reactor.advance(0)
            status, _, _ = client.response()
            self.assertEqual(status, b"HTTP/1.1 502 Bad Gateway", f"for {raw!r}")
            self.assertEqual(world.in_flight(), {"a": 0}, f"for {raw!r}")

    def test_closed_before_response(self) -> None:
        """
        An upstream that closes a fresh connection without answering is a
        502 for the client.
        """
        for reason in (ConnectionDone(), ConnectionLost()):
            world = World(self)
            client = world.request(get(b"/api/x"))
            world.upstream().close(reason)
            status, _, _ = client.response()
            self.assertEqual(status, b"HTTP/1.1 502 Bad Gateway", f"for {reason!r}")

    BROKEN = [
        # upstream response start, how the connection ends
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcd", ConnectionLost()),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcd", ConnectionDone()),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
            ConnectionDone(),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
            ConnectionLost(),
        ),
    ]

    def test_broken_mid_body(self) -> None:
        """
        An upstream that breaks off mid-body has the client connection
        aborted, after what had arrived, and the request never finished.
        """
        for start, reason in self.BROKEN:
            world = World(self)
            client = world.request(get(b"/api/x"))
            world.upstream().respond(start)
            self.assertFalse(client.transport.aborted)
            world.upstream().close(reason)
            why = f"for {start!r} then {reason!r}"
            self.assertTrue(client.transport.aborted, why)
            self.assertEqual(client.response()[2], b"abcd", why)
            self.assertFalse(world.site.requests[0].finished, why)
            self.assertFalse(client.transport.value().endswith(b"0\r\n\r\n"), why)
            self.assertEqual(world.in_flight(), {"a": 0}, why)

    def test_unsafe_path(self) -> None:
        """
        A path whose dot-segment hides a separator is a 400 and no upstream
        is contacted.
        """
        for uri in (b"/api/..%2fadmin", b"/api/a/%2e%2e%2f", b"/api/..%5c"):
            world = World(self)
            client = world.request(get(uri))
            status, _, body = client.response()
            self.assertEqual(status, b"HTTP/1.1 400 Bad Request", f"for {uri!r}")
            self.assertIn(b"path is not valid", body)
            self.assertEqual(world.endpoints["a"].attempts, 0, f"for {uri!r}")
            self.assertEqual(world.in_flight(), {"a": 0})


class BulkheadTests(SynchronousTestCase):
    """
    A proxy route behind a bulkhead holds a slot from the moment it is
    admitted until its client is answered or gone.
    """

    def test_slot_held_until_answered(self) -> None:
        """
        With one slot, a second request waits until the first is answered,
        then goes upstream; a client gone frees its slot too.
        """
        world = World(self)
        bulkhead = Bulkhead(world.reactor, ROUTE, 1, 1, 30.0)
        world.site.resource.putChild(
            b"limited", BulkheadResource(world.resource, bulkhead)
        )
        first = world.request(get(b"/limited/1"))
        second = world.request(get(b"/limited/2"))
        self.assertEqual((bulkhead.active, bulkhead.waiting), (1, 1))
        self.assertEqual(len(world.endpoints["a"].connections), 1)
        world.upstream().respond(OK)
        self.assertEqual(first.response()[2], b"ok")
        self.assertEqual((bulkhead.active, bulkhead.waiting), (1, 0))
        self.assertIn(b"GET /v1/2 HTTP/1.1", world.upstream().received())
        second.disconnect()
        self.assertEqual((bulkhead.active, bulkhead.waiting), (0, 0))
        self.assertEqual(world.in_flight(), {"a": 0})


class ClientGoneTests(SynchronousTestCase):
    """
    A client that goes away stops the work done for it upstream.
    """

    def test_while_connecting(self) -> None:
        """
        Gone while the upstream connection is being made: the connection
        attempt is cancelled.
        """
        world = World(self)
        world.endpoints["a"].hold = True
        client = world.request(get(b"/api/x"))
        self.assertEqual(world.endpoints["a"].attempts, 1)
        client.disconnect()
        self.assertEqual(world.endpoints["a"].cancelled, 1)
        self.assertEqual(world.in_flight(), {"a": 0})
        self.assertEqual(client.transport.value(), b"")

    def test_before_response(self) -> None:
        """
        Gone after the request was sent: the upstream request is cancelled
        and its connection dropped; no error page is attempted.
        """
        world = World(self)
        client = world.request(get(b"/api/x"))
        client.disconnect()
        self.assertTrue(world.upstream().transport.aborted)
        self.assertEqual(world.in_flight(), {"a": 0})
        self.assertEqual(client.transport.value(), b"")
        timers = [
            call
            for call in world.reactor.getDelayedCalls()
            if getattr(call.func, "__name__", "") in ("_stalled", "_time_out")
        ]
        self.assertEqual(timers, [])

    def test_during_body(self) -> None:
        """
        Gone while the body streams: the upstream connection is dropped and
        nothing more is written to the client.
        """
        world = World(self)
        client = world.request(get(b"/api/x"))
        world.upstream().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        written = client.transport.value()
        client.disconnect()
        upstream = world.upstream().transport
        self.assertEqual(client.transport.value(), written)
        self.assertTrue(upstream.disconnecting)
        self.assertEqual(world.in_flight(), {"a": 0})
        self.assertFalse(client.transport.aborted)


class BackPressureTests(SynchronousTestCase):
    """
    The relay is a streaming producer on the client's request.
    """

    def test_registered_while_streaming(self) -> None:
        """
        While the body streams the request has a streaming producer (the
        upstream connection); once the body is done, none.
        """
        world = World(self)
        world.request(get(b"/api/x"))
        request = world.site.requests[0]
        self.assertIsNone(request.producer)
        world.upstream().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        self.assertEqual(request.producers_registered, 1)
        self.assertIsNotNone(request.producer)
        self.assertTrue(request.streamingProducer)
        world.upstream().respond(b"cd")
        self.assertIsNone(request.producer)
        self.assertEqual(request.finished, 1)

    def test_whole_body_with_head(self) -> None:
        """
        A body that arrived together with its head is relayed without a
        producer: there is nothing left to pause.
        """
        world = World(self)
        client = world.request(get(b"/api/x"))
        world.upstream().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd")
        request = world.site.requests[0]
        self.assertEqual(request.producers_registered, 0)
        self.assertEqual(request.finished, 1)
        self.assertEqual(client.response()[2], b"abcd")

    def test_slow_client_pauses_upstream(self) -> None:
        """
        When the client's transport pauses the site, reading from the
        upstream pauses, and resumes with it.
        """
        world = World(self)
        client = world.request(get(b"/api/x"))
        world.upstream().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        upstream = world.upstream().transport
        self.assertEqual(upstream.producerState, "producing")
        client.transport.producer.pauseProducing()
        self.assertEqual(upstream.producerState, "paused")
        client.transport.producer.resumeProducing()
        self.assertEqual(upstream.producerState, "producing")
        world.upstream().respond(b"cd")
        self.assertEqual(client.response()[2], b"abcd")


class ErrorPageTests(SynchronousTestCase):
    """
    L{error_page} finishes a request with a short plain page.
    """

    def test_pages(self) -> None:
        """
        Each page is plain text with its length, and 503 may say when to
        retry.
        """
        for code, retry_after, expected in [
            (400, None, None),
            (502, None, None),
            (503, 5, [b"5"]),
            (504, None, None),
        ]:
            request = DummyRequest([b""])
            error_page(request, code, retry_after)
            body = b"".join(request.written)
            self.assertEqual(request.responseCode, code)
            self.assertTrue(body.startswith(b"%d " % code), body)
            headers = request.responseHeaders
            self.assertEqual(
                (
                    headers.getRawHeaders(b"content-type"),
                    headers.getRawHeaders(b"content-length"),
                    headers.getRawHeaders(b"retry-after"),
                ),
                ([b"text/plain; charset=utf-8"], [b"%d" % len(body)], expected),
                f"for {code}",
            )
            self.assertEqual(request.finished, 1)


class UpstreamGroupTests(SynchronousTestCase):
    """
    L{UpstreamGroup.choose}: least in flight, round-robin among equals,
    down ones left out while their mark lasts.
    """

    def group(self, n: int = 3) -> tuple[MemoryReactorClock, UpstreamGroup]:
        clock = MemoryReactorClock()
        members = [
            Upstream(f"http://u{i}/", FakeEndpoint(clock), b"u%d" % i, b"/")
            for i in range(n)
        ]
        return clock, UpstreamGroup(clock, members)

    def test_round_robin(self) -> None:
        """
        Equally busy upstreams take turns.
        """
        _, group = self.group()
        chosen = [group.choose() for _ in range(6)]
        self.assertEqual(set(chosen[:3]), set(group.members))
        self.assertEqual(chosen[3:], chosen[:3])

    def test_least_in_flight(self) -> None:
        """
        The upstream with the fewest requests in flight is chosen.
        """
        _, group = self.group()
        a, b, c = group.members
        a.in_flight, b.in_flight, c.in_flight = 3, 1, 2
        self.assertEqual([group.choose() for _ in range(3)], [b, b, b])

    def test_round_robin_among_least_busy(self) -> None:
        """
        The least busy upstreams take turns, evenly, while a busier one
        waits.
        """
        _, group = self.group()
        a, b, c = group.members
        a.in_flight = 1
        chosen = [group.choose() for _ in range(6)]
        self.assertNotIn(a, chosen)
        self.assertEqual((chosen.count(b), chosen.count(c)), (3, 3), chosen)
        self.assertEqual([x for x, y in pairwise(chosen) if x is y], [], chosen)

    def test_exclude(self) -> None:
        """
        Excluded upstreams are never chosen; excluding all gives L{None}.
        """
        _, group = self.group()
        a, b, c = group.members
        for _ in range(4):
            self.assertIs(group.choose(exclude=[a, b]), c)
            self.assertIn(group.choose(exclude=[a]), (b, c))
        self.assertIsNone(group.choose(exclude=[a, b, c]))
        self.assertIsNone(UpstreamGroup(MemoryReactorClock(), []).choose())

    def test_down_skipped(self) -> None:
        """
        A marked-down upstream is skipped, even when idle, until its mark
        expires.
        """
        clock, group = self.group()
        a, b, c = group.members
        group.mark_down(a)
        b.in_flight = c.in_flight = 5
        self.assertEqual({group.choose() for _ in range(4)}, {b, c})
        clock.advance(DOWN_FOR)
        self.assertIs(group.choose(), a)

    def test_all_down(self) -> None:
        """
        With every upstream down, the one whose mark expires first is
        chosen.
        """
        clock, group = self.group()
        a, b, c = group.members
        group.mark_down(b)
        clock.advance(1)
        group.mark_down(c)
        clock.advance(1)
        group.mark_down(a)
        self.assertEqual([group.choose() for _ in range(2)], [b, b])
        self.assertIs(group.choose(exclude=[b]), c)

    def test_single_down_member(self) -> None:
        """
        A route's only upstream is still tried while marked down.
        """
        _, group = self.group(1)
        [only] = group.members
        group.mark_down(only)
        self.assertIs(group.choose(), only)


class EndpointForTests(SynchronousTestCase):
    """
    L{endpoint_for} turns a configured URL into an endpoint, C{Host} and
    base path.
    """

    CASES = [
        # url, endpoint type, host, base
        ("http://example.com", HostnameEndpoint, b"example.com", b"/"),
        ("http://example.com:80/", HostnameEndpoint, b"example.com", b"/"),
        ("http://example.com:8080/v1", HostnameEndpoint, b"example.com:8080", b"/v1/"),
        ("http://127.0.0.1:8000/a/b/", HostnameEndpoint, b"127.0.0.1:8000", b"/a/b/"),
        ("http://[::1]:8000/", HostnameEndpoint, b"[::1]:8000", b"/"),
        ("http://Example.COM/", HostnameEndpoint, b"example.com", b"/"),
        ("https://example.com/", None, b"example.com", b"/"),
        ("https://example.com:443/x", None, b"example.com", b"/x/"),
        ("https://example.com:8443/", None, b"example.com:8443", b"/"),
        ("http://example.com:443/", HostnameEndpoint, b"example.com:443", b"/"),
        ("unix:/run/app.sock", UNIXClientEndpoint, b"localhost", b"/"),
    ]

    def test_table(self) -> None:
        """
        Each URL gives the expected endpoint kind, C{Host} and base.
        """
        reactor = MemoryReactorClock()
        for url, kind, host, base in self.CASES:
            for verify in (True, False):
                endpoint, got_host, got_base = endpoint_for(reactor, url, 5.0, verify)
                self.assertEqual((got_host, got_base), (host, base), f"for {url}")
                self.assertTrue(IStreamClientEndpoint.providedBy(endpoint), url)
                if kind is not None:
                    self.assertIsInstance(endpoint, kind, url)
                else:
                    self.assertNotIsInstance(endpoint, HostnameEndpoint)

    def test_from_url(self) -> None:
        """
        L{Upstream.from_url} keeps the URL as its name and pools by URL and
        TLS verification.
        """
        upstream = Upstream.from_url(
            MemoryReactorClock(), "https://example.com/x", 5.0, False
        )
        self.assertEqual(
            (upstream.name, upstream.host, upstream.base, upstream.key),
            (
                "https://example.com/x",
                b"example.com",
                b"/x/",
                ("https://example.com/x", False),
            ),
        )
        self.assertEqual((upstream.in_flight, upstream.down_until), (0, 0.0))
