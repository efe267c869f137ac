"""
Tests for L{txrouter.site}: the site counts the requests in flight through
its own request class, which also answers C{isSecure} for the connection.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import datetimeToString
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.server import version as server_version
from zope.interface import directlyProvides

from txrouter.site import KEEPALIVE_GRACE, RouterRequest, RouterSite

pytestmark = pytest.mark.unit


class Hold(Resource):
    """
    A resource that keeps every request open, for the test to answer.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[RouterRequest] = []

    def render_GET(self, request: RouterRequest) -> int:
        self.requests.append(request)
        return NOT_DONE_YET


class TLSTransport(StringTransport):
    """
    A transport that says it is TLS, as Twisted's TLS transports do.
    """

    def __init__(self) -> None:
        super().__init__()
        directlyProvides(self, ISSLTransport)

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


def connect(site: RouterSite, transport: StringTransport) -> object:
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    channel.makeConnection(transport)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
    return channel


class InFlightTests(SynchronousTestCase):
    """
    A request is in flight from routing until it is finished or its client
    goes away; draining waits for exactly that.
    """

    def setUp(self) -> None:
        self.resource = Hold()
        self.reactor = MemoryReactorClock()
        self.site = RouterSite(self.resource, self.reactor, None)

    def test_request_class(self) -> None:
        """
        The site's requests are L{RouterRequest}s.
        """
        connect(self.site, StringTransport())
        [request] = self.resource.requests
        self.assertIsInstance(request, RouterRequest)

    def test_finished(self) -> None:
        """
        Finishing a request takes it out of flight and ends a drain.
        """
        connect(self.site, StringTransport())
        [request] = self.resource.requests
        self.assertEqual(self.site.in_flight, {request})
        drained = self.site.drain(30)
        self.assertNoResult(drained)
        request.finish()
        self.assertEqual(self.site.in_flight, set())
        self.reactor.advance(KEEPALIVE_GRACE)  # then its idle connection closes
        self.successResultOf(drained)

    def test_client_gone(self) -> None:
        """
        A request whose client went away is no longer in flight.
        """
        channel = connect(self.site, StringTransport())
        drained = self.site.drain(30)
        channel.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        self.assertEqual(self.site.in_flight, set())
        self.reactor.advance(KEEPALIVE_GRACE)
        self.successResultOf(drained)


class SecureTests(SynchronousTestCase):
    """
    L{RouterRequest.isSecure} tells whether the connection is TLS.
    """

    def request_over(self, transport: StringTransport) -> RouterRequest:
        resource = Hold()
        site = RouterSite(resource, MemoryReactorClock(), None)
        connect(site, transport)
        [request] = resource.requests
        return request

    def test_plain(self) -> None:
        """
        A plain TCP connection is not secure.
        """
        self.assertFalse(self.request_over(StringTransport()).isSecure())

    def test_tls(self) -> None:
        """
        A TLS connection is secure.
        """
        self.assertTrue(self.request_over(TLSTransport()).isSecure())

    def test_after_finish(self) -> None:
        """
        A finished request has no channel any more; it is not secure.
        """
        request = self.request_over(TLSTransport())
        request.finish()
        self.assertFalse(request.isSecure())


class DrainClosesIdleTests(SynchronousTestCase):
    """
    While the site drains, no keep-alive connection stays open idle.
    """

    def test_idle_closed_busy_after_response(self) -> None:
        """
        Draining closes an idle keep-alive connection after the grace, and
        a busy one as soon as its response is written, not before.
        """
        reactor = MemoryReactorClock()
        hold = Hold()
        site = RouterSite(hold, reactor, access_log=None)
        idle_transport, busy_transport = StringTransport(), StringTransport()
        idle = connect(site, idle_transport)
        connect(site, busy_transport)
        hold.requests[0].write(b"done")
        hold.requests[0].finish()  # the idle one has had its answer
        self.assertFalse(idle_transport.disconnecting)
        self.assertIsNotNone(idle)

        drained = site.drain(30)
        reactor.advance(KEEPALIVE_GRACE - 0.01)
        self.assertFalse(idle_transport.disconnecting)
        reactor.advance(0.01)
        self.assertTrue(idle_transport.disconnecting)
        self.assertFalse(busy_transport.disconnecting)
        hold.requests[1].write(b"late")
        hold.requests[1].finish()
        reactor.advance(0)
        self.assertTrue(busy_transport.disconnecting)
        self.assertIn(b"late", busy_transport.value())
        self.assertIn(b"Connection: close", busy_transport.value())
        self.successResultOf(drained)


class DefaultHeadersTests(SynchronousTestCase):
    """
    Every response has Twisted's C{Server} and a C{Date} of when it is sent
    (made once a second).
    """

    def test_server_and_date(self) -> None:
        class Hello(Resource):
            isLeaf = True

            def render(self, request: Any) -> bytes:
                return b"hi"

        site = RouterSite(Hello(), MemoryReactorClock(), None)
        transport = StringTransport()
        before = int(time.time())
        connect(site, transport)
        after = int(time.time())
        head = transport.value().split(b"\r\n\r\n")[0].split(b"\r\n")
        self.assertIn(b"Server: " + server_version, head)
        dates = [line[len(b"Date: ") :] for line in head if line.startswith(b"Date:")]
        self.assertIn(
            dates, [[datetimeToString(s)] for s in range(before, after + 1)], head
        )
