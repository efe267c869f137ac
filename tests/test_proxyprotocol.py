"""
Tests for L{txrouter.proxyprotocol} and the PROXY-header gate of
L{txrouter.site.ListenerFactory}: which listeners take the header from
the network, the config check that some proxy is trusted to send it, and
the connections from other peers closed at once, with a log line at most
once a minute.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from tests.certs import Authority
from txrouter.config import load_config
from txrouter.errors import ConfigError
from txrouter.forwarding import TrustedProxies
from txrouter.limits import Limits
from txrouter.privatetwisted import http_channel_of
from txrouter.proxyprotocol import proxy_header_from_network
from txrouter.site import RouterSite

pytestmark = pytest.mark.unit

_FROM_NETWORK = [
    ("haproxy:tcp:8080", True),
    ("haproxy:tcp6:8080", True),
    ("HAPROXY:tcp:8080:interface=127.0.0.1", True),
    ("haproxy:haproxy:tcp:8080", True),
    ("haproxy:systemd:domain=INET:index=0", True),
    ("haproxy:systemd:domain=UNIX:index=0", False),
    ("haproxy:unix:/run/lb.sock", False),
    ("haproxy:unix:address=/run/lb.sock", False),
    ("tcp:8080", False),
    ("systemd:domain=INET:index=0", False),
    ("unix:/run/a.sock", False),
    ("haproxy:tcp:8080\\", False),  # not a valid string: the parser says why
]


class FromNetworkTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        C{haproxy:} around anything but a UNIX socket takes the header from
        peers with an IP address.
        """
        for description, expected in _FROM_NETWORK:
            self.assertEqual(
                proxy_header_from_network(description), expected, description
            )


class ConfigCheckTests(SynchronousTestCase):
    def load(self, text: str) -> list[str]:
        """
        The problems of a routes file of C{text}, as C{file:line: ...}
        lines without the folder (none when it loads).
        """
        folder = Path(self.mktemp())
        (folder / "pub").mkdir(parents=True)
        Authority(folder).issue(["a.test"], to=folder / "a.pem")
        path = folder / "routes.yaml"
        path.write_text(textwrap.dedent(text))
        try:
            load_config(path)
        except ConfigError as e:
            return [line.replace(str(folder) + "/", "") for line in str(e).splitlines()]
        return []

    def test_refused_without_trusted_proxies(self) -> None:
        """
        A C{haproxy:} listener over TCP with no C{trusted_proxies} is refused
        at its line, saying to list the balancer's address.
        """
        problems = self.load(
            """\
            listen:
              - tcp:8080
              - haproxy:tcp:8081
              - endpoint: haproxy:tcp:8443
                tls: {certificates: [a.pem]}
            routes: {/: {static: pub}}
            """
        )
        proxied = [p for p in problems if "PROXY header" in p]
        self.assertEqual(len(proxied), 2, problems)
        self.assertTrue(proxied[0].startswith("routes.yaml:3: listen[1]: "), proxied)
        self.assertIn("trusted_proxies: ['10.0.0.5']", proxied[0])
        self.assertTrue(proxied[1].startswith("routes.yaml:4: listen[2]: "), proxied)

    def test_single_string(self) -> None:
        """
        C{listen:} as one string is checked the same way.
        """
        problems = self.load("listen: haproxy:tcp:8081\nroutes: {/: {static: pub}}\n")
        self.assertEqual(len(problems), 1, problems)
        self.assertTrue(problems[0].startswith("routes.yaml:1: listen: "), problems)

    def test_accepted(self) -> None:
        """
        With C{trusted_proxies}, or over a UNIX socket, the file loads.
        """
        self.assertEqual(
            self.load(
                """\
                listen: [haproxy:tcp:8081]
                trusted_proxies: [10.0.0.5]
                routes: {/: {static: pub}}
                """
            ),
            [],
        )
        self.assertEqual(
            self.load(
                """\
                listen: [haproxy:unix:lb.sock]
                routes: {/: {static: pub}}
                """
            ),
            [],
        )


class _Ok(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        return b"ok"


class GateTests(SynchronousTestCase):
    """
    A listener whose C{proxy_peers} is set closes connections from other
    peers before anything is read.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.site = RouterSite(_Ok(), self.reactor, None, Limits())
        self.listener = self.site.listener("haproxy:tcp:8080:interface=127.0.0.1")
        self.listener.proxy_peers = TrustedProxies(["10.0.0.0/8", "::1"])

    def connect(self, addr: object) -> tuple[object, StringTransport]:
        protocol = self.listener.buildProtocol(addr)  # type: ignore[arg-type]
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_trusted_peer(self) -> None:
        """
        A trusted peer gets the site's own protocol, counted on the listener.
        """
        for addr in (
            IPv4Address("TCP", "10.1.2.3", 5555),
            IPv6Address("TCP", "::1", 5555),
        ):
            protocol, transport = self.connect(addr)
            self.assertIs(http_channel_of(protocol).listener, self.listener)
            self.assertFalse(transport.disconnecting)
        self.assertEqual((self.listener.open, self.listener.untrusted), (2, 0))

    def test_unix_peer(self) -> None:
        """
        A peer with no IP address (a UNIX socket under the wrapper) is not
        checked: the socket file's permissions say who connects.
        """
        _, transport = self.connect(UNIXAddress(None))
        self.assertFalse(transport.disconnecting)

    def test_untrusted_peer(self) -> None:
        """
        Another peer is closed at once, nothing written, not counted as
        open; the log names it and the listener, once a minute at most,
        with the count since the last line.
        """
        peer = IPv4Address("TCP", "192.0.2.9", 5555)
        with capturedLogs() as events:
            for _ in range(3):
                _, transport = self.connect(peer)
                self.assertTrue(transport.disconnecting)
                self.assertEqual(transport.value(), b"")
            self.reactor.advance(61)
            self.connect(peer)
        lines = [e for e in events if e.get("peer") == "192.0.2.9"]
        self.assertEqual([e["count"] for e in lines], [1, 3])
        self.assertEqual(lines[0]["listener"], "haproxy:tcp:8080:interface=127.0.0.1")
        self.assertEqual((self.listener.open, self.listener.untrusted), (0, 4))

    def test_no_gate(self) -> None:
        """
        Without C{proxy_peers} (a plain listener), every peer is served.
        """
        self.listener.proxy_peers = None
        _, transport = self.connect(IPv4Address("TCP", "192.0.2.9", 5555))
        self.assertFalse(transport.disconnecting)
