"""
In-memory tests of protocol switching through a proxy route: the strict
channel, the proxy engine, the upstream client and L{txrouter.tunnel}.

The client side is a real L{RouterSite} (the strict channel, the default
limits) with a L{ProxyResource} at C{/ws/}; the upstream is a
L{FakeEndpoint} whose connections are in memory: the test reads what the
router wrote upstream and writes raw bytes back. The reactor is a
C{MemoryReactorClock}.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_config import make_site, problems_of, write_routes
from tests.test_proxy import (
    PEER,
    FakeEndpoint,
    FakeTransport,
    parse_request,
    parse_response,
)
from txrouter.config import load_config
from txrouter.forwarding import TrustedProxies
from txrouter.kinds.proxy import proxy_settings
from txrouter.limits import Limits
from txrouter.privatetwisted import http_channel_of
from txrouter.proxy import ProxyResource, ProxySettings
from txrouter.proxyclient import ProxyClient
from txrouter.router import Router
from txrouter.site import RouterSite
from txrouter.tunnel import CLOSE_GRACE
from txrouter.upstream import Upstream, UpstreamGroup

pytestmark = pytest.mark.unit

HANDSHAKE = (
    b"GET /ws/chat?room=1 HTTP/1.1\r\nHost: example.com\r\n"
    b"Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)

SWITCHED = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


class Client:
    """
    One client connection to the router's site.
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self.protocol = world.site.buildProtocol(PEER)
        self.channel = http_channel_of(self.protocol)
        self.transport = FakeTransport(world.reactor, PEER)
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)
        self.world.reactor.advance(0)

    def received(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def disconnect(self) -> None:
        self.transport.disconnecting = True
        self.protocol.connectionLost(Failure(ConnectionLost("client went away")))
        self.world.reactor.advance(0)


class World:
    """
    A L{ProxyResource} at C{/ws/} of a L{RouterSite}, with one in-memory
    upstream.
    """

    def __init__(
        self,
        test: SynchronousTestCase,
        upgrades: frozenset[bytes] = frozenset({b"websocket"}),
        max_tunnels: int = 4096,
        idle: float = 3600.0,
    ) -> None:
        self.reactor = MemoryReactorClock()
        self.endpoint = FakeEndpoint(self.reactor)
        upstream = Upstream("up", self.endpoint, b"up.internal", b"/")
        group = UpstreamGroup(self.reactor, [upstream])
        settings = ProxySettings(
            name="routes.yaml:3: routes['/ws/']",
            timeout=60.0,
            preserve_host=True,
            trusted=TrustedProxies([]),
            prefix=b"/ws",
            upgrades=upgrades,
            tunnel_idle_timeout=idle,
            max_tunnels=max_tunnels,
        )
        self.resource = ProxyResource(
            self.reactor, ProxyClient(self.reactor), group, settings
        )
        self.site = RouterSite(
            Router({"": {"/ws/": self.resource}}), self.reactor, None, Limits()
        )
        self.site.startFactory()
        test.addCleanup(self.site.stopFactory)

    def connect(self) -> Client:
        return Client(self)

    def upstream(self, index: int = 0) -> Any:
        return self.endpoint.connections[index]

    def switched(self) -> tuple[Client, Any]:
        """
        A client whose handshake the upstream accepted.
        """
        client = self.connect()
        client.send(HANDSHAKE)
        upstream = self.upstream()
        upstream.transport.clear()
        upstream.respond(SWITCHED)
        self.reactor.advance(0)
        client.received()
        return client, upstream


class HandshakeTests(SynchronousTestCase):
    def test_forwarded_with_upgrade(self) -> None:
        """
        The handshake goes upstream with its Upgrade, Connection: Upgrade,
        its Sec-WebSocket-* headers and the forwarding headers.
        """
        world = World(self)
        world.connect().send(HANDSHAKE)
        line, headers, _ = parse_request(world.upstream().received())
        self.assertEqual(line, b"GET /chat?room=1 HTTP/1.1")
        named = {n.lower(): v for n, v in headers}
        self.assertEqual(named[b"upgrade"], b"websocket")
        self.assertEqual(named[b"connection"], b"Upgrade")
        self.assertEqual(named[b"sec-websocket-key"], b"dGhlIHNhbXBsZSBub25jZQ==")
        self.assertEqual(named[b"x-forwarded-for"], PEER.host.encode())
        self.assertEqual([n.lower() for n, _ in headers].count(b"connection"), 1)

    def test_switch_relayed(self) -> None:
        """
        The upstream's 101 reaches the client with the switch's headers and
        its own, and no framing of a body; the route counts the tunnel.
        """
        world = World(self)
        client = world.connect()
        client.send(HANDSHAKE)
        world.upstream().respond(SWITCHED)
        status, headers, body = parse_response(client.received())
        self.assertEqual(status, b"HTTP/1.1 101 Switching Protocols")
        self.assertEqual(headers[b"upgrade"], [b"websocket"])
        self.assertEqual(headers[b"connection"], [b"Upgrade"])
        self.assertEqual(
            headers[b"sec-websocket-accept"], [b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]
        )
        self.assertNotIn(b"transfer-encoding", headers)
        self.assertNotIn(b"content-length", headers)
        self.assertEqual(body, b"")
        self.assertEqual(len(world.resource.tunnels.open), 1)
        self.assertEqual(world.resource.tunnels.opening, 0)
        self.assertEqual(len(world.site.tunnels), 1)

    def test_bytes_both_ways(self) -> None:
        """
        Once switched, every byte goes through unchanged, each way.
        """
        world = World(self)
        client, upstream = world.switched()
        client.send(b"\x81\x05hello")
        self.assertEqual(upstream.received(), b"\x81\x05hello")
        upstream.respond(b"\x82\x03\x00\x01\x02")
        self.assertEqual(client.received(), b"\x82\x03\x00\x01\x02")
        tunnel = next(iter(world.resource.tunnels.open))
        self.assertEqual((tunnel.sent, tunnel.received), (7, 5))

    def test_early_bytes(self) -> None:
        """
        Bytes the client sent right after its handshake reach the upstream
        after the switch, and bytes that came with the 101 reach the
        client after it.
        """
        world = World(self)
        client = world.connect()
        client.send(HANDSHAKE + b"\x81\x02hi")
        upstream = world.upstream()
        self.assertNotIn(b"\x81\x02hi", upstream.received())
        upstream.transport.clear()
        upstream.respond(SWITCHED + b"\x81\x03hey")
        self.assertEqual(upstream.received(), b"\x81\x02hi")
        self.assertTrue(client.received().endswith(b"\r\n\r\n\x81\x03hey"))

    def test_refused_switch_is_a_response(self) -> None:
        """
        An upstream that does not switch answers as usual, and the
        connection goes on with the client's next request.
        """
        world = World(self)
        client = world.connect()
        second = b"GET /ws/next HTTP/1.1\r\nHost: example.com\r\n\r\n"
        client.send(HANDSHAKE + second)
        world.upstream().respond(
            b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 2\r\n\r\nno"
        )
        world.reactor.advance(0)
        status, _, body = parse_response(client.received())
        self.assertEqual((status, body), (b"HTTP/1.1 426 Upgrade Required", b"no"))
        line, _, _ = parse_request(world.upstream().received().split(b"\r\n\r\n")[-2])
        self.assertEqual(line, b"GET /next HTTP/1.1")
        self.assertEqual(world.resource.tunnels.opening, 0)
        self.assertEqual(world.site.tunnels, set())

    def test_unasked_switch(self) -> None:
        """
        A 101 to a request that asked for no switch is a broken answer: 502.
        """
        world = World(self)
        client = world.connect()
        client.send(b"GET /ws/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
        world.upstream().respond(SWITCHED)
        status, _, _ = parse_response(client.received())
        self.assertEqual(status, b"HTTP/1.1 502 Bad Gateway")

    def test_switch_to_another_protocol(self) -> None:
        """
        A 101 naming a protocol the client did not ask for is a 502.
        """
        world = World(self)
        client = world.connect()
        client.send(HANDSHAKE)
        world.upstream().respond(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
            b"Connection: Upgrade\r\n\r\n"
        )
        status, _, _ = parse_response(client.received())
        self.assertEqual(status, b"HTTP/1.1 502 Bad Gateway")
        self.assertEqual(world.resource.tunnels.opening, 0)

    def test_protocol_not_tunnelled(self) -> None:
        """
        A protocol the route does not tunnel is a 400 saying which it does.
        """
        world = World(self)
        client = world.connect()
        client.send(HANDSHAKE.replace(b"Upgrade: websocket", b"Upgrade: irc/3"))
        status, _, body = parse_response(client.received())
        self.assertEqual(status, b"HTTP/1.1 400 Bad Request")
        self.assertIn(b"only to websocket", body)
        self.assertEqual(world.endpoint.attempts, 0)

    def test_h2c_served_plain(self) -> None:
        """
        C{Upgrade: h2c} is never tunnelled: the request goes upstream as
        plain HTTP/1.1, without the upgrade.
        """
        world = World(self)
        client = world.connect()
        client.send(HANDSHAKE.replace(b"Upgrade: websocket", b"Upgrade: h2c"))
        _, headers, _ = parse_request(world.upstream().received())
        names = {n.lower() for n, _ in headers}
        self.assertNotIn(b"upgrade", names)
        self.assertNotIn(b"connection", names)

    def test_route_without_upgrades(self) -> None:
        """
        A route that tunnels nothing serves a WebSocket handshake as a plain
        request (as an application in process would see it).
        """
        world = World(self, upgrades=frozenset())
        world.connect().send(HANDSHAKE)
        _, headers, _ = parse_request(world.upstream().received())
        self.assertNotIn(b"upgrade", {n.lower() for n, _ in headers})

    def test_too_many_tunnels(self) -> None:
        """
        Beyond C{max_tunnels} (handshakes under way included), a handshake
        gets 503; once one closes, a new one is taken.
        """
        world = World(self, max_tunnels=1)
        first, _ = world.switched()
        second = world.connect()
        second.send(HANDSHAKE)
        status, headers, _ = parse_response(second.received())
        self.assertEqual(status, b"HTTP/1.1 503 Service Unavailable")
        self.assertEqual(headers[b"retry-after"], [b"1"])
        first.disconnect()
        world.reactor.advance(0)
        world.connect().send(HANDSHAKE)
        self.assertEqual(len(world.endpoint.connections), 2)


class EndTests(SynchronousTestCase):
    def test_client_closes(self) -> None:
        """
        A client that closes closes the upstream side, and the tunnel ends.
        """
        world = World(self)
        client, upstream = world.switched()
        client.disconnect()
        self.assertTrue(upstream.transport.disconnecting)
        world.reactor.advance(0)
        self.assertEqual(world.resource.tunnels.open, set())
        self.assertEqual(world.site.tunnels, set())

    def test_upstream_closes(self) -> None:
        """
        An upstream that closes, or dies, closes the client side once what
        it sent is written.
        """
        world = World(self)
        client, upstream = world.switched()
        upstream.respond(b"\x88\x02\x03\xe8")
        upstream.protocol.connectionLost(Failure(ConnectionLost("killed")))
        self.assertEqual(client.received(), b"\x88\x02\x03\xe8")
        self.assertTrue(client.transport.disconnecting)
        world.reactor.advance(0)
        self.assertEqual(world.site.tunnels, set())

    def test_idle(self) -> None:
        """
        A tunnel with no byte either way for its idle timeout is closed; one
        that carries bytes is not.
        """
        world = World(self, idle=10.0)
        client, upstream = world.switched()
        for _ in range(4):
            world.reactor.advance(4)
            client.send(b"x")
        self.assertFalse(client.transport.disconnecting)
        world.reactor.advance(11)
        self.assertTrue(client.transport.disconnecting)
        self.assertTrue(upstream.transport.disconnecting)

    def test_close_grace(self) -> None:
        """
        A side that takes nothing of what is left for it is aborted
        L{CLOSE_GRACE} seconds after the other closed.
        """
        world = World(self)
        client, upstream = world.switched()
        upstream.transport.loseConnection = lambda: None  # never flushes
        client.disconnect()
        world.reactor.advance(CLOSE_GRACE)
        self.assertTrue(upstream.transport.aborted)

    def test_drain_waits_then_closes(self) -> None:
        """
        The drain waits for open tunnels for its timeout, then closes them.
        """
        world = World(self)
        client, upstream = world.switched()
        drained = world.site.drain(30.0)
        world.reactor.advance(29)
        self.assertNoResult(drained)
        world.reactor.advance(1)
        self.successResultOf(drained)
        self.assertTrue(client.transport.aborted)
        self.assertTrue(upstream.transport.aborted)

    def test_drain_ends_with_the_tunnels(self) -> None:
        """
        The drain is over as soon as the last tunnel closes.
        """
        world = World(self)
        client, _ = world.switched()
        drained = world.site.drain(30.0)
        world.reactor.advance(5)
        client.disconnect()
        world.reactor.advance(0)
        self.successResultOf(drained)


class BackPressureTests(SynchronousTestCase):
    def test_client_not_reading(self) -> None:
        """
        While the client takes nothing, the upstream is not read (the client
        may still send); after C{send_timeout}, the client is dropped.
        """
        world = World(self)
        client, upstream = world.switched()
        client.channel.pauseProducing()  # the client's transport is full
        self.assertEqual(upstream.transport.producerState, "paused")
        self.assertEqual(client.transport.producerState, "producing")
        client.send(b"still sending")
        self.assertEqual(upstream.received(), b"still sending")
        client.channel.resumeProducing()
        self.assertEqual(upstream.transport.producerState, "producing")
        client.channel.pauseProducing()
        world.reactor.advance(Limits().send_timeout + 1)
        self.assertTrue(client.transport.aborted)

    def test_upstream_not_reading(self) -> None:
        """
        While the upstream takes nothing, the client is not read.
        """
        world = World(self)
        client, upstream = world.switched()
        producer = upstream.transport.producer
        producer.pauseProducing()
        self.assertEqual(client.transport.producerState, "paused")
        producer.resumeProducing()
        self.assertEqual(client.transport.producerState, "producing")


class ConfigTests(SynchronousTestCase):
    """
    The proxy route options of tunnels, read from a routes file.
    """

    def route(self, options: str) -> Any:
        folder = make_site(self)
        path = write_routes(
            folder,
            "listen: tcp:8080\n"
            f'routes:\n  /ws/: {{proxy: "http://127.0.0.1:9000/"{options}}}\n',
        )
        return load_config(path).tables[""]["/ws/"]

    def problem(self, options: str) -> str:
        folder = make_site(self)
        path = write_routes(
            folder,
            "listen: tcp:8080\n"
            f'routes:\n  /ws/: {{proxy: "http://127.0.0.1:9000/"{options}}}\n',
        )
        (problem,) = problems_of(self, path)
        return f"{problem.line}: {problem.where}: {problem.message}"

    def test_defaults(self) -> None:
        """
        A proxy route tunnels WebSockets, for an hour idle, 4096 at once.
        """
        settings = proxy_settings(self.route(""), TrustedProxies([]))
        self.assertEqual(settings.upgrades, frozenset({b"websocket"}))
        self.assertEqual(settings.tunnel_idle_timeout, 3600.0)
        self.assertEqual(settings.max_tunnels, 4096)

    def test_set(self) -> None:
        """
        Each option as written; protocol names in any case, kept once.
        """
        route = self.route(
            ", upgrade: [WebSocket, websocket, irc], tunnel_idle_timeout: 30, "
            "max_tunnels: 10"
        )
        settings = proxy_settings(route, TrustedProxies([]))
        self.assertEqual(settings.upgrades, frozenset({b"websocket", b"irc"}))
        self.assertEqual(settings.tunnel_idle_timeout, 30.0)
        self.assertEqual(settings.max_tunnels, 10)

    def test_none(self) -> None:
        """
        C{upgrade: []} (or empty) tunnels nothing.
        """
        for written in (", upgrade: []", ", upgrade:"):
            route = self.route(written)
            self.assertEqual(route.upgrade, ())

    def test_problems(self) -> None:
        """
        A bad option is refused with its line, its place and what is expected.
        """
        where = "routes['/ws/']"
        self.assertEqual(
            self.problem(", upgrade: websocket"),
            f"3: {where}.upgrade: expected a list of protocol names such as "
            "[websocket] (or [] to tunnel none), got str 'websocket'",
        )
        self.assertIn("h2c is never tunnelled", self.problem(", upgrade: [h2c]"))
        self.assertIn(
            "expected a list of protocol names", self.problem(', upgrade: ["a b"]')
        )
        self.assertIn(f"{where}.max_tunnels", self.problem(", max_tunnels: 0"))
        self.assertIn(
            f"{where}.tunnel_idle_timeout", self.problem(", tunnel_idle_timeout: -1")
        )
