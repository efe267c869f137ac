"""
L{ThreadPoolService}: the one shared thread pool, started by C{startService}.

C{twistd} forks to daemonize after the application is built; threads
started before that die in the fork and leave a server that accepts
connections and never answers (Twisted ticket #4347). A service starts the
pool only once the reactor runs, in the daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from threading import Thread
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

__all__ = ["ThreadPoolService", "make_pool"]


def _daemon_thread(*args: Any, **kwargs: Any) -> Thread:
    # A request still stuck in application code after drain_timeout must not
    # keep the process alive once the reactor has stopped.
    return Thread(*args, daemon=True, **kwargs)


def make_pool(minimum: int, maximum: int, name: str) -> ThreadPool:
    """
    A pool whose threads never keep the process alive.
    """
    pool = ThreadPool(minimum, maximum, name)
    pool.threadFactory = _daemon_thread  # type: ignore[assignment]
    return pool


class ThreadPoolService(Service):
    """
    Start C{pool} with the service; stop it with the service without
    blocking the reactor.

    Stopping joins the pool's threads in a helper thread: a thread that is
    still inside application code may need the reactor to finish its
    request, so the reactor must keep running while we wait.
    """

    _log = Logger()

    def __init__(
        self,
        pool: ThreadPool,
        reactor: IReactorThreads,
        grace: float | Callable[[], float] = 5.0,
    ) -> None:
        """
        @param grace: seconds to wait for busy threads before giving up on
            them (they are daemon threads and die with the process), or a
            function that tells them when the service stops.
        """
        self.pool = pool
        self._reactor = reactor
        self._grace = grace

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        stopped: Deferred[None] = Deferred()

        def fire() -> None:
            if not stopped.called:
                stopped.callback(None)

        def join() -> None:
            self.pool.stop()
            self._reactor.callFromThread(fire)

        Thread(target=join, name=f"{self.pool.name}-stop", daemon=True).start()
        clock: IReactorTime = self._reactor  # type: ignore[assignment]
        grace = self._grace() if callable(self._grace) else self._grace
        timer = clock.callLater(min(grace, 5.0), self._abandon, fire, grace)
        stopped.addBoth(lambda _: timer.cancel() if timer.active() else None)
        return stopped

    def _abandon(self, fire: Any, grace: float) -> None:
        self._log.warn(
            "Thread pool {name} still busy after {grace}s; leaving its threads",
            name=self.pool.name,
            grace=min(grace, 5.0),
        )
        fire()
