"""
L{RouteTable}: one generation of what the router serves, as one immutable
value: the L{Router} over every route's resource, and each route's worker
set, upstream group and file mounts, keyed by the route's stable identity
(L{RouteKey}: host and prefix).

The site serves one table at a time; a new table replaces it in one
assignment (L{txrouter.services.RouterService.serve}), and a request is
served entirely by the table that received it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from txrouter.djangoproject import FileMount
from txrouter.kinds.contract import Built, Route
from txrouter.router import Router
from txrouter.tunnel import Tunnels
from txrouter.upstream import UpstreamGroup
from txrouter.workers import WorkerSet

__all__ = ["MOUNT_KIND", "BuiltRoute", "RouteKey", "RouteTable", "kind_at"]

#: The kind of a prefix the router serves that is not a route of the file
#: (a Django project's C{STATIC_URL} or C{MEDIA_URL}), for the metrics.
MOUNT_KIND = "static"


@dataclass(frozen=True, order=True)
class RouteKey:
    """
    A route's identity, the same in every table built from any version of
    the routes file: its host (C{""} for the default host) and its prefix.
    """

    host: str
    prefix: str

    def __str__(self) -> str:
        return f"{self.host}{self.prefix}" if self.host else self.prefix


@dataclass(frozen=True)
class BuiltRoute:
    """
    One route of a table: what the file said, and what was built for it.
    """

    key: RouteKey
    route: Route
    built: Built

    @property
    def workers(self) -> WorkerSet | None:
        return self.built.workers

    @property
    def upstreams(self) -> UpstreamGroup | None:
        return self.built.upstreams

    @property
    def mounts(self) -> tuple[FileMount, ...]:
        return self.built.mounts

    @property
    def tunnels(self) -> Tunnels | None:
        return self.built.tunnels


@dataclass(frozen=True)
class RouteTable:
    """
    One generation of the routes.

    @ivar generation: 1 for the table built at start, one more for each
        table built since.
    @ivar router: the site's root resource for this table.
    @ivar routes: every route, by key, in file order.
    @ivar warnings: what the build found worth telling (a Django project
        without C{STATIC_ROOT}, say); the server logs them, C{txrouter
        check} prints them.
    @ivar apps: what routes share (an in-process application's resource),
        by key, for the next build to keep.
    """

    generation: int
    router: Router
    routes: Mapping[RouteKey, BuiltRoute]
    warnings: tuple[str, ...] = ()
    apps: Mapping[Any, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "routes", MappingProxyType(dict(self.routes)))
        object.__setattr__(self, "apps", MappingProxyType(dict(self.apps)))

    def worker_sets(self) -> list[WorkerSet]:
        """
        The worker sets of every route that has workers, in file order.
        """
        return [r.workers for r in self.routes.values() if r.workers is not None]

    def carry_counters(self, previous: RouteTable) -> None:
        """
        Add to this table's workers and upstreams the counts of failures,
        retries and restarts of those they replace in C{previous} (same
        route and kind; a worker by its number, an upstream by its URL),
        so that these counters never go backwards for a route that
        stays. Called once, as this table replaces C{previous}.
        """
        for key, entry in self.routes.items():
            before = previous.routes.get(key)
            if (
                before is None
                or before is entry
                or before.route.kind != entry.route.kind
                or before.upstreams is None
                or entry.upstreams is None
                or (before.workers is None) != (entry.workers is None)
            ):
                continue
            old, new = before.upstreams.members, entry.upstreams.members
            if entry.workers is None:
                by_name = {m.name: m for m in old}
                pairs = [(by_name[m.name], m) for m in new if m.name in by_name]
            else:
                pairs = list(zip(old, new, strict=False))
            for was, now in pairs:
                now.failures += was.failures
                now.retries += was.retries
                now.restarts += was.restarts

    def describe(self) -> list[dict[str, Any]]:
        """
        The table as plain data (for logs and status output).
        """
        return [
            {"host": key.host, "prefix": key.prefix, "kind": entry.route.kind}
            for key, entry in self.routes.items()
        ]


def kind_at(routes: Mapping[RouteKey, BuiltRoute], key: RouteKey) -> str:
    """
    The kind of what a table serves at C{key}: its route's, or
    L{MOUNT_KIND} for a folder mounted beside a route.
    """
    entry = routes.get(key)
    return MOUNT_KIND if entry is None else entry.route.kind
