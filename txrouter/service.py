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
from twisted.internet.error import CannotListenError

from txrouter.config import Config
from txrouter.errors import ListenError
from txrouter.proxyclient import ProxyClient, ProxyClientService
from txrouter.resources import build_router
from txrouter.site import RouterSite
from txrouter.threadpool import ThreadPoolService, make_pool

__all__ = ["DrainService", "ListenerService", "RouterService", "build_service"]


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


class ListenerService(StreamServerEndpointService):
    """
    Listen on one endpoint; fail the start, with a short message, when it
    cannot be bound.
    """

    def __init__(self, description: str, endpoint: Any, site: RouterSite) -> None:
        super().__init__(endpoint, site)
        self.setName(description)
        # Raise from privilegedStartService rather than log and serve nothing.
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or e.socketError
            raise ListenError(f"{reason}: {self.name}") from None


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
    client = ProxyClient(reactor)
    router = build_router(config, reactor, pool, client)
    site = RouterSite(router, reactor, config.access_log)

    top = RouterService()
    top.setName("txrouter")
    pool_service = ThreadPoolService(pool, reactor)
    pool_service.setName("threadpool")
    pool_service.setServiceParent(top)
    proxy_client = ProxyClientService(client)
    proxy_client.setName("proxyclient")
    proxy_client.setServiceParent(top)
    drain = DrainService(site, config.drain_timeout)
    drain.setName("drain")
    drain.setServiceParent(top)
    for description in config.listen:
        endpoint = serverFromString(reactor, description)
        ListenerService(description, endpoint, site).setServiceParent(top)
    top.site = site  # type: ignore[attr-defined]
    return top
