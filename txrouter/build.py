"""
Assemble a L{RouteTable} from a L{Config}: each route is built by its kind
(L{txrouter.kinds}), in-process applications are loaded once each, and a
Django project's static and media folders are mounted beside its route.

Building acquires nothing: no thread starts, no process starts, no folder
or socket is made; that is the services' work when they start. So the
same build serves C{txrouter check}, which reports every problem a server
would meet (every application that fails to load, every warning).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import IResource

from txrouter.accesslog import STATIC, served_by
from txrouter.config import Config
from txrouter.djangoproject import FileMount
from txrouter.errors import AppLoadError
from txrouter.forwarding import TrustedProxies
from txrouter.health import RouterHealth
from txrouter.kinds import Route, kind_of
from txrouter.proxyclient import ProxyClient
from txrouter.router import Router
from txrouter.routestats import RouteStats
from txrouter.routetable import BuiltRoute, RouteKey, RouteTable, kind_at
from txrouter.staticfiles import StaticFiles
from txrouter.workers import WorkerMonitor

__all__ = ["Builder", "Engines", "build_table"]

_log = Logger()

_T = TypeVar("_T")


@dataclass(frozen=True)
class Engines:
    """
    What every route table of one router shares.

    @ivar pool: the one thread pool of in-process applications.
    @ivar client: the proxy engine's connection pool.
    @ivar monitor: supervises worker processes.
    @ivar runtime_dir: where worker sockets go (made when the service
        starts, not here).
    @ivar instance: a few characters unique to this router process, in
        its workers' socket names, so that an upgraded router's workers
        never take the sockets of the old one's in a shared C{runtime_dir}.
    @ivar health: what the router's health checks read (C{health:} routes).
    """

    reactor: Any
    pool: ThreadPool
    client: ProxyClient
    trusted: TrustedProxies
    monitor: WorkerMonitor
    runtime_dir: str
    drain_timeout: float
    instance: str = ""
    health: RouterHealth | None = None


class Builder:
    """
    What a route kind's C{build} gets: the engines, objects shared between
    routes (an application mounted twice is loaded once), and a place for
    warnings.
    """

    def __init__(
        self,
        engines: Engines,
        generation: int,
        kept: Mapping[Any, Any],
        in_process: int = 0,
    ) -> None:
        """
        @param generation: the number of the table being built.
        @param kept: shared objects of the previous table, to use again.
        @param in_process: how many routes of the table run an application
            in the router process, on the shared pool.
        """
        self.engines = engines
        self.generation = generation
        self.in_process = in_process
        self.warnings: list[str] = []
        self._kept = kept
        self._shared: dict[Any, Any] = {}

    def shared(self, key: Any, make: Callable[[], _T]) -> _T:
        """
        The object made for C{key} in this build, made now if it is the first.
        """
        if key not in self._shared:
            self._shared[key] = self._kept[key] if key in self._kept else make()
        return self._shared[key]  # type: ignore[no-any-return]

    def shared_objects(self) -> dict[Any, Any]:
        """
        What this build's routes share, by key.
        """
        return dict(self._shared)

    def warn(self, message: str) -> None:
        """
        Note something the server would warn about.
        """
        self.warnings.append(message)


def same_route(a: Route, b: Route) -> bool:
    """
    Whether two routes say the same, wherever in the file they stand.
    """
    return type(a) is type(b) and replace(a, origin=b.origin) == b  # type: ignore[type-var]


def build_table(
    config: Config,
    engines: Engines,
    generation: int = 1,
    previous: RouteTable | None = None,
    renew: frozenset[RouteKey] = frozenset(),
) -> RouteTable:
    """
    Build every route of C{config} and the router over them.

    @param previous: the table being replaced: a route it has under the
        same key, saying the same, is taken over as it is (its workers
        keep running, its upstreams keep their health), unless its key is
        in C{renew}; a route of the same key and kind keeps its counters
        (L{txrouter.routestats}) even when it changed.
    @raise AppLoadError: in-process applications failed to load; the
        message lists each, with its route's C{file:line}.
    """
    in_process = sum(
        1
        for table in config.tables.values()
        for route in table.values()
        if getattr(route, "workers", None) == 0
    )
    builder = Builder(
        engines, generation, previous.apps if previous else {}, in_process
    )
    failures = []
    routes: dict[RouteKey, BuiltRoute] = {}
    resources: dict[str, dict[str, IResource]] = {}
    for host, table in config.tables.items():
        served = resources[host] = {}
        for prefix, route in table.items():
            key = RouteKey(host, prefix)
            old = previous.routes.get(key) if previous else None
            if old is not None and key not in renew and same_route(old.route, route):
                routes[key] = old
                served[prefix] = old.built.resource
                continue
            try:
                built = kind_of(route).build(route, key, builder)
            except AppLoadError as e:
                failures.append(f"{route.origin}: {e}")
                continue
            routes[key] = BuiltRoute(key, route, built)
            served[prefix] = built.resource
        for entry in [r for r in routes.values() if r.key.host == host]:
            _mount_files(served, entry.route, entry.mounts, builder)
    if failures:
        raise AppLoadError("\n".join(failures))
    max_body: dict[str, dict[str, int]] = {}
    for key, entry in routes.items():
        size = getattr(entry.route, "max_body", None)
        if size is not None:
            max_body.setdefault(key.host, {})[key.prefix] = size
    return RouteTable(
        generation,
        Router(
            resources,
            max_body,
            _served_by(resources, routes),
            _kept_stats(resources, routes, previous),
            config.hsts,
        ),
        routes,
        tuple(builder.warnings),
        builder.shared_objects(),
    )


def _served_by(
    resources: Mapping[str, Mapping[str, IResource]],
    routes: Mapping[RouteKey, BuiltRoute],
) -> dict[str, dict[str, str]]:
    """
    Who serves each prefix's requests, for the access log: each route its
    own way; the other prefixes are a Django project's static and media
    folders, served by the router's static files.
    """
    found: dict[str, dict[str, str]] = {}
    for host, table in resources.items():
        for prefix in table:
            entry = routes.get(RouteKey(host, prefix))
            found.setdefault(host, {})[prefix] = (
                STATIC
                if entry is None
                else served_by(
                    entry.route.kind,
                    entry.workers is not None,
                    entry.upstreams is not None,
                )
            )
    return found


def _kept_stats(
    resources: Mapping[str, Mapping[str, IResource]],
    routes: Mapping[RouteKey, BuiltRoute],
    previous: RouteTable | None,
) -> dict[str, dict[str, RouteStats]]:
    """
    The counters of C{previous}'s prefixes that the new table serves too,
    with the same kind: Prometheus counters must not go backwards for a
    route that stays (one whose kind changes is a new series).
    """
    kept: dict[str, dict[str, RouteStats]] = {}
    if previous is None:
        return kept
    for host, table in resources.items():
        for prefix in table:
            old = previous.router.stats.get((host, prefix))
            key = RouteKey(host, prefix)
            if old is not None and kind_at(previous.routes, key) == kind_at(
                routes, key
            ):
                kept.setdefault(host, {})[prefix] = old
    return kept


def _mount_files(
    served: dict[str, IResource],
    route: Route,
    mounts: tuple[FileMount, ...],
    builder: Builder,
) -> None:
    """
    Serve a Django project's C{STATIC_ROOT} and C{MEDIA_ROOT} at its
    C{STATIC_URL} and C{MEDIA_URL}, unless the routes file routes them.
    """
    for mount in mounts:
        if mount.prefix in served:
            _log.info(
                "{origin}: {setting}_URL {prefix} is routed explicitly; "
                "not serving {setting}_ROOT there",
                origin=route.origin,
                setting=mount.setting,
                prefix=mount.prefix,
            )
            continue
        if mount.root is None:
            builder.warn(
                f"{route.origin}: {mount.setting}_ROOT is not set, so "
                f"{mount.prefix} is not served; set it"
                + (
                    " (and run 'manage.py collectstatic')"
                    if mount.setting == "STATIC"
                    else ""
                )
            )
            continue
        if not mount.root.is_dir():
            builder.warn(
                f"{route.origin}: {mount.setting}_ROOT {mount.root} does not "
                "exist yet"
                + (
                    " (run 'manage.py collectstatic')"
                    if mount.setting == "STATIC"
                    else ""
                )
            )
        served[mount.prefix] = StaticFiles.for_root(mount.root, None)
