"""
Unit tests of the service tree's lifecycle, on an in-memory reactor: the
pool starts with the service (never when the tree is built), and stopping
closes the ports, drains requests in flight, then stops the pool.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyChannel

from txrouter.assembly import build_service
from txrouter.config import load_config
from txrouter.site import KEEPALIVE_GRACE, RouterRequest, RouterSite

pytestmark = pytest.mark.unit


class ThreadingMemoryReactor(MemoryReactorClock):
    """
    A MemoryReactorClock that also takes calls from other threads; the test
    runs them with L{run_thread_calls}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            queue.Queue()
        )

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.from_threads.put((f, args))

    def run_thread_calls(self, wait: float = 10.0) -> None:
        f, args = self.from_threads.get(timeout=wait)
        f(*args)


def request_in_flight(site: RouterSite) -> RouterRequest:
    """
    A request of C{site} that has been routed and not answered yet.
    """
    channel = DummyChannel()
    channel.site = site
    channel.transport = StringTransport()
    request = RouterRequest(channel)
    request.site = site
    site.getResourceFor(request)
    return request


def make_tree(tmp: Path, drain_timeout: int = 30) -> tuple[Any, ThreadingMemoryReactor]:
    (tmp / "public").mkdir(parents=True)
    config = tmp / "routes.yaml"
    config.write_text(
        "listen: [tcp:8080:interface=127.0.0.1, tcp:8081:interface=127.0.0.1]\n"
        "threads: {min: 1, max: 3}\n"
        f"drain_timeout: {drain_timeout}\n"
        "routes: {/: {static: public}}\n"
    )
    reactor = ThreadingMemoryReactor()
    return build_service(load_config(config), reactor), reactor


class LifecycleTests(SynchronousTestCase):
    """
    Resources are acquired in startService and released in stopService.
    """

    def test_pool_not_started_when_built(self) -> None:
        """
        Building the tree starts no thread: twistd forks after that.
        """
        top, reactor = make_tree(Path(self.mktemp()))
        pool = top.getServiceNamed("threadpool").pool
        self.assertFalse(pool.started)
        self.assertEqual(pool.threads, [])
        self.assertEqual(reactor.tcpServers, [])

    def test_start(self) -> None:
        """
        Starting listens on every endpoint and starts the configured pool.
        """
        top, reactor = make_tree(Path(self.mktemp()))
        top.privilegedStartService()
        top.startService()
        pool = top.getServiceNamed("threadpool").pool
        self.addCleanup(pool.stop)
        self.assertTrue(pool.started)
        self.assertEqual((pool.min, pool.max), (1, 3))
        self.assertEqual([port for port, *_ in reactor.tcpServers], [8080, 8081])

    def test_stop_drains_then_stops_pool(self) -> None:
        """
        Stopping closes the ports first, waits for the request in flight,
        and only then stops the pool.
        """
        top, reactor = make_tree(Path(self.mktemp()))
        top.privilegedStartService()
        top.startService()
        site = top.site
        pool = top.getServiceNamed("threadpool").pool
        request = request_in_flight(site)

        stopped = top.stopService()
        self.assertNoResult(stopped)
        listeners = [s for s in top if s.name.startswith("tcp:")]
        self.assertEqual([s.running for s in listeners], [False, False])
        self.assertTrue(pool.started, "pool stopped while a request was in flight")

        request.finish()
        reactor.advance(KEEPALIVE_GRACE)
        reactor.run_thread_calls()
        self.successResultOf(stopped)
        self.assertFalse(pool.started)

    def test_drain_timeout(self) -> None:
        """
        A request still running after drain_timeout is abandoned and the
        stop completes.
        """
        top, reactor = make_tree(Path(self.mktemp()), drain_timeout=5)
        top.privilegedStartService()
        top.startService()
        request = request_in_flight(top.site)

        stopped = top.stopService()
        reactor.advance(4.9)
        self.assertNoResult(stopped)
        reactor.advance(0.2)
        self.assertTrue(request.channel.transport.disconnected)
        reactor.run_thread_calls()
        self.successResultOf(stopped)
