"""
Tests for C{systemd:} listeners read without systemd's sockets
(L{txrouter.endpointstrings.check_systemd}, as C{txrouter check} and every
config load do) and started without them (L{txrouter.serverendpoints}).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from txrouter.config import load_config
from txrouter.endpointstrings import check_systemd
from txrouter.errors import ConfigError
from txrouter.serverendpoints import server_endpoint

pytestmark = pytest.mark.unit

_GOOD = [
    "systemd:domain=INET:index=0",
    "systemd:domain=INET6:index=12",
    "systemd:domain=UNIX:name=web",
    "systemd:INET:0",
    "haproxy:systemd:domain=INET:name=http",
]

_BAD = [
    ("systemd:index=0", "domain= must be"),
    ("systemd:domain=inet:index=0", "domain= must be"),
    ("systemd:domain=INET", "exactly one of index="),
    ("systemd:domain=INET:index=0:name=a", "exactly one of index="),
    ("systemd:domain=INET:index=-1", "index= must be a number"),
    ("systemd:domain=INET:index=x", "index= must be a number"),
    ("systemd:domain=INET:index=0:port=80", "unknown parameter 'port'"),
    ("systemd:INET:0:a:b", "too many arguments"),
]


class CheckSystemdTests(SynchronousTestCase):
    def test_good(self) -> None:
        """
        Strings Twisted's parser takes pass, with no socket passed.
        """
        for description in _GOOD:
            check_systemd(description)

    def test_bad(self) -> None:
        """
        Each mistake is named.
        """
        for description, message in _BAD:
            with self.assertRaises(ValueError, msg=description) as raised:
                check_systemd(description)
            self.assertIn(message, str(raised.exception), description)

    def test_config(self) -> None:
        """
        A routes file with C{systemd:} listeners loads in a process systemd
        did not start; a bad one is refused at its line.
        """
        folder = Path(self.mktemp())
        (folder / "pub").mkdir(parents=True)
        path = folder / "routes.yaml"
        path.write_text(
            "listen:\n"
            "  - systemd:domain=INET:index=0\n"
            "  - systemd:domain=INET6:name=https\n"
            "routes: {/: {static: pub}}\n"
        )
        self.assertEqual(
            load_config(path).listen,
            ("systemd:domain=INET:index=0", "systemd:domain=INET6:name=https"),
        )
        path.write_text("listen: systemd:domain=INET\nroutes: {/: {static: pub}}\n")
        with self.assertRaises(ConfigError) as raised:
            load_config(path)
        self.assertIn("routes.yaml:1: listen: bad endpoint", str(raised.exception))


class ServerEndpointTests(SynchronousTestCase):
    def test_not_passed(self) -> None:
        """
        A C{systemd:} socket this process was not given fails to listen,
        saying where the sockets come from.
        """
        endpoint = server_endpoint(MemoryReactorClock(), "systemd:domain=INET:index=7")
        failure = self.failureResultOf(endpoint.listen(Factory()), CannotListenError)
        self.assertIn(".socket unit", str(failure.value.socketError))

    def test_others(self) -> None:
        """
        Other strings get Twisted's own endpoints, and its errors.
        """
        reactor = MemoryReactorClock()
        self.assertIsInstance(server_endpoint(reactor, "tcp:8080"), TCP4ServerEndpoint)
        with self.assertRaises(ValueError):
            server_endpoint(reactor, "nosuchkind:8080")
