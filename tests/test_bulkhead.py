"""
Unit tests of L{txrouter.bulkhead}: a route serves at most
C{max_concurrent} requests at once, lets C{queue} more wait in order for at
most C{wait} seconds, and answers the rest 503 with C{Retry-After}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from txrouter.bulkhead import RETRY_AFTER, Bulkhead, BulkheadResource
from txrouter.errorpage import BUSY

pytestmark = pytest.mark.unit


class Held:
    """
    A route's resource that keeps each request it is given, with its
    release, until the test ends it.
    """

    def __init__(self) -> None:
        self.serving: list[tuple[DummyRequest, Callable[[], None]]] = []

    def serve(self, request: Any, release: Callable[[], None]) -> None:
        self.serving.append((request, release))

    def end(self, index: int = 0) -> DummyRequest:
        """
        Answer the request being served at C{index} and free its slot.
        """
        request, release = self.serving.pop(index)
        request.write(b"ok")
        request.finish()
        release()
        return request


class Immediate:
    """
    A route's resource that answers at once.
    """

    def __init__(self) -> None:
        self.served = 0

    def serve(self, request: Any, release: Callable[[], None]) -> None:
        self.served += 1
        request.finish()
        release()


def request(name: bytes = b"/") -> DummyRequest:
    return DummyRequest([name])


class BulkheadTests(SynchronousTestCase):
    """
    Slots, the waiting line and its limits.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.inner = Held()
        self.bulkhead = Bulkhead(self.clock, "routes.yaml:3: routes['/']", 2, 2, 30.0)
        self.resource = BulkheadResource(self.inner, self.bulkhead)

    def render(self) -> DummyRequest:
        req = request()
        self.assertEqual(self.resource.render(req), NOT_DONE_YET)
        return req

    def assertBusy(self, req: DummyRequest) -> None:
        self.assertEqual(req.responseCode, 503)
        self.assertEqual(req.responseHeaders.getRawHeaders(b"retry-after"), [b"1"])
        self.assertEqual(b"".join(req.written), BUSY)
        self.assertEqual(req.finished, 1)

    def test_slots_then_line_in_order(self) -> None:
        """
        Two requests are served at once; the next two wait and are served in
        order as slots free up.
        """
        first, second, third, fourth = (self.render() for _ in range(4))
        self.assertEqual([r for r, _ in self.inner.serving], [first, second])
        self.assertEqual((self.bulkhead.active, self.bulkhead.waiting), (2, 2))
        self.inner.end(0)
        self.assertEqual([r for r, _ in self.inner.serving], [second, third])
        self.inner.end(0)
        self.assertEqual([r for r, _ in self.inner.serving], [third, fourth])
        self.inner.end(0)
        self.inner.end(0)
        self.assertEqual((self.bulkhead.active, self.bulkhead.waiting), (0, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_line_full(self) -> None:
        """
        With every slot busy and the line full, a request gets 503 with
        C{Retry-After} at once, and is counted.
        """
        for _ in range(4):
            self.render()
        refused = self.render()
        self.assertBusy(refused)
        self.assertEqual(self.bulkhead.rejected, 1)
        self.assertEqual(RETRY_AFTER, 1)
        self.assertEqual(len(self.inner.serving), 2)

    def test_wait_expires(self) -> None:
        """
        A request that waited C{wait} seconds for a slot gets 503; it is not
        served when a slot frees up later.
        """
        for _ in range(2):
            self.render()
        waiting = self.render()
        self.clock.advance(29.9)
        self.assertEqual(waiting.finished, 0)
        self.clock.advance(0.1)
        self.assertBusy(waiting)
        self.assertEqual((self.bulkhead.expired, self.bulkhead.waiting), (1, 0))
        self.inner.end()
        self.assertEqual(len(self.inner.serving), 1)
        self.assertEqual(self.bulkhead.active, 1)

    def test_client_leaves_the_line(self) -> None:
        """
        A waiting client that goes away gives up its place and its timer.
        """
        for _ in range(2):
            self.render()
        gone = self.render()
        kept = self.render()
        gone.processingFailed(Failure(ConnectionDone()))
        self.assertEqual(self.bulkhead.waiting, 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.inner.end()
        self.assertEqual([r for r, _ in self.inner.serving][-1], kept)

    def test_no_line(self) -> None:
        """
        With C{queue: 0}, a request beyond the slots is refused at once.
        """
        bulkhead = Bulkhead(self.clock, "r", 1, 0, 30.0)
        resource = BulkheadResource(self.inner, bulkhead)
        resource.render(request())
        refused = request()
        resource.render(refused)
        self.assertBusy(refused)

    def test_answered_at_once_many_waiting(self) -> None:
        """
        A resource that frees its slot while it is being given it (an error
        page at once) lets a long line through without deep recursion.
        """
        inner = Immediate()
        bulkhead = Bulkhead(self.clock, "r", 1, 5000, 30.0)
        resource = BulkheadResource(inner, bulkhead)
        held = Held()
        blocker = BulkheadResource(held, bulkhead)
        blocker.render(request())
        waiting = [request() for _ in range(5000)]
        for req in waiting:
            resource.render(req)
        held.end()
        self.assertEqual(inner.served, 5000)
        self.assertTrue(all(req.finished for req in waiting))
        self.assertEqual((bulkhead.active, bulkhead.waiting), (0, 0))
