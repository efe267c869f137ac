"""
Unit tests of the router's statistics: the counters of each route
(L{txrouter.routestats}), the Prometheus metrics (L{txrouter.metrics})
parsed back with prometheus-client's own parser, and the JSON of
C{/stats} (L{txrouter.stats}).

Requests go through a real L{RouterSite} over a route table built from a
routes file, in memory: the in-process application runs at once in the
test's thread, worker and upstream connections are in-memory transports
the test answers on, the clock is a C{MemoryReactorClock}. A reload is
what the reloader does: a table built beside the one served, from the
changed file, then served.
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import _producer_helpers
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Cooperator
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from tests.support import APPS, wait_until
from tests.test_accesslog import InlinePool, get
from tests.test_admin import scratch, write_routes
from tests.test_proxy import Client, FakeEndpoint
from tests.test_wsgi import ImmediateReactor
from txrouter.admin import AdminListener, admin_site
from txrouter.assembly import build_service
from txrouter.build import Engines, build_table
from txrouter.config import load_config
from txrouter.forwarding import TrustedProxies
from txrouter.limits import Limits
from txrouter.metrics import exposition, metrics_registry
from txrouter.proxyclient import ProxyClient
from txrouter.router import Router
from txrouter.routestats import BUCKETS, CLASSES, RouteStats
from txrouter.routetable import RouteKey, RouteTable
from txrouter.services import RouterService
from txrouter.site import RouterSite
from txrouter.stats import RouterStats
from txrouter.threadpool import make_pool
from txrouter.upstream import DOWN_FOR
from txrouter.workers import WorkerMonitor

pytestmark = pytest.mark.unit

PEER = IPv4Address("TCP", "203.0.113.7", 40000)
EPOCH = 1_700_000_000.0

ROUTES = """\
listen: tcp:8080:interface=127.0.0.1
routes:
  /app/: {{wsgi: "probe:application", path: {apps}}}
  /wiki/: {{wsgi: "probe:application", path: {apps}, workers: 2}}
  /api/: {{proxy: ["http://127.0.0.1:9000/v1/", "http://127.0.0.1:9001/v1/"]}}
  /busy/: {{proxy: "http://127.0.0.1:9002/", max_concurrent: 1, queue: 1, timeout: 5}}
  /files/: {{static: files}}
  /old/: {{redirect: /new/, status: 301}}
hosts:
  shop.example.com: {{routes: {{/: {{static: files}}}}}}
