"""
The service tree behind C{twistd txrouter}: one L{RouterService} holding
the shared L{ThreadPoolService}, a L{DrainService} and one listening service
per C{listen} endpoint.

Children start in the order they were added and stop one at a time in the
reverse order: the ports stop listening, then the requests in flight drain
(at most C{drain_timeout}), then the thread pool stops.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.endpoints import serverFromString

from txrouter.config import Config
from txrouter.resources import build_router
from txrouter.site import RouterSite
from txrouter.threadpool import ThreadPoolService, make_pool

__all__ = ["DrainService", "RouterService", "build_service"]


class RouterService(MultiService):
    """
    A C{MultiService} whose children stop one after the other, last added
    first.
    """

    @inlineCallbacks
    def stopService(self) -> Any:
        Service.stopService(self)
        for child in reversed(list(self)):
            yield maybeDeferred(child.stopService)


class DrainService(Service):
    """
    On stop, wait for the site's requests in flight (at most C{timeout}).
    """

    def __init__(self, site: RouterSite, timeout: float) -> None:
        self._site = site
        self._timeout = timeout

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self._site.drain(self._timeout)


def build_service(config: Config, reactor: Any) -> RouterService:
    """
    Build the whole service tree for C{config}, loading every application.

    Nothing runs yet: the pool starts and the ports listen when the service
    starts.
    """
    pool = make_pool(config.threads.min, config.threads.max, "txrouter")
    router = build_router(config, reactor, pool)
    site = RouterSite(router, reactor, config.access_log)

    top = RouterService()
    top.setName("txrouter")
    ThreadPoolService(pool, reactor).setServiceParent(top)
    DrainService(site, config.drain_timeout).setServiceParent(top)
    for description in config.listen:
        listener = StreamServerEndpointService(
            serverFromString(reactor, description), site
        )
        # Refuse to start (rather than log and serve nothing) when a port
        # cannot be bound.
        listener._raiseSynchronously = True
        listener.setName(description)
        listener.setServiceParent(top)
    top.site = site  # type: ignore[attr-defined]
    return top
