"""
What a route kind provides: the L{RouteKind} record that each module of
L{txrouter.kinds} exports as C{KIND}, and what its C{build} returns.

A kind reads and checks its own options (at config load, pure: no reactor,
no application import) and builds its resource (when a route table is
built). Everything the rest of txrouter knows about a kind goes through
this record, so adding a kind is one new module and one registry line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from twisted.web.resource import IResource

from txrouter.routespec import Origin

if TYPE_CHECKING:
    from txrouter.build import Builder
    from txrouter.configreader import ConfigReader
    from txrouter.djangoproject import FileMount
    from txrouter.routetable import RouteKey
    from txrouter.tunnel import Tunnels
    from txrouter.upstream import UpstreamGroup
    from txrouter.workers import WorkerSet
    from txrouter.yamlsource import LocatedDict

__all__ = ["Built", "Route", "RouteKind"]


class Route(Protocol):
    """
    A route as read from the routes file: frozen data of one kind.
    """

    kind: ClassVar[str]
    prefix: str
    origin: Origin


@dataclass(frozen=True)
class Built:
    """
    A route's part of a route table.

    @ivar resource: what serves the route's requests.
    @ivar workers: the route's worker processes, if it has any.
    @ivar upstreams: the upstream group its requests are spread over (a
        proxy's upstreams, or the workers as upstreams).
    @ivar mounts: folders the router serves beside the route (a Django
        project's C{STATIC_ROOT} and C{MEDIA_ROOT}).
    @ivar tunnels: the route's open tunnels, if it may switch protocols.
    """

    resource: IResource
    workers: WorkerSet | None = None
    upstreams: UpstreamGroup | None = None
    mounts: tuple[FileMount, ...] = ()
    tunnels: Tunnels | None = None


#: Reads one route of the kind: C{(reader, prefix, spec, origin)}; reports
#: problems to the reader and returns L{None} when the route is unusable.
Reader = Callable[["ConfigReader", str, "LocatedDict", Origin], Any]
#: Builds one route: C{(route, key, builder)}.
Builder_ = Callable[[Any, "RouteKey", "Builder"], Built]
#: Checks that need every route of the kind at once:
#: C{(reader, [(table, prefix), ...])}; may replace routes in their table.
Settler = Callable[["ConfigReader", list[tuple[dict[str, Any], str]]], None]


@dataclass(frozen=True)
class RouteKind:
    """
    One kind of route.

    @ivar name: its key in routes.yaml (C{django}, C{proxy}, ...).
    @ivar options: the other keys a route of this kind accepts.
    @ivar read: see L{Reader}.
    @ivar build: see L{Builder_}.
    @ivar settle: see L{Settler}; L{None} when the kind needs none.
    """

    name: str
    options: tuple[str, ...]
    read: Reader
    build: Builder_
    settle: Settler | None = None