"""

#: The label sets of the routes of L{ROUTES}, and of the requests no
#: route took, in the order the metrics list them.
APP = ("", "/app/", "wsgi")
WIKI = ("", "/wiki/", "wsgi")
API = ("", "/api/", "proxy")
BUSY = ("", "/busy/", "proxy")
FILES = ("", "/files/", "static")
OLD = ("", "/old/", "redirect")
SHOP = ("shop.example.com", "/", "static")
NONE = ("", "", "none")
ROUTE_LABELS = [APP, WIKI, API, BUSY, FILES, OLD, SHOP, NONE]

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def route(labels: tuple[str, str, str], **more: str) -> dict[str, str]:
    """
    The labels of a route's series, and C{more}.
    """
    host, prefix, kind = labels
    return {"host": host, "prefix": prefix, "kind": kind, **more}


def parse(text: str) -> Samples:
    """
    Every sample of an exposition, by name and labels.
    """
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class World:
    """
    A router built from L{ROUTES}, its clock at L{EPOCH}; the workers of
    C{/wiki/} and the upstreams of C{/api/} and C{/busy/} answer in memory,
    as the test makes them.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.folder = Path(test.mktemp()).resolve()
        (self.folder / "files").mkdir(parents=True)
        (self.folder / "files" / "a.txt").write_bytes(b"hello, file\n")
        self.path = self.folder / "routes.yaml"
        self.reactor = reactor = ImmediateReactor()
        reactor.advance(EPOCH)
        # Static files are sent by a pull producer, which Twisted drives
        # with the global cooperator: here, one step a turn of this clock.
        cooperator = Cooperator(
            terminationPredicateFactory=lambda: lambda: True,
            scheduler=lambda step: reactor.callLater(0, step),
        )
        test.patch(_producer_helpers, "cooperate", cooperator.cooperate)
        self.endpoints: dict[str, FakeEndpoint] = {}
        config = self.config()
        self.monitor = WorkerMonitor(reactor, kill_time=1)
        self.engines = Engines(
            reactor=reactor,
            pool=InlinePool(),  # type: ignore[arg-type]
            client=ProxyClient(reactor),
            trusted=TrustedProxies(()),
            monitor=self.monitor,
            runtime_dir=str(self.folder / "run"),
            drain_timeout=1,
        )
        self.table = build_table(config, self.engines)
        self.in_memory(self.table)
        self.site = RouterSite(self.table.router, reactor, None, config.limits)
        self.top = RouterService()
        self.top.site = self.site
        self.top.serve(self.table)
        self.pool = make_pool(1, 4, "metrics-test")
        self.stats = RouterStats(reactor, self.top, self.pool)
        self.registry = metrics_registry(self.stats)

    def config(self, text: str = ROUTES) -> Any:
        self.path.write_text(text.format(apps=APPS))
        return load_config(self.path)

    def in_memory(self, table: RouteTable) -> None:
        """
        Give each worker and upstream of C{table} an in-memory endpoint
        (one per name: a worker by its number), and make the workers ready.
        """
        for key, entry in table.routes.items():
            if entry.upstreams is None:
                continue
            for number, member in enumerate(entry.upstreams.members, 1):
                name = (
                    f"{key.prefix}{number}"
                    if entry.workers is not None
                    else member.name
                )
                endpoint = self.endpoints.setdefault(name, FakeEndpoint(self.reactor))
                member.endpoint = endpoint
                if entry.workers is not None:
                    member.ready = True

    def reload(self, text: str) -> RouteTable:
        """
        What a reload does: build the table of the changed file beside the
        one served, then serve it.
        """
        old = self.table
        self.table = build_table(
            self.config(text), self.engines, old.generation + 1, old
        )
        self.in_memory(self.table)
        self.top.serve(self.table)
        return self.table

    def send(self, raw: bytes) -> Client:
        client = Client(self, PEER)  # type: ignore[arg-type]
        client.send(raw)
        return client

    def upstream(self, name: str, index: int = -1) -> Any:
        """
        Connection C{index} to the upstream or worker called C{name} (its
        URL, or its prefix and number: C{"/wiki/1"}).
        """
        return self.endpoints[name].connections[index]

    def scrape(self, accept: bytes | None = None) -> str:
        body, _ = exposition(self.registry, accept)
        return body.decode("utf-8")

    def samples(self) -> Samples:
        return parse(self.scrape())

    def value(self, name: str, **labels: str) -> float:
        return self.samples()[name, frozenset(labels.items())]

    def requests(self, labels: tuple[str, str, str]) -> dict[str, float]:
        """
        A route's C{txrouter_requests_total}, by status class.
        """
        samples = self.samples()
        return {
            code: samples[
                "txrouter_requests_total", frozenset(route(labels, code=code).items())
            ]
            for code in CLASSES
        }


def counts(**by_class: int) -> dict[str, float]:
    """
    Requests by status class: the classes given, 0 for the others.
    """
    return {code: float(by_class.get(f"c{code}", 0)) for code in CLASSES}


class RouteStatsTests(SynchronousTestCase):
    """
    L{RouteStats.ended} counts one request: its class, duration and bytes.
    """

    def ended(self, stats: RouteStats, seconds: float = 0.0, **request: Any) -> None:
        fields = {
            "finished": 1,
            "startedWriting": 1,
            "code": 200,
            "body_length": 0,
            "sentLength": 0,
        }
        fields.update(request)
        stats.ended(SimpleNamespace(**fields), seconds)

    def test_status_classes(self) -> None:
        """
        Each status counts in its class; one outside 100-599 as a 5xx.
        """
        stats = RouteStats()
        for code in (100, 200, 204, 301, 404, 499, 500, 599, 600, 99, 0):
            self.ended(stats, code=code)
        self.assertEqual(stats.codes, [1, 2, 1, 2, 5])
        self.assertEqual(stats.requests, 11)

    def test_client_gone(self) -> None:
        """
        A request whose client went away before the response began counts
        as a 4xx, whatever its code says; once the response began, with
        the code sent.
        """
        stats = RouteStats()
        self.ended(stats, finished=0, startedWriting=0, code=200)
        self.ended(stats, finished=0, startedWriting=1, code=200)
        self.assertEqual(stats.codes, [0, 1, 0, 1, 0])

    def test_buckets(self) -> None:
        """
        A duration counts in the first bucket whose bound it does not
        exceed (a bound is inclusive, as Prometheus's C{le}), a longer one
        in the last bucket; durations add up; a negative one (the clock
        went back) counts as 0.
        """
        stats = RouteStats()
        for seconds in (0.0, 0.005, 0.0051, 60.0, 61.0, -1.0):
            self.ended(stats, seconds)
        self.assertEqual(len(stats.counts), len(BUCKETS) + 1)
        self.assertEqual(stats.counts[0], 3)
        self.assertEqual(stats.counts[1], 1)
        self.assertEqual(stats.counts[-2:], [1, 1])
        self.assertEqual(sum(stats.counts), stats.requests)
        self.assertAlmostEqual(stats.seconds, 0.005 + 0.0051 + 121.0)

    def test_bytes(self) -> None:
        """
        Request and response body bytes add up.
        """
        stats = RouteStats()
        self.ended(stats, body_length=5, sentLength=7)
        self.ended(stats, body_length=1, sentLength=0)
        self.assertEqual((stats.bytes_in, stats.bytes_out), (6, 7))


