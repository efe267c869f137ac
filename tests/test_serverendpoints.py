"""
Listen backlogs: a TCP or UNIX listener whose endpoint string sets none
listens with nginx's 511 rather than Twisted's 50; one that sets its own
keeps it (L{txrouter.serverendpoints}). Also the private Twisted attribute
this needs (L{txrouter.privatetwisted.set_backlog}).
"""

from __future__ import annotations

import pytest
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from txrouter.endpointstrings import sets_backlog
from txrouter.serverendpoints import LISTEN_BACKLOG, server_endpoint

pytestmark = pytest.mark.unit


class BacklogTests(SynchronousTestCase):
    def backlog_of(self, description: str) -> int:
        reactor = MemoryReactor()
        server_endpoint(reactor, description).listen(Factory())
        listened = reactor.tcpServers or reactor.unixServers
        [entry] = listened
        # (port, factory, backlog, interface) or (address, factory, backlog,
        # mode, wantPID).
        return int(entry[2])

    def test_default(self) -> None:
        """
        TCP, TCP over IPv6, UNIX and a PROXY-protocol TCP listener that set
        no backlog get L{LISTEN_BACKLOG}.
        """
        self.assertEqual(LISTEN_BACKLOG, 511)
        for description in (
            "tcp:8080:interface=127.0.0.1",
            "tcp6:8080",
            "unix:/run/txrouter/web.sock",
            "haproxy:tcp:8080",
        ):
            self.assertEqual(self.backlog_of(description), 511, description)

    def test_given(self) -> None:
        """
        A backlog the string gives, by name or in its place, is kept.
        """
        for description in (
            "tcp:8080:backlog=64",
            "tcp:8080:127.0.0.1:64",
            "unix:/run/txrouter/web.sock:backlog=64",
            "haproxy:tcp:port=8080:backlog=64",
        ):
            self.assertEqual(self.backlog_of(description), 64, description)

    def test_sets_backlog(self) -> None:
        self.assertTrue(sets_backlog("tcp6:8080:backlog=10"))
        self.assertFalse(sets_backlog("tcp6:8080"))
        self.assertFalse(sets_backlog("systemd:domain=INET:index=0"))
