"""
C{health:} routes: a health check on the public listeners, for load
balancers, answering with the router's own health
(L{txrouter.health}) as JSON, never cached.

    /_health/: {health: ready, stop_delay: 6}
    /_live/:   {health: live}

  - C{ready}: 200 C{{"status": "ready"}} while every route can serve;
    otherwise 503 with a reason: C{"shutting down"} or C{"draining"} from
    SIGTERM on, or how many routes cannot serve and which prefixes of this
    route's own host they are. Nothing a public client should not see:
    no other host's names, no worker, upstream or file.
  - C{live}: 200 C{{"status": "ok"}} while the process answers, stopping
    or not.

C{stop_delay} (C{ready} only): seconds the router keeps its ports open
after SIGTERM, answering 503 here, before it stops accepting, so that a
balancer that polls this route takes the router out of rotation first:
its check interval times the failures it waits for. Only GET and HEAD are
answered (405 otherwise); the route answers every path under its prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from twisted.web.resource import Resource

from txrouter.configreader import describe
from txrouter.health import RouterHealth, health_answer
from txrouter.kinds.contract import Built, RouteKind
from txrouter.routespec import Origin

if TYPE_CHECKING:
    from txrouter.build import Builder
    from txrouter.configreader import ConfigReader
    from txrouter.routetable import RouteKey
    from txrouter.yamlsource import LocatedDict

__all__ = ["CHECKS", "KIND", "HealthCheck", "HealthRoute"]

#: What a health route may check.
CHECKS = ("ready", "live")


@dataclass(frozen=True)
class HealthRoute:
    """
    Answer the router's readiness (C{check="ready"}) or liveness
    (C{"live"}); C{stop_delay} is the seconds its ports stay open after
    SIGTERM.
    """

    kind: ClassVar[str] = "health"
    prefix: str
    origin: Origin
    check: str
    stop_delay: float = 0.0


def read(
    reader: ConfigReader, prefix: str, spec: LocatedDict, origin: Origin
) -> HealthRoute | None:
    check = spec.get("health")
    where = f"{origin.where}.stop_delay"
    delay = reader.number(spec, "stop_delay", where, 0.0, 0)
    if not isinstance(check, str) or check not in CHECKS:
        reader.problem(
            spec.line_of("health"),
            f"{origin.where}.health",
            f"expected 'ready' or 'live', got {describe(check)}",
        )
        return None
    if check == "live" and spec.get("stop_delay") is not None:
        reader.problem(
            spec.line_of("stop_delay"),
            where,
            "stop_delay is for 'health: ready' routes (a liveness check "
            "answers 200 until the router exits): remove it, or check 'ready'",
        )
        return None
    return HealthRoute(prefix, origin, check, delay)


class HealthCheck(Resource):
    """
    The resource of a health route: GET and HEAD only.
    """

    isLeaf = True
    #: C{/_health} is answered as C{/_health/} is, not redirected to it:
    #: load balancers count a redirect as healthy (HAProxy's C{httpchk}
    #: takes any 2xx or 3xx), whatever the router's state.
    answers_bare_prefix = True

    def __init__(self, health: RouterHealth, check: str, host: str) -> None:
        """
        @param host: the key of the host table the route is in (C{""} for
            the default host): the public answer names only its prefixes.
        """
        super().__init__()
        self._health = health
        self._check = check
        self._host = host

    def render(self, request: Any) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"cache-control", b"no-store")
            return b"405 Method Not Allowed: a health check answers GET and HEAD\n"
        if self._check == "live":
            return health_answer(request, 200, {"status": "ok"})
        report = self._health.ready()
        code = 200 if report.ready else 503
        return health_answer(request, code, report.public(self._host))


def build(route: HealthRoute, key: RouteKey, builder: Builder) -> Built:
    health = builder.engines.health
    assert health is not None, "make_engines gives every router its health"
    return Built(HealthCheck(health, route.check, key.host))


KIND = RouteKind("health", ("stop_delay",), read, build)
