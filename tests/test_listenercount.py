"""
Unit tests of C{max_connections} per listener: every listening port of a
L{RouterSite} (L{ListenerService}, whether bound, added by a reload or
adopted after an upgrade) counts its own open connections, on an
in-memory reactor.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.ssl import DefaultOpenSSLContextFactory
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.protocols.haproxy import proxyEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from tests.upstreams import _self_signed
from txrouter.limits import Limits
from txrouter.privatetwisted import http_channel_of
from txrouter.services import ListenerService
from txrouter.site import RouterSite
from txrouter.upgrade import inherited_endpoint

pytestmark = pytest.mark.unit

PEER = IPv4Address("TCP", "127.0.0.1", 5555)


class Ok(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        return b"ok"


class PerListenerTests(SynchronousTestCase):
    """
    Two listeners of one site, each with room for two connections.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.site = RouterSite(Ok(), self.reactor, None, Limits(max_connections=2))
        self.a = self.listen(8080)
        self.b = self.listen(8081)

    def listen(self, number: int) -> Any:
        """
        Start a listener on port C{number}; return the factory its port got.
        """
        description = f"tcp:{number}:interface=127.0.0.1"
        endpoint = TCP4ServerEndpoint(self.reactor, number, interface="127.0.0.1")
        service = ListenerService(description, endpoint, self.site)
        service.startService()
        self.addCleanup(service.stopService)
        [factory] = [f for (n, f, _, _) in self.reactor.tcpServers if n == number]
        return factory

    def connect(self, factory: Any) -> Any:
        """
        A new connection on C{factory}'s port: its protocol, or L{None}
        when it was refused.
        """
        protocol = factory.buildProtocol(PEER)
        if protocol is not None:
            protocol.makeConnection(StringTransport())
        return protocol

    def close(self, protocol: Any) -> None:
        protocol.connectionLost(Failure(ConnectionDone()))

    def test_full_listener_leaves_others_room(self) -> None:
        """
        A listener with C{max_connections} open refuses the next one; the
        other listener still takes its own C{max_connections}.
        """
        self.assertIsNotNone(self.connect(self.a))
        self.assertIsNotNone(self.connect(self.a))
        self.assertIsNone(self.connect(self.a))
        self.assertIsNotNone(self.connect(self.b))
        self.assertIsNotNone(self.connect(self.b))
        self.assertIsNone(self.connect(self.b))
        self.assertEqual((self.a.refused, self.b.refused), (1, 1))
        self.assertEqual(self.site.open_connections, 4)

    def test_closed_connection_frees_its_own_listener(self) -> None:
        """
        A connection that closes gives its slot back to its own listener,
        not to another.
        """
        on_a = [self.connect(self.a), self.connect(self.a)]
        on_b = [self.connect(self.b), self.connect(self.b)]
        self.close(on_b[0])
        self.assertIsNone(self.connect(self.a))
        self.close(on_a[0])
        self.assertIsNotNone(self.connect(self.a))
        self.assertIsNotNone(self.connect(self.b))
        self.assertIsNone(self.connect(self.b))
        self.assertEqual((self.a.open, self.b.open), (2, 2))

    def test_refusals_logged_per_listener(self) -> None:
        """
        Refusals are counted per listener and logged with its address, one
        line for the first and then one per 1000.
        """
        for factory in (self.a, self.b):
            self.connect(factory)
            self.connect(factory)
        with capturedLogs() as events:
            for _ in range(1001):
                self.assertIsNone(self.connect(self.a))
            self.assertIsNone(self.connect(self.b))
        lines = [e for e in events if "refused so far" in e.get("log_format", "")]
        # (MemoryReactor's ports say they are bound to 0.0.0.0.)
        self.assertEqual(
            [(e["listener"], e["count"]) for e in lines],
            [
                ("tcp:8080:interface=127.0.0.1 (0.0.0.0:8080)", 1),
                ("tcp:8080:interface=127.0.0.1 (0.0.0.0:8080)", 1001),
                ("tcp:8081:interface=127.0.0.1 (0.0.0.0:8081)", 1),
            ],
        )
        self.assertEqual(self.site.refused_connections, 1002)

    def test_new_limits_on_every_listener(self) -> None:
        """
        Limits changed by a reload apply to the next connections of every
        listener, those listening already and one added with it.
        """
        self.connect(self.a)
        self.connect(self.a)
        self.site.set_limits(Limits(max_connections=1))
        c = self.listen(8082)
        self.assertIsNone(self.connect(self.a))
        self.assertIsNotNone(self.connect(self.b))
        self.assertIsNone(self.connect(self.b))
        self.assertIsNotNone(self.connect(c))
        self.assertIsNone(self.connect(c))
        self.site.set_limits(Limits(max_connections=3))
        for factory in (self.a, self.b, c):
            self.assertIsNotNone(self.connect(factory))

    def test_adopted_listener(self) -> None:
        """
        A listener on a socket handed over by an upgrade counts its own
        connections too.
        """
        fd = os.open(os.devnull, os.O_RDONLY)  # the endpoint closes it
        endpoint = inherited_endpoint(self.reactor, "tcp:8083", fd)
        service = ListenerService("tcp:8083", endpoint, self.site)
        service.startService()
        self.addCleanup(service.stopService)
        [(_, _, adopted)] = self.reactor.adoptedPorts
        self.connect(self.a)
        self.connect(self.a)
        self.assertIsNotNone(self.connect(adopted))
        self.assertIsNotNone(self.connect(adopted))
        self.assertIsNone(self.connect(adopted))
        self.assertEqual(adopted.refused, 1)

    def port_factory(self, number: int) -> Any:
        """
        The factory a real reactor's port on C{number} calls: for TLS, the
        listener's factory wrapped as C{listenSSL} wraps it.
        """
        for n, factory, *_ in self.reactor.tcpServers:
            if n == number:
                return factory
        [(factory, context)] = [
            (f, c) for (n, f, c, *_) in self.reactor.sslServers if n == number
        ]
        return TLSMemoryBIOFactory(context, False, factory)

    def test_refused_under_a_wrapper(self) -> None:
        """
        On a listener whose endpoint wraps the protocol it is given (TLS,
        the PROXY protocol), which takes no L{None}, a refused connection
        is closed at once too: nothing is raised or logged, and no TLS
        handshake is made.
        """
        folder = Path(tempfile.mkdtemp())
        self.addCleanup(lambda: [p.unlink() for p in folder.iterdir()])
        cert, key = _self_signed(folder)
        for number, description in [
            (8084, "haproxy:tcp:8084:interface=127.0.0.1"),
            (8085, f"ssl:8085:interface=127.0.0.1:certKey={cert}:privateKey={key}"),
        ]:
            tcp = TCP4ServerEndpoint(self.reactor, number, interface="127.0.0.1")
            if description.startswith("haproxy:"):
                endpoint = proxyEndpoint(tcp)
            else:
                context = DefaultOpenSSLContextFactory(key, cert)
                endpoint = SSL4ServerEndpoint(
                    self.reactor, number, context, interface="127.0.0.1"
                )
            service = ListenerService(description, endpoint, self.site)
            service.startService()
            self.addCleanup(service.stopService)
            factory = self.port_factory(number)
            for _ in range(2):
                self.assertIsNotNone(factory.buildProtocol(PEER))
            with capturedLogs() as events:
                refused = factory.buildProtocol(PEER)
                transport = StringTransport()
                refused.makeConnection(transport)
                refused.dataReceived(b"\x16\x03\x01\x00\x05hello")
            self.assertTrue(transport.disconnecting, description)
            self.assertEqual(transport.value(), b"", description)
            self.assertEqual(
                [e for e in events if e.get("log_failure")], [], description
            )
            self.assertEqual(service.factory.refused, 1)

    def test_nothing_between_transport_and_channel(self) -> None:
        """
        The port's factory hands the transport the site's own protocol,
        whose channel counts against the listener: no wrapping layer.
        """
        protocol = self.a.buildProtocol(PEER)
        transport = StringTransport()
        protocol.makeConnection(transport)
        channel = http_channel_of(protocol)
        self.assertIs(channel.transport, transport)
        self.assertIs(channel.site, self.site)
        self.assertIs(channel.listener, self.a)

    def test_site_started_once(self) -> None:
        """
        The site starts with the first port that starts its listener's
        factory and stops with the last; the ports log under its name.
        """
        calls: list[str] = []

        class Counted(RouterSite):
            def startFactory(self) -> None:
                calls.append("start")
                super().startFactory()

            def stopFactory(self) -> None:
                calls.append("stop")
                super().stopFactory()

        site = Counted(Ok(), self.reactor, None, Limits())
        a, b = site.listener("tcp:1"), site.listener("tcp:2")
        self.assertEqual(a.logPrefix(), "Counted")
        a.doStart()
        b.doStart()
        a.doStop()
        self.assertEqual(calls, ["start"])
        b.doStop()
        self.assertEqual(calls, ["start", "stop"])