class RequestMetricsTests(SynchronousTestCase):
    """
    Requests through a real site show in the metrics of the route that
    took them.
    """

    def setUp(self) -> None:
        self.world = World(self)

    def test_every_route_listed(self) -> None:
        """
        Before any request, every route of the file and the requests no
        route took have their series, at 0, in the table's order.
        """
        text = self.world.scrape()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        listed = [
            (s.labels["host"], s.labels["prefix"], s.labels["kind"])
            for s in families["txrouter_requests_in_flight"].samples
        ]
        self.assertEqual(listed, ROUTE_LABELS)
        self.assertEqual(self.world.requests(API), counts())
        self.assertEqual(
            self.world.value("txrouter_request_duration_seconds_count", **route(API)),
            0,
        )

    def test_status_classes(self) -> None:
        """
        Each route counts its own requests by status class: an in-process
        app, a worker, an upstream, static files, a redirect (the bare
        prefix's too), another host's table, and no route at all.
        """
        world = self.world
        world.send(get(b"/app/environ"))
        world.send(get(b"/app/boom"))
        world.send(get(b"/wiki/page"))
        world.upstream("/wiki/1").respond(OK)
        world.send(get(b"/api/x"))
        world.upstream("http://127.0.0.1:9000/v1/").respond(
            b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"
        )
        world.send(get(b"/files/a.txt"))
        world.send(get(b"/files/missing"))
        world.send(get(b"/old/x"))
        world.send(get(b"/old"))
        world.send(get(b"/a.txt", b"shop.example.com"))
        world.send(get(b"/nothing/here"))
        self.assertEqual(world.requests(APP), counts(c2xx=1, c5xx=1))
        self.assertEqual(world.requests(WIKI), counts(c2xx=1))
        self.assertEqual(world.requests(API), counts(c5xx=1))
        self.assertEqual(world.requests(FILES), counts(c2xx=1, c4xx=1))
        self.assertEqual(world.requests(OLD), counts(c3xx=2))
        self.assertEqual(world.requests(SHOP), counts(c2xx=1))
        self.assertEqual(world.requests(NONE), counts(c4xx=1))
        self.assertEqual(world.requests(BUSY), counts())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_refused_at_the_edge(self) -> None:
        """
        A request refused as malformed before routing (400) counts with
        the requests no route took.
        """
        self.world.send(get(b"/app/environ", b"a.example", b"Host: b.example"))
        self.assertEqual(self.world.requests(NONE), counts(c4xx=1))
        self.assertEqual(self.world.requests(APP), counts())

    def test_duration(self) -> None:
        """
        The histogram counts a request in the bucket of its time from
        routing to the response's end, cumulatively as Prometheus does.
        """
        world = self.world
        world.send(get(b"/api/slow"))
        world.reactor.advance(0.3)
        world.upstream("http://127.0.0.1:9000/v1/").respond(OK)
        samples = world.samples()

        def bucket(le: str) -> float:
            labels = frozenset(route(API, le=le).items())
            return samples["txrouter_request_duration_seconds_bucket", labels]

        self.assertEqual((bucket("0.25"), bucket("0.5"), bucket("+Inf")), (0, 1, 1))
        self.assertEqual(
            samples[
                "txrouter_request_duration_seconds_count", frozenset(route(API).items())
            ],
            1,
        )
        self.assertAlmostEqual(
            samples[
                "txrouter_request_duration_seconds_sum", frozenset(route(API).items())
            ],
            0.3,
        )

    def test_bytes(self) -> None:
        """
        Request body bytes in and response body bytes out are counted.
        """
        world = self.world
        world.send(
            b"POST /api/up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        )
        world.upstream("http://127.0.0.1:9000/v1/").respond(OK)
        world.send(
            b"POST /app/echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
        )
        self.assertEqual(
            world.value("txrouter_request_body_bytes_total", **route(API)), 5
        )
        self.assertEqual(
            world.value("txrouter_response_body_bytes_total", **route(API)), 2
        )
        self.assertEqual(
            world.value("txrouter_request_body_bytes_total", **route(APP)), 3
        )

    def test_in_flight(self) -> None:
        """
        A request is in flight from routing until its response ends, and
        counted only then.
        """
        world = self.world
        world.send(get(b"/api/x"))
        world.send(get(b"/api/y"))
        self.assertEqual(world.value("txrouter_requests_in_flight", **route(API)), 2)
        self.assertEqual(world.requests(API), counts())
        world.upstream("http://127.0.0.1:9000/v1/").respond(OK)
        world.upstream("http://127.0.0.1:9001/v1/").respond(OK)
        self.assertEqual(world.value("txrouter_requests_in_flight", **route(API)), 0)
        self.assertEqual(world.requests(API), counts(c2xx=2))

    def test_client_gone(self) -> None:
        """
        A request whose client went away before its answer counts once,
        as a 4xx, and is no longer in flight.
        """
        world = self.world
        client = world.send(get(b"/api/x"))
        client.disconnect()
        self.assertEqual(world.value("txrouter_requests_in_flight", **route(API)), 0)
        self.assertEqual(world.requests(API), counts(c4xx=1))

    def test_connection_lost_after_finish(self) -> None:
        """
        A connection that closes after its request was answered adds
        nothing more.
        """
        world = self.world
        client = world.send(get(b"/files/a.txt"))
        client.channel.connectionLost(Failure(ConnectionDone()))
        world.reactor.advance(0)
        self.assertEqual(world.requests(FILES), counts(c2xx=1))


class RouteStateMetricsTests(SynchronousTestCase):
    """
    Bulkheads, workers and upstreams of each route, read at scrape time.
    """

    def setUp(self) -> None:
        self.world = World(self)

    def test_bulkhead(self) -> None:
        """
        A route's bulkhead: the request holding its one slot, the one
        waiting, the one refused because the line was full, and the one
        that waited too long.
        """
        world = self.world
        for n in range(3):
            world.send(get(b"/busy/%d" % n))
        # The slot holder's answer streams, a byte every 3 s: it keeps the
        # slot past the waiting one's 5 s.
        upstream = world.upstream("http://127.0.0.1:9002/")
        upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nx")
        labels = route(BUSY)
        self.assertEqual(
            [
                world.value(f"txrouter_bulkhead_{name}", **labels)
                for name in ("max_concurrent", "queue_max", "active", "queued")
            ],
            [1, 1, 1, 1],
        )
        self.assertEqual(world.value("txrouter_bulkhead_rejected_total", **labels), 1)
        self.assertEqual(world.value("txrouter_bulkhead_expired_total", **labels), 0)
        for _ in range(2):
            world.reactor.advance(3)
            upstream.respond(b"x")
        self.assertEqual(world.value("txrouter_bulkhead_expired_total", **labels), 1)
        self.assertEqual(world.value("txrouter_bulkhead_queued", **labels), 0)
        self.assertEqual(world.value("txrouter_bulkhead_active", **labels), 1)
        self.assertEqual(world.requests(BUSY), counts(c5xx=2))
        self.assertNotIn(
            ("txrouter_bulkhead_active", frozenset(route(FILES).items())),
            world.samples(),
        )

    def test_workers(self) -> None:
        """
        Each worker of a worker route, by number: whether its process
        runs, whether it answers, and its restarts.
        """
        world = self.world
        workers = world.table.routes[RouteKey("", "/wiki/")].workers
        assert workers is not None
        first, second = workers.names

        def run(name: str, pid: int) -> None:
            transport = SimpleNamespace(pid=pid)
            world.monitor.protocols[name] = SimpleNamespace(transport=transport)
            world.monitor.watchers[name](name, True)

        def exit(name: str) -> None:
            del world.monitor.protocols[name]
            world.monitor.watchers[name](name, False)

        run(first, 4242)
        run(second, 4243)
        exit(second)
        run(second, 4244)
        exit(second)
        run(second, 4245)
        exit(second)
        world.reactor.advance(0)

        def of(name: str, number: str) -> float:
            return world.value(f"txrouter_worker_{name}", **route(WIKI, worker=number))

        self.assertEqual(
            [of(name, "1") for name in ("up", "ready", "restarts_total")], [1, 1, 0]
        )
        self.assertEqual(
            [of(name, "2") for name in ("up", "ready", "restarts_total")], [0, 0, 2]
        )
        world.endpoints["/wiki/2"].hold = True  # its socket does not answer yet
        run(second, 4246)
        self.assertEqual(
            [of(name, "2") for name in ("up", "ready", "restarts_total")], [1, 0, 3]
        )
        [wiki] = [r for r in world.stats.as_json()["routes"] if r["prefix"] == "/wiki/"]
        self.assertEqual(
            wiki["workers"],
            [
                {"name": first, "pid": 4242, "state": "ready", "restarts": 0},
                {"name": second, "pid": 4246, "state": "starting", "restarts": 3},
            ],
        )

    def test_upstreams(self) -> None:
        """
        A proxy route's upstreams: one that refused a connection is marked
        down (for how long, its failure, the retry on the other one), the
        other is up; once the mark expires it is up again.
        """
        world = self.world
        first = "http://127.0.0.1:9000/v1/"
        second = "http://127.0.0.1:9001/v1/"
        world.endpoints[first].refuse = ConnectionRefusedError()
        world.send(get(b"/api/x"))
        world.upstream(second).respond(OK)
        self.assertEqual(world.requests(API), counts(c2xx=1))
        world.reactor.advance(2.5)

        def of(name: str, url: str) -> float:
            return world.value(f"txrouter_upstream_{name}", **route(API, upstream=url))

        names = ("up", "down_seconds", "failures_total", "retries_total")
        self.assertEqual([of(n, first) for n in names], [0, DOWN_FOR - 2.5, 1, 1])
        self.assertEqual([of(n, second) for n in names], [1, 0, 0, 0])
        world.reactor.advance(DOWN_FOR)
        self.assertEqual([of(n, first) for n in names], [1, 0, 1, 1])

    def test_tunnels(self) -> None:
        """
        A proxy route's tunnels: those open, its limit, those opened so far.
        """
        world = self.world
        client = world.send(
            b"GET /api/ws HTTP/1.1\r\nHost: example.com\r\n"
            b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        [upstream] = [
            e.connections[-1] for e in world.endpoints.values() if e.connections
        ]
        upstream.respond(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\n"
        )
        names = ("open", "max", "opened_total")

        def values() -> list[float]:
            return [world.value(f"txrouter_tunnels_{n}", **route(API)) for n in names]

        self.assertEqual(values(), [1, 4096, 1])
        client.disconnect()
        world.reactor.advance(0)
        self.assertEqual(values(), [0, 4096, 1])
        [api] = [r for r in world.stats.as_json()["routes"] if r["prefix"] == "/api/"]
        self.assertEqual(api["tunnels"], {"open": 0, "max": 4096, "opened": 1})

    def test_upstream_timeout(self) -> None:
        """
        An upstream that sends no answer within the route's timeout is
        counted as failing.
        """
        world = self.world
        world.send(get(b"/busy/x"))
        world.reactor.advance(5)
        self.assertEqual(
            world.value(
                "txrouter_upstream_failures_total",
                **route(BUSY, upstream="http://127.0.0.1:9002/"),
            ),
            1,
        )
        self.assertEqual(world.requests(BUSY), counts(c5xx=1))


class ReloadTests(SynchronousTestCase):
    """
    Counters never go backwards for a route that stays; a removed route's
    series go away.
    """

    def setUp(self) -> None:
        self.world = World(self)

    def test_counters_survive(self) -> None:
        """
        After a reload, unchanged routes, and changed ones that keep their
        host, prefix and kind, keep their counters (their upstreams' and
        workers' too); a removed route's series are gone; a new one starts
        at 0.
        """
        world = self.world
        world.send(get(b"/api/x"))
        world.upstream("http://127.0.0.1:9000/v1/").respond(OK)
        world.endpoints["http://127.0.0.1:9001/v1/"].refuse = ConnectionRefusedError()
        world.send(get(b"/api/y"))
        world.upstream("http://127.0.0.1:9000/v1/").respond(OK)
        world.send(get(b"/files/a.txt"))
        world.send(get(b"/old/x"))
        workers = world.table.routes[RouteKey("", "/wiki/")].workers
        assert workers is not None
        for member in workers.group.members:
            member.restarts = 4
        before = world.samples()
        api = frozenset(route(API).items())
        self.assertEqual(before["txrouter_request_duration_seconds_count", api], 2)

        text = ROUTES.replace("/old/: {{redirect: /new/, status: 301}}", "").replace(
            "/files/: {{static: files}}", "/files/: {{static: files, cache: 60}}"
        )
        text = text.replace(
            '"http://127.0.0.1:9001/v1/"]}}',
            '"http://127.0.0.1:9001/v1/"], timeout: 9}}',
        ).replace("workers: 2}}", "workers: 2, threads: {{min: 1, max: 3}}}}")
        text += "  api.example.com: {{routes: {{/: {{redirect: /x/}}}}}}\n"
        old = world.table
        new = world.reload(text)
        for key in (RouteKey("", "/api/"), RouteKey("", "/files/")):
            self.assertIsNot(new.routes[key], old.routes[key])  # changed, rebuilt
        after = world.samples()
        for name, labels in before:
            if dict(labels).get("prefix") == "/old/":
                self.assertNotIn((name, labels), after)
            elif name.startswith("txrouter_") and name.endswith(
                ("_total", "_bucket", "_count", "_sum")
            ):
                self.assertEqual(after[name, labels], before[name, labels], name)
        self.assertEqual(world.requests(("api.example.com", "/", "redirect")), counts())
        for name in ("failures", "retries"):
            self.assertEqual(
                world.value(
                    f"txrouter_upstream_{name}_total",
                    **route(API, upstream="http://127.0.0.1:9001/v1/"),
                ),
                1,
            )
        self.assertEqual(
            world.value("txrouter_worker_restarts_total", **route(WIKI, worker="2")),
            4,
        )
        world.send(get(b"/files/a.txt"))
        self.assertEqual(world.requests(FILES), counts(c2xx=2))

    def test_in_flight_across_reload(self) -> None:
        """
        A request in flight during a reload is counted once it ends, on
        the route that stays.
        """
        world = self.world
        world.send(get(b"/api/x"))
        world.reload(ROUTES.replace("/old/: {{redirect: /new/, status: 301}}", ""))
        self.assertEqual(world.value("txrouter_requests_in_flight", **route(API)), 1)
        world.upstream("http://127.0.0.1:9000/v1/").respond(OK)
        self.assertEqual(world.requests(API), counts(c2xx=1))

    def test_kind_changed(self) -> None:
        """
        A prefix whose kind changes is a new series, from 0.
        """
        world = self.world
        world.send(get(b"/files/a.txt"))
        world.reload(
            ROUTES.replace("/files/: {{static: files}}", "/files/: {{redirect: /x/}}")
        )
        samples = world.samples()
        self.assertNotIn(
            ("txrouter_requests_total", frozenset(route(FILES, code="2xx").items())),
            samples,
        )
        self.assertEqual(world.requests(("", "/files/", "redirect")), counts())


class BoundedLabelsTests(SynchronousTestCase):
    """
    Nothing a client sends becomes a label: hostile Host headers and
    paths add no series.
    """

    def test_hostile_requests(self) -> None:
        """
        Requests with odd, long, unknown and malformed Host headers and
        paths change values only: the same series before and after, and
        no label holds anything the clients sent.
        """
        world = World(self)
        world.send(get(b"/app/environ"))  # a connection was made: its series
        before = set(world.samples())
        hosts = [
            b"evil.example",
            b"SHOP.example.com.evil",
            b"x" * 300,
            b'a"b',
            b"a\\b",
            b"shop.example.com:1",
            b"[::1]:8080",
            b"%00",
            b"",
        ]
        paths = [
            b"/nothing",
            b"/%00",
            b"/../../etc/passwd",
            b"/app/%2e%2e/%2e%2e/x",
            b"/files/%2e%2e/routes.yaml",
            b"/old",
            b"/" + b"y" * 2000,
            b"/wiki\\x",
            b"/?prefix=/api/",
        ]
        for host in hosts:
            for path in paths:
                world.send(get(path, host))
        after = world.samples()
        self.assertEqual(set(after), before)
        label_values = {value for _, labels in after for _, value in labels}
        for sent in [*hosts, *paths]:
            if len(sent) > 1:
                self.assertNotIn(sent.decode("latin-1"), label_values)
        total = sum(
            value
            for (name, _), value in after.items()
            if name == "txrouter_requests_total"
        )
        self.assertEqual(total, 1 + len(hosts) * len(paths))


class RouterMetricsTests(SynchronousTestCase):
    """
    The router's own metrics: its pool, connections, reloads, generation.
    """

    def test_pool(self) -> None:
        """
        The shared pool's threads, the busy ones and the calls waiting.
        """
        world = World(self)
        pool = world.pool = make_pool(1, 1, "metrics-pool")
        world.stats = RouterStats(world.reactor, world.top, pool)
        world.registry = metrics_registry(world.stats)
        release = threading.Event()
        pool.start()
        self.addCleanup(pool.stop)
        self.addCleanup(release.set)
        pool.callInThread(release.wait, 30)
        pool.callInThread(release.wait, 30)
        wait_until(lambda: len(pool.working) >= 1, "a thread to take the first call")
        names = ("threads", "max_threads", "busy_threads", "queued")
        self.assertEqual(
            [world.value(f"txrouter_threadpool_{name}") for name in names],
            [1, 1, 1, 1],
        )
        self.assertEqual(
            world.stats.as_json()["pool"], {"size": 1, "max": 1, "busy": 1, "queued": 1}
        )

    def test_connections(self) -> None:
        """
        Connections open and refused at C{max_connections}, by listener.
        """
        reactor = MemoryReactorClock()
        site = RouterSite(
            Router({"": {"/": Resource()}}), reactor, None, Limits(max_connections=1)
        )
        top = RouterService()
        top.site = site
        stats = RouterStats(reactor, top, make_pool(1, 2, "unused"))
        listener = site.listener("tcp:8080:interface=127.0.0.1")
        self.assertIsNotNone(listener.buildProtocol(PEER))
        self.assertIsNone(listener.buildProtocol(PEER))
        samples = parse(exposition(metrics_registry(stats), None)[0].decode())
        where = frozenset({("listener", "tcp:8080:interface=127.0.0.1")})
        self.assertEqual(samples["txrouter_connections_open", where], 1)
        self.assertEqual(samples["txrouter_connections_refused_total", where], 1)
        self.assertEqual(stats.as_json()["connections"], {"open": 1, "refused": 1})
        self.assertEqual(stats.generation(), 0)
        self.assertEqual(
            [r["kind"] for r in stats.as_json()["routes"]], ["none"]
        )  # no table yet

    def test_reloads(self) -> None:
        """
        Reloads and restarts by result, the generation, and the last
        reload, read from a real reloader; the admin endpoint serves
        C{/metrics} and C{/stats}.
        """
        folder = scratch(self)
        path = write_routes(folder)
        top = build_service(load_config(path), MemoryReactorClock())
        reloader = top.reloader
        assert reloader is not None
        [admin] = [s for s in top if isinstance(s, AdminListener)]
        resources = admin.factory.resource.children

        def metrics() -> Samples:
            request = DummyRequest([b""])
            return parse(resources[b"metrics"].render(request).decode())

        def last_reload() -> Any:
            request = DummyRequest([b""])
            return json.loads(resources[b"stats"].render(request))["last_reload"]

        self.assertIsNone(last_reload())
        self.assertTrue(self.successResultOf(reloader.reload()).ok)
        path.write_text(
            textwrap.dedent(
                """
                listen: tcp:8080:interface=127.0.0.1
                threads: {min: 1, max: 3}
                routes:
                  /files/: {static: pub}
                """
            )
        )
        self.assertFalse(self.successResultOf(reloader.reload()).ok)
        refused = last_reload()
        self.assertEqual(refused["result"], "refused")
        self.assertIn("need a new router process", refused["message"])
        path.write_text("routes: [")
        self.assertFalse(self.successResultOf(reloader.reload()).ok)
        self.assertFalse(self.successResultOf(reloader.restart("", "/files/")).ok)
        samples = metrics()
        self.assertEqual(
            {
                result: samples[
                    "txrouter_reloads_total", frozenset({("result", result)})
                ]
                for result in ("ok", "refused", "failed")
            },
            {"ok": 1, "refused": 1, "failed": 1},
        )
        self.assertEqual(
            samples["txrouter_redeploys_total", frozenset({("result", "refused")})], 1
        )
        self.assertEqual(samples["txrouter_generation", frozenset()], 2)
        failed = last_reload()
        self.assertEqual(sorted(failed), ["at", "message", "result"])
        self.assertEqual(failed["result"], "failed")
        self.assertIn("was not loaded", failed["message"])
        self.assertLess(abs(failed["at"] - time.time()), 60)


class ExpositionTests(SynchronousTestCase):
    """
    The metrics go out in the format the scraper asks for, from a registry
    of the router's own.
    """

    def setUp(self) -> None:
        self.world = World(self)
        self.site = admin_site(SimpleNamespace(), lambda: None, None, self.world.stats)

    def render(self, child: bytes, accept: bytes | None = None) -> DummyRequest:
        request = DummyRequest([b""])
        if accept is not None:
            request.requestHeaders.setRawHeaders(b"accept", [accept])
        body = self.site.resource.children[child].render(request)
        request.write(body)
        return request

    def test_prometheus_text(self) -> None:
        """
        Without an C{Accept} asking for OpenMetrics, Prometheus's text
        format, never cached; every family has its help and type.
        """
        request = self.render(b"metrics")
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"),
            [b"text/plain; version=0.0.4; charset=utf-8"],
        )
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"cache-control"), [b"no-store"]
        )
        text = b"".join(request.written).decode()
        self.assertIn("# TYPE txrouter_requests_total counter", text)
        self.assertIn("# TYPE txrouter_request_duration_seconds histogram", text)
        self.assertIn("# HELP txrouter_requests_in_flight ", text)
        self.assertIn("process_cpu_seconds_total", text)

    def test_openmetrics(self) -> None:
        """
        A scraper that asks for OpenMetrics gets it.
        """
        request = self.render(
            b"metrics", b"application/openmetrics-text; version=1.0.0"
        )
        [content_type] = request.responseHeaders.getRawHeaders(b"content-type")
        self.assertTrue(content_type.startswith(b"application/openmetrics-text"))
        self.assertTrue(b"".join(request.written).endswith(b"# EOF\n"))

    def test_not_the_global_registry(self) -> None:
        """
        Nothing of the router's is registered in prometheus-client's global
        registry.
        """
        names = {
            sample.name
            for family in prometheus_client.REGISTRY.collect()
            for sample in family.samples
        }
        self.assertFalse({n for n in names if n.startswith("txrouter_")})


