"""
The route kinds: each module holds one kind's options, how a route of it
is read and checked, and how its resource is built (see
L{txrouter.kinds.contract.RouteKind}). L{KINDS} is the registry; adding a
kind is one module and one line here.
"""

from __future__ import annotations

from txrouter.kinds import asgi, django, health, proxy, redirect, static, wsgi
from txrouter.kinds.contract import Built, Route, RouteKind

__all__ = ["KINDS", "Built", "Route", "RouteKind", "kind_of"]

#: Every route kind, by its key in routes.yaml.
KINDS: dict[str, RouteKind] = {
    kind.name: kind
    for kind in (
        django.KIND,
        wsgi.KIND,
        static.KIND,
        proxy.KIND,
        redirect.KIND,
        health.KIND,
        asgi.KIND,
    )
}


def kind_of(route: Route) -> RouteKind:
    """
    The kind a route was read as.
    """
    return KINDS[route.kind]
