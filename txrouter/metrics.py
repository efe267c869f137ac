"""
Prometheus metrics of a running router, for C{GET /metrics} on the admin
endpoint: a L{RouterCollector} reads the live counters and states
(L{txrouter.stats.RouterStats}) at each scrape, into a registry of the
router's own (never prometheus-client's global one), and
prometheus-client writes them out. Nothing of Prometheus runs per request.

    >>> registry = metrics_registry(RouterStats(reactor, top, pool))
    >>> body, content_type = exposition(registry, request.getHeader(b"accept"))

Labels are bounded by the routes file: a route is C{host} (its table:
C{""} for the default one), C{prefix} and C{kind}; the requests no route
took share C{host="", prefix="", kind="none"}. Nothing taken from a
request (its path, Host, client) ever becomes a label.

Per route (C{host}, C{prefix}, C{kind}):

  - C{txrouter_requests_total} (C{code}: C{1xx} ... C{5xx}): requests
    answered (a 4xx when the client went away before the response began);
  - C{txrouter_request_duration_seconds}: a histogram from routing to the
    response's end (buckets L{txrouter.routestats.BUCKETS});
  - C{txrouter_request_body_bytes_total},
    C{txrouter_response_body_bytes_total}: body bytes in and out;
  - C{txrouter_requests_in_flight}: requests routed and not yet ended;
  - for a route with a bulkhead: C{txrouter_bulkhead_max_concurrent},
    C{txrouter_bulkhead_queue_max}, C{txrouter_bulkhead_active},
    C{txrouter_bulkhead_queued}, C{txrouter_bulkhead_rejected_total} (503:
    the line was full), C{txrouter_bulkhead_expired_total} (503: waited
    too long);
  - for a route in workers (and C{worker}, its number: C{"1"}, ...):
    C{txrouter_worker_up} (its process runs), C{txrouter_worker_ready}
    (it answers), C{txrouter_worker_restarts_total};
  - for a proxy route (and C{upstream}, its URL as in the routes file):
    C{txrouter_upstream_up}, C{txrouter_upstream_down_seconds} (until one
    marked down is tried again), C{txrouter_upstream_failures_total},
    C{txrouter_upstream_retries_total};
  - for a route that may switch protocols (WebSockets):
    C{txrouter_tunnels_open}, C{txrouter_tunnels_max} and
    C{txrouter_tunnels_opened_total}.

For the router: C{txrouter_threadpool_threads}, C{_max_threads},
C{_busy_threads}, C{_queued} (the shared pool);
C{txrouter_reloads_total} and C{txrouter_redeploys_total} (C{result}:
C{ok}, C{refused}, C{failed}); C{txrouter_generation};
C{txrouter_connections_open} and C{txrouter_connections_refused_total}
(C{listener}: its endpoint string); and prometheus-client's C{process_*}
metrics (CPU, memory, open files, start time).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from txrouter.reloader import RESULTS
from txrouter.routestats import BUCKETS, CLASSES
from txrouter.stats import RouterStats

__all__ = ["ROUTE_LABELS", "RouterCollector", "exposition", "metrics_registry"]

#: The labels that name a route.
ROUTE_LABELS = ("host", "prefix", "kind")

#: The C{le} label of each bucket, as Prometheus writes bounds.
_LE = [*(floatToGoString(bound) for bound in BUCKETS), "+Inf"]


class RouterCollector(Collector):
    """
    Every txrouter metric, read from a L{RouterStats} at each scrape.
    """

    def __init__(self, stats: RouterStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        yield from self._routes()
        yield from self._router()

    def _routes(self) -> Iterator[Metric]:
        route = ROUTE_LABELS
        requests = CounterMetricFamily(
            "txrouter_requests",
            "Requests answered, by route and status class.",
            labels=(*route, "code"),
        )
        duration = HistogramMetricFamily(
            "txrouter_request_duration_seconds",
            "Seconds from routing a request to the end of its response.",
            labels=route,
        )
        bytes_in = CounterMetricFamily(
            "txrouter_request_body_bytes",
            "Request body bytes received.",
            labels=route,
        )
        bytes_out = CounterMetricFamily(
            "txrouter_response_body_bytes",
            "Response body bytes sent.",
            labels=route,
        )
        in_flight = GaugeMetricFamily(
            "txrouter_requests_in_flight",
            "Requests routed and not yet ended.",
            labels=route,
        )
        slots = GaugeMetricFamily(
            "txrouter_bulkhead_max_concurrent",
            "Requests the route serves at once (max_concurrent).",
            labels=route,
        )
        line = GaugeMetricFamily(
            "txrouter_bulkhead_queue_max",
            "Requests that may wait for a slot (queue).",
            labels=route,
        )
        active = GaugeMetricFamily(
            "txrouter_bulkhead_active",
            "Requests holding a slot of the route's bulkhead.",
            labels=route,
        )
        queued = GaugeMetricFamily(
            "txrouter_bulkhead_queued",
            "Requests waiting for a slot of the route's bulkhead.",
            labels=route,
        )
        rejected = CounterMetricFamily(
            "txrouter_bulkhead_rejected",
            "Requests answered 503 because the route's slots and queue were full.",
            labels=route,
        )
        expired = CounterMetricFamily(
            "txrouter_bulkhead_expired",
            "Requests answered 503 after waiting too long for a slot.",
            labels=route,
        )
        worker = (*route, "worker")
        worker_up = GaugeMetricFamily(
            "txrouter_worker_up",
            "Whether the worker process runs (1) or not (0).",
            labels=worker,
        )
        worker_ready = GaugeMetricFamily(
            "txrouter_worker_ready",
            "Whether the worker process answers and is routed to (1) or not (0).",
            labels=worker,
        )
        restarts = CounterMetricFamily(
            "txrouter_worker_restarts",
            "Times the worker process was started again after it exited.",
            labels=worker,
        )
        upstream = (*route, "upstream")
        upstream_up = GaugeMetricFamily(
            "txrouter_upstream_up",
            "Whether the upstream is sent requests (1) or marked down (0).",
            labels=upstream,
        )
        down = GaugeMetricFamily(
            "txrouter_upstream_down_seconds",
            "Seconds until an upstream marked down is tried again (0 when up).",
            labels=upstream,
        )
        failures = CounterMetricFamily(
            "txrouter_upstream_failures",
            "Requests the upstream failed: connection refused, no answer in "
            "time, a broken or cut answer.",
            labels=upstream,
        )
        retries = CounterMetricFamily(
            "txrouter_upstream_retries",
            "Requests sent again after an attempt on the upstream failed.",
            labels=upstream,
        )
        tunnels_open = GaugeMetricFamily(
            "txrouter_tunnels_open",
            "Tunnels (WebSockets) open now, handshakes under way excluded.",
            labels=ROUTE_LABELS,
        )
        tunnels_max = GaugeMetricFamily(
            "txrouter_tunnels_max",
            "Tunnels the route may have open at once (max_tunnels).",
            labels=ROUTE_LABELS,
        )
        tunnels_opened = CounterMetricFamily(
            "txrouter_tunnels_opened",
            "Tunnels opened (a 101 relayed).",
            labels=ROUTE_LABELS,
        )
        for report in self._stats.routes():
            labels = [report.host, report.prefix, report.kind]
            stats = report.stats
            for name, count in zip(CLASSES, stats.codes, strict=True):
                requests.add_metric([*labels, name], count)
            duration.add_metric(labels, _cumulative(stats.counts), stats.seconds)
            bytes_in.add_metric(labels, stats.bytes_in)
            bytes_out.add_metric(labels, stats.bytes_out)
            in_flight.add_metric(labels, report.in_flight)
            bulkhead = report.bulkhead
            if bulkhead is not None:
                slots.add_metric(labels, bulkhead.max_concurrent)
                line.add_metric(labels, bulkhead.queue)
                active.add_metric(labels, bulkhead.active)
                queued.add_metric(labels, bulkhead.waiting)
                rejected.add_metric(labels, bulkhead.rejected)
                expired.add_metric(labels, bulkhead.expired)
            for w in report.workers or ():
                which = [*labels, str(w.number)]
                worker_up.add_metric(which, int(w.pid is not None))
                worker_ready.add_metric(which, int(w.state == "ready"))
                restarts.add_metric(which, w.restarts)
            tunnels = report.tunnels
            if tunnels is not None:
                tunnels_open.add_metric(labels, len(tunnels.open))
                tunnels_max.add_metric(labels, tunnels.limit)
                tunnels_opened.add_metric(labels, tunnels.opened)
            for u in report.upstreams or ():
                which = [*labels, u.name]
                upstream_up.add_metric(which, int(u.up))
                down.add_metric(which, u.down_for)
                failures.add_metric(which, u.failures)
                retries.add_metric(which, u.retries)
        yield from (requests, duration, bytes_in, bytes_out, in_flight)
        yield from (slots, line, active, queued, rejected, expired)
        yield from (worker_up, worker_ready, restarts)
        yield from (upstream_up, down, failures, retries)
        yield from (tunnels_open, tunnels_max, tunnels_opened)

    def _router(self) -> Iterator[Metric]:
        stats = self._stats
        pool = stats.pool()
        for name, value, help in (
            ("threads", pool.size, "Threads of the shared pool now."),
            ("max_threads", pool.max, "Threads the shared pool may have."),
            ("busy_threads", pool.busy, "Threads of the shared pool at work."),
            ("queued", pool.queued, "Calls waiting for a thread of the shared pool."),
        ):
            yield GaugeMetricFamily(f"txrouter_threadpool_{name}", help, value=value)
        results = stats.results()
        for what, name, help in (
            ("reload", "txrouter_reloads", "Reloads of the routes file, by result."),
            (
                "restart",
                "txrouter_redeploys",
                "Restarts of one route's workers (txrouter restart), by result.",
            ),
        ):
            family = CounterMetricFamily(name, help, labels=("result",))
            for result in RESULTS:
                family.add_metric([result], results.get((what, result), 0))
            yield family
        yield GaugeMetricFamily(
            "txrouter_generation",
            "The route table served: 1 at start, one more for each reload or "
            "restart that took effect.",
            value=stats.generation(),
        )
        opened = GaugeMetricFamily(
            "txrouter_connections_open",
            "Client connections open, by listener.",
            labels=("listener",),
        )
        refused = CounterMetricFamily(
            "txrouter_connections_refused",
            "Client connections refused at max_connections, by listener.",
            labels=("listener",),
        )
        for listener, (open_, refused_) in stats.connections().items():
            opened.add_metric([listener], open_)
            refused.add_metric([listener], refused_)
        yield opened
        yield refused


def _cumulative(counts: Sequence[int]) -> list[tuple[str, float]]:
    """
    Per-bucket counts as Prometheus buckets: each counts every request up
    to its bound.
    """
    buckets: list[tuple[str, float]] = []
    total = 0
    for le, count in zip(_LE, counts, strict=True):
        total += count
        buckets.append((le, total))
    return buckets


def metrics_registry(stats: RouterStats) -> CollectorRegistry:
    """
    A registry of the router's metrics and of its process's.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RouterCollector(stats))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry, accept: bytes | None) -> tuple[bytes, str]:
    """
    The registry's metrics in the format a scraper's C{Accept} header asks
    for (Prometheus text, or OpenMetrics), and that format's content type.
    """
    encode, content_type = choose_encoder((accept or b"").decode("latin-1"))
    return encode(registry), content_type
