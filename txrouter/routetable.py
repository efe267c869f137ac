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
from txrouter.upstream import UpstreamGroup
from txrouter.workers import WorkerSet

__all__ = ["BuiltRoute", "RouteKey", "RouteTable"]


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

    def describe(self) -> list[dict[str, Any]]:
        """
        The table as plain data (for logs and status output).
        """
        return [
            {"host": key.host, "prefix": key.prefix, "kind": entry.route.kind}
            for key, entry in self.routes.items()
        ]
