"""
Build the resource tree for a L{Config}: one resource per route, the
static and media folders of each Django project, and the L{Router} over
them. Applications are imported here, once per config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import IResource
from twisted.web.wsgi import WSGIResource

from txrouter.config import Config
from txrouter.djangoproject import DjangoApp, load_django
from txrouter.errors import AppLoadError
from txrouter.forwarding import TrustedProxies
from txrouter.importer import import_app
from txrouter.proxy import ProxyResource, ProxySettings
from txrouter.proxyclient import ProxyClient
from txrouter.redirect import Redirect
from txrouter.router import Router
from txrouter.routespec import (
    DjangoRoute,
    ProxyRoute,
    RedirectRoute,
    Route,
    StaticRoute,
    WsgiRoute,
)
from txrouter.staticfiles import StaticFiles
from txrouter.upstream import Upstream, UpstreamGroup

__all__ = ["build_router"]

_log = Logger()


class _Builder:
    """
    Builds resources, loading each application once.
    """

    def __init__(
        self,
        reactor: IReactorThreads,
        pool: ThreadPool,
        client: ProxyClient,
        trusted: TrustedProxies,
    ) -> None:
        self._reactor = reactor
        self._pool = pool
        self._client = client
        self._trusted = trusted
        self._apps: dict[Any, IResource] = {}
        self.django: dict[tuple[Path, str], DjangoApp] = {}

    def resource(self, route: Route) -> IResource:
        try:
            return self._resource(route)
        except AppLoadError as e:
            raise AppLoadError(f"{route.origin}: {e}") from None

    def _resource(self, route: Route) -> IResource:
        if isinstance(route, StaticRoute):
            return StaticFiles.for_root(route.root, route.cache)
        if isinstance(route, RedirectRoute):
            return Redirect(route.target, route.status)
        if isinstance(route, WsgiRoute):
            key: Any = (route.app, route.path)
            if key not in self._apps:
                app = import_app(route.app, [route.path] if route.path else [])
                self._apps[key] = WSGIResource(self._reactor, self._pool, app)
            return self._apps[key]
        if isinstance(route, DjangoRoute):
            key = (route.project, route.settings)
            if key not in self.django:
                self.django[key] = load_django(
                    route.project, route.settings, route.prefix
                )
                self._apps[key] = WSGIResource(
                    self._reactor, self._pool, self.django[key].application
                )
            return self._apps[key]
        assert isinstance(route, ProxyRoute)
        return self._proxy(route)

    def _proxy(self, route: ProxyRoute) -> IResource:
        members = [
            Upstream.from_url(
                self._reactor, url, route.connect_timeout, route.tls_verify
            )
            for url in route.upstreams
        ]
        settings = ProxySettings(
            name=str(route.origin),
            timeout=route.timeout,
            preserve_host=route.preserve_host,
            trusted=self._trusted,
        )
        group = UpstreamGroup(self._reactor, members)  # type: ignore[arg-type]
        return ProxyResource(self._reactor, self._client, group, settings)


def build_router(
    config: Config, reactor: IReactorThreads, pool: ThreadPool, client: ProxyClient
) -> Router:
    """
    Build every route's resource and the router over them.

    @param client: the process's one HTTP client, for proxy routes.
    @raise AppLoadError: an application failed to load; the message starts
        with the route's C{file:line}.
    """
    builder = _Builder(reactor, pool, client, TrustedProxies(config.trusted_proxies))
    tables: dict[str, dict[str, IResource]] = {}
    for host, routes in config.tables.items():
        table = tables[host] = {}
        for prefix, route in routes.items():
            table[prefix] = builder.resource(route)
        for route in routes.values():
            if isinstance(route, DjangoRoute):
                _mount_files(
                    table, route, builder.django[(route.project, route.settings)]
                )
    return Router(tables)


def _mount_files(
    table: dict[str, IResource], route: DjangoRoute, app: DjangoApp
) -> None:
    """
    Serve a Django project's C{STATIC_ROOT} and C{MEDIA_ROOT} at its
    C{STATIC_URL} and C{MEDIA_URL}, unless the routes file routes them.
    """
    for mount in app.mounts:
        if mount.prefix in table:
            _log.info(
                "{origin}: {setting}_URL {prefix} is routed explicitly; "
                "not serving {setting}_ROOT there",
                origin=route.origin,
                setting=mount.setting,
                prefix=mount.prefix,
            )
            continue
        if mount.root is None:
            _log.warn(
                "{origin}: {setting}_ROOT is not set, so {prefix} is not served; "
                "set it (and run 'manage.py collectstatic' for STATIC)",
                origin=route.origin,
                setting=mount.setting,
                prefix=mount.prefix,
            )
            continue
        if not mount.root.is_dir():
            _log.warn(
                "{origin}: {setting}_ROOT {root} does not exist yet"
                + (
                    " (run 'manage.py collectstatic')"
                    if mount.setting == "STATIC"
                    else ""
                ),
                origin=route.origin,
                setting=mount.setting,
                root=str(mount.root),
            )
        table[mount.prefix] = StaticFiles.for_root(mount.root, None)
