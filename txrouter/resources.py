"""
Build the resource tree for a L{Config}: one resource per route, the
static and media folders of each Django project, and the L{Router} over
them. In-process applications are imported here, once per config; routes
with C{workers} get a L{WorkerSet} behind the proxy engine instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import IResource

from txrouter.config import Config
from txrouter.djangoproject import FileMount, file_mounts, load_django
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
from txrouter.workers import WorkerMonitor, WorkerSet
from txrouter.wsgi import WSGIResource

__all__ = ["Engines", "build_router"]

_log = Logger()

#: Seconds a worker has to start answering a request.
WORKER_TIMEOUT = 300.0


@dataclass
class Engines:
    """
    What the routes of one process share.

    @ivar monitor: supervises worker processes, if any route has workers.
    @ivar runtime_dir: where worker sockets go.
    @ivar warnings: problems that do not stop the start (a worker project
        whose settings cannot be read, say), for the caller to report.
    """

    reactor: Any
    pool: ThreadPool
    client: ProxyClient
    trusted: TrustedProxies
    monitor: WorkerMonitor
    runtime_dir: str
    drain_timeout: float
    warnings: list[str] = field(default_factory=list)


class _Builder:
    """
    Builds resources, loading each in-process application once.
    """

    def __init__(self, engines: Engines) -> None:
        self.engines = engines
        self._apps: dict[Any, IResource] = {}
        self._routes = 0
        self.mounts: dict[int, tuple[FileMount, ...]] = {}

    def resource(self, route: Route) -> IResource:
        try:
            return self._resource(route)
        except AppLoadError as e:
            raise AppLoadError(f"{route.origin}: {e}") from None

    def _resource(self, route: Route) -> IResource:
        engines = self.engines
        if isinstance(route, StaticRoute):
            return StaticFiles.for_root(route.root, route.cache)
        if isinstance(route, RedirectRoute):
            return Redirect(route.target, route.status)
        if isinstance(route, ProxyRoute):
            return self._proxy(route)
        if route.workers:
            return self._workers(route)
        if isinstance(route, WsgiRoute):
            key: Any = (route.app, route.path)
            if key not in self._apps:
                app = import_app(route.app, [route.path] if route.path else [])
                self._apps[key] = WSGIResource(engines.reactor, engines.pool, app)
            return self._apps[key]
        key = (route.project, route.settings)
        if key not in self._apps:
            django = load_django(route.project, route.settings, route.prefix)
            self._apps[key] = WSGIResource(
                engines.reactor, engines.pool, django.application
            )
            self.mounts[id(route)] = django.mounts
        else:
            self.mounts[id(route)] = tuple(file_mounts(route.settings, route.prefix))
        return self._apps[key]

    def _proxy(self, route: ProxyRoute) -> IResource:
        engines = self.engines
        members = [
            Upstream.from_url(
                engines.reactor, url, route.connect_timeout, route.tls_verify
            )
            for url in route.upstreams
        ]
        settings = ProxySettings(
            name=str(route.origin),
            timeout=route.timeout,
            preserve_host=route.preserve_host,
            trusted=engines.trusted,
            # Known once per route: X-Forwarded-Prefix needs no work per request.
            prefix=route.prefix.rstrip("/").encode("utf-8"),
        )
        group = UpstreamGroup(engines.reactor, members)
        return ProxyResource(engines.reactor, engines.client, group, settings)

    def _workers(self, route: DjangoRoute | WsgiRoute) -> IResource:
        engines = self.engines
        self._routes += 1
        workers = WorkerSet(
            engines.reactor,
            engines.monitor,
            route,
            engines.runtime_dir,
            self._routes,
            engines.drain_timeout,
        )
        if isinstance(route, DjangoRoute):
            self.mounts[id(route)] = self._describe(route)
        settings = ProxySettings(
            name=str(route.origin),
            timeout=WORKER_TIMEOUT,
            preserve_host=True,
            trusted=engines.trusted,
            worker_token=workers.token,
        )
        return ProxyResource(engines.reactor, engines.client, workers.group, settings)

    def _describe(self, route: DjangoRoute) -> tuple[FileMount, ...]:
        """
        Ask a short-lived process where a worker project's static and media
        files are: its settings must not be imported here.
        """
        command = [
            sys.executable,
            "-m",
            "txrouter.worker",
            "describe",
            "--prefix",
            route.prefix,
            "--django",
            str(route.project),
            "--settings",
            route.settings,
        ]
        env = {**os.environ, **dict(route.env)} if route.env else None
        result = subprocess.run(
            command,
            cwd=route.project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            self.engines.warnings.append(
                f"{route.origin}: cannot read the settings of {route.settings!r}, "
                f"so its static and media files are not served: "
                f"{result.stderr.strip().splitlines()[-1:]}"
            )
            return ()
        return tuple(
            FileMount(m["setting"], m["prefix"], Path(m["root"]) if m["root"] else None)
            for m in json.loads(result.stdout)
        )


def build_router(config: Config, engines: Engines) -> Router:
    """
    Build every route's resource and the router over them.

    @raise AppLoadError: an in-process application failed to load; the
        message starts with the route's C{file:line}.
    """
    builder = _Builder(engines)
    tables: dict[str, dict[str, IResource]] = {}
    for host, routes in config.tables.items():
        table = tables[host] = {}
        for prefix, route in routes.items():
            table[prefix] = builder.resource(route)
        for route in routes.values():
            if isinstance(route, DjangoRoute):
                _mount_files(table, route, builder.mounts.get(id(route), ()))
    return Router(tables)


def _mount_files(
    table: dict[str, IResource], route: DjangoRoute, mounts: tuple[FileMount, ...]
) -> None:
    """
    Serve a Django project's C{STATIC_ROOT} and C{MEDIA_ROOT} at its
    C{STATIC_URL} and C{MEDIA_URL}, unless the routes file routes them.
    """
    for mount in mounts:
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
