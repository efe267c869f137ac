"""
The service tree behind C{twistd txrouter}: one L{RouterService} holding
the shared L{ThreadPoolService}, a L{DrainService} and one listening service
per C{listen} endpoint.

Children start in the order they were added and stop one at a time in the
reverse order: the ports stop listening, then the requests in flight drain
(at most C{drain_timeout}), then the thread pool stops.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from txrouter.config import Config
from txrouter.errors import ListenError
from txrouter.forwarding import TrustedProxies
from txrouter.proxyclient import ProxyClient, ProxyClientService
from txrouter.resources import Engines, build_router
from txrouter.site import RouterSite
from txrouter.threadpool import ThreadPoolService, make_pool
from txrouter.workers import WorkerMonitor

_log = Logger()

__all__ = ["DrainService", "ListenerService", "RouterService", "build_service"]


class RouterService(MultiService):
    """
    A C{MultiService} whose children stop one after the other, last added
    first.
    """

    #: The site and shared engines, once built (see L{build_service}).
    site: RouterSite | None = None
    engines: Engines | None = None

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


class RuntimeDirService(Service):
    """
    The private folder of worker sockets: created (mode 0700) with the
    tree, emptied when the workers have stopped, and removed if it was a
    temporary one.
    """

    def __init__(self, path: str, temporary: bool) -> None:
        self.path = path
        self._temporary = temporary

    def stopService(self) -> None:
        super().stopService()
        for name in os.listdir(self.path):
            if name.endswith(".sock"):
                os.unlink(os.path.join(self.path, name))
        if self._temporary:
            os.rmdir(self.path)


def _runtime_dir(config: Config) -> tuple[str, bool]:
    if config.runtime_dir is None:
        return tempfile.mkdtemp(prefix="txrouter-"), True
    path = str(config.runtime_dir)
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path, False


def build_service(config: Config, reactor: Any) -> RouterService:
    """
    Build the whole service tree for C{config}, loading every in-process
    application.

    Nothing runs yet: the pool starts, the workers start and the ports
    listen when the service starts (after twistd has daemonized).
    """
    pool = make_pool(config.threads.min, config.threads.max, "txrouter")
    client = ProxyClient(reactor)
    monitor = WorkerMonitor(reactor, kill_time=config.drain_timeout)
    has_workers = any(getattr(route, "workers", 0) for route in config.routes())
    runtime_dir, temporary = _runtime_dir(config) if has_workers else ("", False)
    engines = Engines(
        reactor=reactor,
        pool=pool,
        client=client,
        trusted=TrustedProxies(config.trusted_proxies),
        monitor=monitor,
        runtime_dir=runtime_dir,
        drain_timeout=config.drain_timeout,
    )
    router = build_router(config, engines)
    for warning in engines.warnings:
        _log.warn("{warning}", warning=warning)
    site = RouterSite(router, reactor, config.access_log)

    top = RouterService()
    top.setName("txrouter")
    _child(top, "threadpool", ThreadPoolService(pool, reactor))
    _child(top, "proxyclient", ProxyClientService(client))
    if has_workers:
        _child(top, "runtime_dir", RuntimeDirService(runtime_dir, temporary))
        _child(top, "workers", monitor)
    _child(top, "drain", DrainService(site, config.drain_timeout))
    for description in config.listen:
        endpoint = serverFromString(reactor, description)
        ListenerService(description, endpoint, site).setServiceParent(top)
    top.site = site
    top.engines = engines
    return top


def _child(parent: MultiService, name: str, child: Service) -> None:
    child.setName(name)
    child.setServiceParent(parent)
