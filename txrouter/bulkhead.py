"""
Bulkheads: each route serves at most C{max_concurrent} requests at once;
up to C{queue} more wait for a slot, each at most C{wait} seconds; beyond
that the client gets C{503} with C{Retry-After}. So a hung or slow site
fills its own slots and queue, never the shared thread pool, connection
pools or every client connection of the router.

    >>> bulkhead = Bulkhead(reactor, "routes.yaml:9: routes['/']", 4, 100, 60.0)
    >>> resource = BulkheadResource(WSGIResource(...), bulkhead)

The route's own resource implements L{Admitted}: it gets the request and a
C{release} function to call exactly once, when the slot may serve another
request (for an in-process application, only when its thread is free
again, even if the client was answered 504 long before).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from txrouter.errorpage import BUSY, error_page

__all__ = ["RETRY_AFTER", "Admitted", "Bulkhead", "BulkheadResource"]

_log = Logger()

#: Seconds a client refused for want of a slot is told to wait.
RETRY_AFTER = 1

#: Refusals are logged once, then once every this many.
_LOG_EVERY = 1000


class Admitted(Protocol):
    """
    A resource that serves a request once a bulkhead admits it.
    """

    def serve(self, request: Any, release: Callable[[], None]) -> None:
        """
        Serve C{request}; call C{release} once, when the slot is free.
        """


@dataclass(eq=False)
class _Waiter:
    request: Any
    serve: Callable[[Any, Callable[[], None]], None]
    timer: IDelayedCall | None = None
    gone: bool = field(default=False)


class Bulkhead:
    """
    The slots and the waiting line of one route.

    @ivar active: requests holding a slot.
    @ivar rejected: requests answered 503 because the line was full.
    @ivar expired: requests answered 503 after waiting C{wait} seconds.
    """

    def __init__(
        self, reactor: Any, name: str, max_concurrent: int, queue: int, wait: float
    ) -> None:
        """
        @param name: the route, for logs.
        @param max_concurrent: slots; at least 1.
        @param queue: how many requests may wait for a slot.
        @param wait: seconds a request may wait.
        """
        self._reactor = reactor
        self.name = name
        self.max_concurrent = max_concurrent
        self.queue = queue
        self.wait = wait
        self.active = 0
        self.rejected = 0
        self.expired = 0
        self._waiting: deque[_Waiter] = deque()
        self._admitting = False

    @property
    def waiting(self) -> int:
        """
        Requests waiting for a slot.
        """
        return len(self._waiting)

    def admit(
        self, request: Any, serve: Callable[[Any, Callable[[], None]], None]
    ) -> None:
        """
        Call C{serve(request, release)} as soon as a slot is free, or answer
        503.
        """
        if self.active < self.max_concurrent and not self._waiting:
            self.active += 1
            serve(request, self._release)
            return
        if len(self._waiting) >= self.queue:
            self.rejected += 1
            if self.rejected % _LOG_EVERY == 1:
                _log.warn(
                    "{route}: {count} request(s) refused so far (503): all "
                    "{slots} slots busy and {queue} waiting",
                    route=self.name,
                    count=self.rejected,
                    slots=self.max_concurrent,
                    queue=self.queue,
                )
            error_page(request, 503, RETRY_AFTER, BUSY)
            return
        waiter = _Waiter(request, serve)
        waiter.timer = self._reactor.callLater(self.wait, self._expire, waiter)
        request.notifyFinish().addErrback(self._gone, waiter)
        self._waiting.append(waiter)

    def _release(self) -> None:
        self.active -= 1
        if self._admitting:
            return  # the loop below, further up the stack, goes on
        self._admitting = True
        try:
            while self._waiting and self.active < self.max_concurrent:
                waiter = self._waiting.popleft()
                if waiter.timer is not None and waiter.timer.active():
                    waiter.timer.cancel()
                self.active += 1
                waiter.serve(waiter.request, self._release)
        finally:
            self._admitting = False

    def _expire(self, waiter: _Waiter) -> None:
        waiter.timer = None
        self._waiting.remove(waiter)
        self.expired += 1
        if self.expired % _LOG_EVERY == 1:
            _log.warn(
                "{route}: {count} request(s) waited {wait:g}s for a slot and got "
                "503 so far",
                route=self.name,
                count=self.expired,
                wait=self.wait,
            )
        error_page(waiter.request, 503, RETRY_AFTER, BUSY)

    def _gone(self, reason: Failure, waiter: _Waiter) -> None:
        # The client left: its turn is not kept (it may have had it already,
        # and then its own release frees the slot).
        if waiter in self._waiting:
            self._waiting.remove(waiter)
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()


class BulkheadResource(Resource):
    """
    A route's resource behind its bulkhead.
    """

    isLeaf = True

    def __init__(self, inner: Admitted, bulkhead: Bulkhead) -> None:
        super().__init__()
        self.inner = inner
        self.bulkhead = bulkhead

    def render(self, request: Any) -> int:
        self.bulkhead.admit(request, self.inner.serve)
        return NOT_DONE_YET
