"""
What a running router has served and how its parts are doing, read from
the live objects when asked: L{RouterStats}. The admin endpoint answers it
as JSON at C{GET /stats} (for the status page, which polls it and computes
rates and percentiles from the differences between two answers), and as
Prometheus metrics at C{GET /metrics} (L{txrouter.metrics}).

C{GET /stats} answers, with C{Cache-Control: no-store}::

    {"version": 1,               # this format; a change that is not an
                                 # addition gets a new number
     "at": 1733140000.123,       # UNIX time of the answer
     "pid": 41207,
     "uptime": 3605.127,         # seconds since the router started
     "generation": 3,            # the route table served
     "last_reload": {"at": 1733139000.5, "result": "ok", "message": "..."},
                                 # or null before the first reload; result
                                 # "ok", "refused" (not tried: the router
                                 # is stopping, another change runs, or the
                                 # file asks for an upgrade) or "failed"
     "pool": {"size": 4, "max": 8, "busy": 1, "queued": 0},
                                 # the shared thread pool: threads now, at
                                 # most, busy, calls waiting for a thread
     "connections": {"open": 12, "refused": 0},
                                 # client connections, every listener
                                 # together; refused at max_connections
     "buckets": [0.005, 0.01, ..., 60.0],
                                 # duration bucket upper bounds (seconds)
     "routes": [
       {"host": "",              # "" is the default host
        "prefix": "/wiki/",
        "kind": "django",        # the kind key; "static" for a Django
                                 # project's static or media folder
        "runs": "workers",       # "in process" (an app on the shared
                                 # pool), "workers", "upstream" (proxy) or
                                 # "router" (static, redirect, health)
        "requests": {"1xx": 0, "2xx": 1200, "3xx": 4, "4xx": 7, "5xx": 1},
        "in_flight": 2,
        "bytes_in": 5120,        # request bodies
        "bytes_out": 9830400,    # response bodies
        "duration": {"counts": [...], "sum": 14.2},
                                 # requests per bucket (not cumulative),
                                 # len(buckets) + 1, the last one for those
                                 # longer than the last bound
        "bulkhead": {"max_concurrent": 8, "active": 2, "queued": 0,
                     "rejected": 0},
                                 # or null; rejected: answered 503 because
                                 # the line was full or the wait too long
        "workers": [{"name": "routes.yaml:4: routes['/wiki/'] worker 1",
                     "pid": 41210, "state": "ready", "restarts": 0}],
                                 # or null; state "ready", "starting" or
                                 # "down" (no process: restarting)
        "tunnels": null,         # or, for a route that switches protocols
                                 # (WebSockets): {"open": 3, "max": 4096,
                                 #   "opened": 17}
        "upstreams": null},      # or, for a proxy route:
                                 # [{"name": "http://127.0.0.1:9000/",
                                 #   "up": true, "down_for": 0.0,
                                 #   "failures": 0, "retries": 0}]
                                 # down_for: seconds until one marked down
                                 # is tried again
       ...,
       {"host": "", "prefix": "", "kind": "none", "runs": "router", ...}]}
                                 # last: the requests no route took (404s,
                                 # and requests refused as malformed)

Counters (C{requests}, C{bytes_in}, C{bytes_out}, C{duration},
C{rejected}, C{restarts}, C{failures}, C{retries}, C{connections.refused})
only grow while the router runs, across reloads too, for every route that
keeps its host, prefix and kind; a new router process (an upgrade) starts
them again from 0. A request is counted once it has ended (its status
class; a 4xx when its client went away before the response began); it is
C{in_flight} until then.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime
from twisted.python.threadpool import ThreadPool

from txrouter.bulkhead import Bulkhead, BulkheadResource
from txrouter.routestats import BUCKETS, CLASSES, RouteStats
from txrouter.routetable import BuiltRoute, RouteKey, kind_at

if TYPE_CHECKING:
    from txrouter.services import RouterService
    from txrouter.tunnel import Tunnels
    from txrouter.upstream import Upstream

__all__ = [
    "VERSION",
    "PoolReport",
    "RouteReport",
    "RouterStats",
    "UpstreamReport",
    "WorkerReport",
]

#: The version of the JSON answer.
VERSION = 1

# How a route's requests are served ("runs").
_IN_PROCESS = "in process"
_WORKERS = "workers"
_UPSTREAM = "upstream"
_ROUTER = "router"

#: The kind of the requests no route took.
UNROUTED_KIND = "none"


@dataclass(frozen=True)
class WorkerReport:
    """
    One worker process of a route.

    @ivar number: its number in its route (1, 2, ...).
    @ivar pid: its process ID while it runs, else L{None}.
    @ivar state: C{"ready"}, C{"starting"} (running, not answering yet) or
        C{"down"} (not running: it exited and waits to be restarted).
    """

    name: str
    number: int
    pid: int | None
    state: str
    restarts: int


@dataclass(frozen=True)
class UpstreamReport:
    """
    One upstream of a proxy route.

    @ivar up: whether it may be sent requests now.
    @ivar down_for: seconds until one marked down is tried again.
    """

    name: str
    up: bool
    down_for: float
    failures: int
    retries: int


@dataclass(frozen=True)
class PoolReport:
    """
    The shared thread pool: threads now, at most, busy, and calls waiting
    for a thread.
    """

    size: int
    max: int
    busy: int
    queued: int


@dataclass(frozen=True)
class RouteReport:
    """
    One route (or the requests no route took), as it is now.

    @ivar stats: the route's live counters: read them at once.
    @ivar bulkhead: its bulkhead, if it has one (live).
    @ivar workers: its worker processes, if it runs in workers.
    @ivar upstreams: its upstreams, if it is a proxy.
    @ivar tunnels: its tunnels, if it may switch protocols (live).
    """

    host: str
    prefix: str
    kind: str
    runs: str
    stats: RouteStats
    in_flight: int
    bulkhead: Bulkhead | None = None
    workers: tuple[WorkerReport, ...] | None = None
    upstreams: tuple[UpstreamReport, ...] | None = None
    tunnels: Tunnels | None = None


class RouterStats:
    """
    Reads a running router's statistics: its site's counters, the route
    table it serves, its thread pool and its reloads.
    """

    def __init__(self, clock: IReactorTime, top: RouterService, pool: ThreadPool):
        """
        @param top: the router's service, once its site is set; its table,
            reloader and health are read when asked.
        """
        self._clock = clock
        self._top = top
        self._pool = pool
        self._started = clock.seconds()

    def uptime(self) -> float:
        """
        Seconds since the router started.
        """
        health = self._top.health
        started = health.started if health is not None else self._started
        return float(self._clock.seconds() - started)

    def generation(self) -> int:
        """
        The route table served (0: none yet).
        """
        table = self._top.table
        return table.generation if table is not None else 0

    def routes(self) -> list[RouteReport]:
        """
        Every prefix the router serves, in the table's order, then the
        requests no route took.
        """
        site = self._top.site
        assert site is not None
        routes = [getattr(request, "route", None) for request in site.in_flight]
        in_flight = Counter(
            site.unrouted if route is None else route.stats for route in routes
        )
        now = self._clock.seconds()
        reports = []
        table = self._top.table
        if table is not None:
            for (host, prefix), stats in table.router.stats.items():
                key = RouteKey(host, prefix)
                entry = table.routes.get(key)
                reports.append(
                    RouteReport(
                        host,
                        prefix,
                        kind_at(table.routes, key),
                        _runs(entry),
                        stats,
                        in_flight[stats],
                        *_parts(entry, now),
                        tunnels=entry.tunnels if entry is not None else None,
                    )
                )
        reports.append(
            RouteReport(
                "", "", UNROUTED_KIND, _ROUTER, site.unrouted, in_flight[site.unrouted]
            )
        )
        return reports

    def pool(self) -> PoolReport:
        """
        The shared thread pool now.
        """
        pool = self._pool
        return PoolReport(pool.workers, pool.max, len(pool.working), pool.q.qsize())

    def connections(self) -> dict[str, tuple[int, int]]:
        """
        Client connections open and refused, by listener (its endpoint
        string).
        """
        site = self._top.site
        assert site is not None
        return site.connection_counts()

    def results(self) -> dict[tuple[str, str], int]:
        """
        How many reloads and restarts had each result, by C{("reload" or
        "restart", result)}.
        """
        reloader = self._top.reloader
        return dict(reloader.results) if reloader is not None else {}

    def as_json(self) -> dict[str, Any]:
        """
        The answer of C{GET /stats} (see the module's docstring).
        """
        reloader = self._top.reloader
        last = reloader.last_reload if reloader is not None else None
        pool = self.pool()
        site = self._top.site
        assert site is not None
        return {
            "version": VERSION,
            "at": round(time.time(), 3),
            "pid": os.getpid(),
            "uptime": round(self.uptime(), 3),
            "generation": self.generation(),
            "last_reload": (
                None
                if last is None
                else {"at": last.at, "result": last.result, "message": last.message}
            ),
            "pool": {
                "size": pool.size,
                "max": pool.max,
                "busy": pool.busy,
                "queued": pool.queued,
            },
            "connections": {
                "open": site.open_connections,
                "refused": site.refused_connections,
            },
            "buckets": list(BUCKETS),
            "routes": [_route_json(report) for report in self.routes()],
        }


def _runs(entry: BuiltRoute | None) -> str:
    if entry is None:
        return _ROUTER  # a Django project's files, served by the router
    if entry.workers is not None:
        return _WORKERS
    if entry.upstreams is not None:
        return _UPSTREAM
    if getattr(entry.route, "workers", None) == 0:
        return _IN_PROCESS
    return _ROUTER


def _parts(
    entry: BuiltRoute | None, now: float
) -> tuple[
    Bulkhead | None,
    tuple[WorkerReport, ...] | None,
    tuple[UpstreamReport, ...] | None,
]:
    """
    A route's bulkhead, workers and upstreams, those it has.
    """
    if entry is None:
        return None, None, None
    resource = entry.built.resource
    bulkhead = resource.bulkhead if isinstance(resource, BulkheadResource) else None
    workers = entry.workers
    if workers is not None:
        pids = workers.pids()
        return (
            bulkhead,
            tuple(
                _worker(number, member, pids.get(member.name))
                for number, member in enumerate(workers.group.members, 1)
            ),
            None,
        )
    group = entry.upstreams
    if group is not None:
        return bulkhead, None, tuple(_upstream(member, now) for member in group.members)
    return bulkhead, None, None


def _worker(number: int, member: Upstream, pid: int | None) -> WorkerReport:
    state = "down" if pid is None else "ready" if member.ready else "starting"
    return WorkerReport(member.name, number, pid, state, member.restarts)


def _upstream(member: Upstream, now: float) -> UpstreamReport:
    down_for = max(0.0, member.down_until - now)
    return UpstreamReport(
        member.name,
        member.ready and down_for == 0.0,
        round(down_for, 3),
        member.failures,
        member.retries,
    )


def _route_json(report: RouteReport) -> dict[str, Any]:
    stats = report.stats
    bulkhead = report.bulkhead
    tunnels = report.tunnels
    return {
        "host": report.host,
        "prefix": report.prefix,
        "kind": report.kind,
        "runs": report.runs,
        "requests": dict(zip(CLASSES, stats.codes, strict=True)),
        "in_flight": report.in_flight,
        "bytes_in": stats.bytes_in,
        "bytes_out": stats.bytes_out,
        "duration": {"counts": list(stats.counts), "sum": round(stats.seconds, 6)},
        "bulkhead": (
            None
            if bulkhead is None
            else {
                "max_concurrent": bulkhead.max_concurrent,
                "active": bulkhead.active,
                "queued": bulkhead.waiting,
                "rejected": bulkhead.rejected + bulkhead.expired,
            }
        ),
        "workers": (
            None
            if report.workers is None
            else [
                {
                    "name": w.name,
                    "pid": w.pid,
                    "state": w.state,
                    "restarts": w.restarts,
                }
                for w in report.workers
            ]
        ),
        "tunnels": (
            None
            if tunnels is None
            else {
                "open": len(tunnels.open),
                "max": tunnels.limit,
                "opened": tunnels.opened,
            }
        ),
        "upstreams": (
            None
            if report.upstreams is None
            else [
                {
                    "name": u.name,
                    "up": u.up,
                    "down_for": u.down_for,
                    "failures": u.failures,
                    "retries": u.retries,
                }
                for u in report.upstreams
            ]
        ),
    }