class StatsJsonTests(SynchronousTestCase):
    """
    C{GET /stats} keeps its contract exactly.
    """

    def test_shape(self) -> None:
        """
        Every key of the contract, and no other, with the types it names;
        a route entry for each route, then one for the requests no route
        took.
        """
        world = World(self)
        world.send(get(b"/api/x"))
        world.upstream("http://127.0.0.1:9000/v1/").respond(OK)
        world.send(get(b"/busy/x"))
        site = admin_site(SimpleNamespace(), lambda: None, None, world.stats)
        request = DummyRequest([b""])
        data = json.loads(site.resource.children[b"stats"].render(request))
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"),
            [b"application/json"],
        )
        self.assertEqual(
            list(data),
            [
                "version",
                "at",
                "pid",
                "uptime",
                "generation",
                "last_reload",
                "pool",
                "connections",
                "buckets",
                "routes",
            ],
        )
        self.assertEqual(data["version"], 1)
        self.assertIsInstance(data["at"], float)
        self.assertIsInstance(data["pid"], int)
        self.assertIsInstance(data["uptime"], float)
        self.assertEqual(data["generation"], 1)
        self.assertIsNone(data["last_reload"])
        self.assertEqual(sorted(data["pool"]), ["busy", "max", "queued", "size"])
        self.assertEqual(data["connections"], {"open": 2, "refused": 0})
        self.assertEqual(data["buckets"], list(BUCKETS))
        self.assertEqual(
            [(r["host"], r["prefix"], r["kind"]) for r in data["routes"]], ROUTE_LABELS
        )
        keys = [
            "host",
            "prefix",
            "kind",
            "runs",
            "requests",
            "in_flight",
            "bytes_in",
            "bytes_out",
            "duration",
            "bulkhead",
            "workers",
            "tunnels",
            "upstreams",
        ]
        for entry in data["routes"]:
            self.assertEqual(list(entry), keys)
            self.assertEqual(list(entry["requests"]), list(CLASSES))
            self.assertEqual(sorted(entry["duration"]), ["counts", "sum"])
            self.assertEqual(len(entry["duration"]["counts"]), len(BUCKETS) + 1)
        by_prefix = {(r["host"], r["prefix"]): r for r in data["routes"]}
        self.assertEqual(
            {prefix: r["runs"] for (_, prefix), r in by_prefix.items()},
            {
                "/app/": "in process",
                "/wiki/": "workers",
                "/api/": "upstream",
                "/busy/": "upstream",
                "/files/": "router",
                "/old/": "router",
                "/": "router",
                "": "router",
            },
        )
        api = by_prefix["", "/api/"]
        self.assertEqual(api["requests"], {c: int(c == "2xx") for c in CLASSES})
        self.assertEqual(
            (api["in_flight"], api["bytes_in"], api["bytes_out"]), (0, 0, 2)
        )
        self.assertEqual(
            api["duration"], {"counts": [1] + [0] * len(BUCKETS), "sum": 0.0}
        )
        self.assertEqual(
            api["bulkhead"],
            {"max_concurrent": 1024, "active": 0, "queued": 0, "rejected": 0},
        )
        self.assertIsNone(api["workers"])
        self.assertEqual(
            api["upstreams"],
            [
                {
                    "name": "http://127.0.0.1:9000/v1/",
                    "up": True,
                    "down_for": 0.0,
                    "failures": 0,
                    "retries": 0,
                },
                {
                    "name": "http://127.0.0.1:9001/v1/",
                    "up": True,
                    "down_for": 0.0,
                    "failures": 0,
                    "retries": 0,
                },
            ],
        )
        self.assertEqual(by_prefix["", "/busy/"]["in_flight"], 1)
        self.assertEqual(
            by_prefix["", "/busy/"]["bulkhead"],
            {"max_concurrent": 1, "active": 1, "queued": 0, "rejected": 0},
        )
        wiki = by_prefix["", "/wiki/"]
        self.assertEqual([w["state"] for w in wiki["workers"]], ["down", "down"])
        self.assertEqual([w["pid"] for w in wiki["workers"]], [None, None])
        self.assertIsNone(wiki["upstreams"])
        for prefix in ("/files/", "/old/", ""):
            entry = by_prefix["", prefix]
            self.assertEqual(
                (entry["bulkhead"], entry["workers"], entry["upstreams"]),
                (None, None, None),
            )
