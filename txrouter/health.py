"""
A router's health, as its health checks tell it: whether the process
answers (liveness) and whether every route can serve (readiness), computed
from the route table being served right now. The admin endpoint answers
them at C{/healthz} and C{/readyz}; C{health:} routes
(L{txrouter.kinds.health}) answer them on the public listeners, for load
balancers.

A route can serve when:

  - it has worker processes: at least one of them is ready and not marked
    down;
  - it is a proxy: at least one of its upstreams is not marked down (an
    upstream that refused a connection is left out for a while);
  - it is anything else (static files, a redirect, an application in the
    router process, a health check): always.

From the moment the router begins to stop (SIGTERM), it is not ready:
first C{"shutting down"}, while its ports stay open for the longest
C{stop_delay} of its C{health: ready} routes (so that a balancer polling
them stops sending it requests before it stops accepting them), then
C{"draining"}, once its ports have closed and its requests in flight
finish. An upgrade is not a stop: the new router answers on the same
sockets, so the old one is ready until its sockets are the new one's
(then C{"handed over to a new router"}).

    >>> report = health.ready()
    >>> report.ready, report.reason
    (False, '1 route cannot serve: /wiki/ (0 of 2 workers ready)')
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

if TYPE_CHECKING:
    from txrouter.routetable import BuiltRoute, RouteKey, RouteTable

__all__ = [
    "DRAINING",
    "HANDED_OVER",
    "SHUTTING_DOWN",
    "Readiness",
    "RouterHealth",
    "Unready",
    "health_answer",
    "readiness",
    "stop_delay",
    "unready_because",
]

_log = Logger()

#: Why a stopping router is not ready, while its ports are still open.
SHUTTING_DOWN = "shutting down"
#: ... once its ports have closed and its requests in flight finish.
DRAINING = "draining"
#: ... once an upgrade has given its sockets to a new router.
HANDED_OVER = "handed over to a new router"


@dataclass(frozen=True)
class Unready:
    """
    A route that cannot serve, and why (C{"0 of 2 workers ready"}).
    """

    key: RouteKey
    kind: str
    where: str
    why: str

    def as_dict(self) -> dict[str, str]:
        return {
            "host": self.key.host,
            "prefix": self.key.prefix,
            "kind": self.kind,
            "where": self.where,
            "why": self.why,
        }


@dataclass(frozen=True)
class Readiness:
    """
    Whether a router is ready, and if not, why.

    @ivar generation: the route table it was computed from (0: none yet).
    @ivar stopping: why the router no longer takes new work (L{SHUTTING_DOWN},
        L{DRAINING}, L{HANDED_OVER}), or L{None}.
    @ivar unready: the routes that cannot serve, in file order.
    """

    generation: int
    stopping: str | None
    unready: tuple[Unready, ...]

    @property
    def ready(self) -> bool:
        return self.stopping is None and not self.unready

    @property
    def reason(self) -> str | None:
        """
        One line saying why it is not ready, naming each route that cannot
        serve; L{None} when it is ready.
        """
        if self.stopping is not None:
            return self.stopping
        if not self.unready:
            return None
        return (
            _count(self.unready)
            + ": "
            + "; ".join(f"{u.key} ({u.why})" for u in self.unready)
        )

    def as_dict(self) -> dict[str, Any]:
        """
        Everything, for the admin endpoint's C{/readyz}.
        """
        data: dict[str, Any] = {"status": "ready" if self.ready else "not ready"}
        if not self.ready:
            data["reason"] = self.reason
        data["generation"] = self.generation
        data["unready"] = [u.as_dict() for u in self.unready]
        return data

    def public(self, host: str) -> dict[str, Any]:
        """
        What a public client may see, for a C{health: ready} route of host
        table C{host}: the status, and when not ready, a reason without
        names (how many routes cannot serve) and the prefixes of C{host}'s
        own routes that cannot. Nothing about other hosts (which names
        share this router), workers, upstreams or the routes file.
        """
        if self.ready:
            return {"status": "ready"}
        if self.stopping is not None:
            return {"status": "not ready", "reason": self.stopping}
        return {
            "status": "not ready",
            "reason": _count(self.unready),
            "unready": [u.key.prefix for u in self.unready if u.key.host == host],
        }


def _count(unready: tuple[Unready, ...]) -> str:
    n = len(unready)
    return f"{n} route{'s' if n != 1 else ''} cannot serve"


def unready_because(entry: BuiltRoute, now: float) -> str | None:
    """
    Why a route of a table cannot serve at reactor time C{now}, or L{None}
    when it can.
    """
    group = entry.upstreams
    if group is None or not group.members:
        return None  # nothing of its own that can be down
    noun = "worker" if entry.workers is not None else "upstream"
    members = group.members
    usable = [m for m in members if m.ready]
    if not usable:
        return f"0 of {len(members)} {noun}s ready"
    if any(m.down_until <= now for m in usable):
        return None
    # Each was marked down after a failed connection; tried again after.
    wait = min(m.down_until for m in usable) - now
    every = f"every {noun}" if len(usable) > 1 else f"the {noun}"
    return f"{every} is marked down, for {wait:.1f}s more"


def readiness(table: RouteTable | None, now: float, stopping: str | None) -> Readiness:
    """
    The readiness of a router serving C{table} at reactor time C{now}.

    @param stopping: why the router no longer takes new work, if it does not.
    """
    if table is None:
        return Readiness(0, stopping or "no route table yet", ())
    unready = []
    for key, entry in table.routes.items():
        why = unready_because(entry, now)
        if why is not None:
            unready.append(Unready(key, entry.route.kind, str(entry.route.origin), why))
    return Readiness(table.generation, stopping, tuple(unready))


def stop_delay(table: RouteTable | None) -> float:
    """
    Seconds a router serving C{table} keeps its ports open after SIGTERM:
    the longest C{stop_delay} of its C{health: ready} routes, 0 without one.
    """
    # Imported here: that module imports this one.
    from txrouter.kinds.health import HealthRoute

    if table is None:
        return 0.0
    delays = [
        entry.route.stop_delay
        for entry in table.routes.values()
        if isinstance(entry.route, HealthRoute) and entry.route.check == "ready"
    ]
    return max(delays, default=0.0)


class RouterHealth:
    """
    What one router's health checks read: the table it serves (kept by
    L{txrouter.services.RouterService.serve}) and whether it is stopping.

    @ivar table: the route table served now.
    @ivar stopping: why the router no longer takes new work, or L{None}.
    @ivar started: reactor time the router started.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.table: RouteTable | None = None
        self.stopping: str | None = None
        self.started = clock.seconds()

    def start(self) -> None:
        """
        The router starts (after twistd has daemonized).
        """
        self.started = self._clock.seconds()

    def live(self) -> dict[str, Any]:
        """
        The admin endpoint's C{/healthz}: the process answers.
        """
        return {
            "status": "ok",
            "pid": os.getpid(),
            "uptime": round(self._clock.seconds() - self.started, 3),
            "generation": self.table.generation if self.table else 0,
        }

    def ready(self) -> Readiness:
        """
        Whether every route of the table served now can serve.
        """
        return readiness(self.table, self._clock.seconds(), self.stopping)

    def stop(self, handed_over: bool = False) -> Deferred[None]:
        """
        The router begins to stop: from now on it is not ready.

        @param handed_over: an upgrade gave the router's sockets to a new
            router, which serves them: there is nothing to delay.
        @return: fires after the table's L{stop_delay}, during which the
            ports stay open (L{SHUTTING_DOWN}); by then the router is
            L{DRAINING}.
        """
        if handed_over:
            self.stopping = HANDED_OVER
            return succeed(None)
        self.stopping = SHUTTING_DOWN
        delay = stop_delay(self.table)
        if delay <= 0:
            self.stopping = DRAINING
            return succeed(None)
        _log.info(
            "Stopping: health checks answer 503 for {delay}s before the ports "
            "close (stop_delay)",
            delay=delay,
        )

        def ports_close() -> None:
            self.stopping = DRAINING

        return deferLater(self._clock, delay, ports_close)


def health_answer(request: Any, code: int, data: dict[str, Any]) -> bytes:
    """
    Answer a health check with C{code} and C{data} as JSON, never cached.
    """
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    body = json.dumps(data, indent=2).encode() + b"\n"
    if request.method == b"HEAD":
        # The headers of a GET, no body: Twisted would log a warning for
        # each HEAD (a balancer's check) that returned one.
        request.setHeader(b"content-length", b"%d" % len(body))
        return b""
    return body
