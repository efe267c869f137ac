"""
Unit tests of a router's health (L{txrouter.health}): readiness computed
from real route tables (built with a C{MemoryReactorClock}; their worker
sets and upstream groups are the real classes, whose members the tests
mark ready or down), the admin endpoint's C{/healthz} and C{/readyz}, the
C{health:} route kind (L{txrouter.kinds.health}: its config, its answers,
its place in the routing), and the stop: not ready from its first moment,
the ports open for the stop delay, the admin endpoint answering through
the drain.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
from typing import Any

import jsonschema
import pytest
import yaml
from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from tests.test_build import Folder
from tests.test_service import ThreadingMemoryReactor, request_in_flight
from txrouter.admin import AdminListener, admin_site
from txrouter.assembly import build_service, make_engines
from txrouter.build import build_table
from txrouter.cli import main
from txrouter.config import Config
from txrouter.errors import ConfigError
from txrouter.health import (
    DRAINING,
    HANDED_OVER,
    SHUTTING_DOWN,
    RouterHealth,
    readiness,
    stop_delay,
)
from txrouter.kinds.health import HealthCheck, HealthRoute
from txrouter.redirect import AddSlash
from txrouter.routetable import BuiltRoute, RouteKey, RouteTable
from txrouter.schema import routes_schema
from txrouter.services import ListenerService
from txrouter.site import KEEPALIVE_GRACE
from txrouter.upstream import DOWN_FOR

pytestmark = pytest.mark.unit

ROUTES = """
    listen: tcp:8080:interface=127.0.0.1
    runtime_dir: run
    routes:
      /files/: {static: pub}
      /old/: {redirect: /files/}
      /here/: {wsgi: "txrouter_build_app:application", path: apps}
      /there/: {wsgi: "txrouter_build_app:application", path: apps, workers: 2}
      /api/: {proxy: ["http://127.0.0.1:9001/", "http://127.0.0.1:9002/"]}
      /_health/: {health: ready, stop_delay: 5}
      /_live/: {health: live}
    hosts:
      shop.example.com:
        routes:
          /: {static: pub}
          /one/: {proxy: "http://127.0.0.1:9003/"}
          /_health/: {health: ready}
    """

#: Only routes that are always ready, and no stop delay.
PLAIN = """
    listen: [tcp:8080:interface=127.0.0.1, tcp:8081:interface=127.0.0.1]
    admin: unix:{root}/adm/admin.sock
    threads: {min: 1, max: 2}
    routes:
      /files/: {static: pub}
      /_health/: {health: ready}
    """


def plain(folder: Folder, stop_delay: float | None = None) -> Config:
    """
    The L{PLAIN} routes in C{folder}, with a stop delay if given.
    """
    (folder.root / "adm").mkdir(mode=0o700, exist_ok=True)
    text = PLAIN.replace("{root}", str(folder.root))
    if stop_delay is not None:
        text = text.replace(
            "{health: ready}", f"{{health: ready, stop_delay: {stop_delay}}}"
        )
    return folder.config(text)


def routed(table: RouteTable, path: bytes, host: bytes = b"example.com") -> Any:
    """
    The resource C{table}'s router picks for C{path} on C{host}.
    """
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.getRequestHostname = lambda: host  # type: ignore[method-assign]
    request.prepath = []
    return table.router.getChildWithDefault(request.postpath[0], request)


def entry(table: RouteTable, prefix: str, host: str = "") -> BuiltRoute:
    return table.routes[RouteKey(host, prefix)]


def all_workers_ready(table: RouteTable) -> None:
    for workers in table.worker_sets():
        for member in workers.group.members:
            member.ready = True


def render(resource: Any, method: bytes = b"GET") -> tuple[DummyRequest, Any]:
    """
    Render C{resource} for a request of C{method}.

    @return: the request and what C{render} returned.
    """
    request = DummyRequest([b""])
    request.method = method
    return request, resource.render(request)


def header(request: DummyRequest, name: bytes) -> list[bytes] | None:
    values: list[bytes] | None = request.responseHeaders.getRawHeaders(name)
    return values


class ReadinessTests(SynchronousTestCase):
    """
    A table is ready when each worker route has a ready worker and each
    proxy route an upstream that is not marked down; nothing else counts.
    """

    def setUp(self) -> None:
        self.folder = Folder(self)
        self.clock = MemoryReactorClock()
        config = self.folder.config(ROUTES)
        self.table = build_table(config, make_engines(config, self.clock))

    def now(self, stopping: str | None = None) -> Any:
        return readiness(self.table, self.clock.seconds(), stopping)

    def test_workers_not_ready_yet(self) -> None:
        """
        A worker route none of whose workers answers yet is not ready, and
        the report says which route, where it is, and why.
        """
        report = self.now()
        self.assertFalse(report.ready)
        there = entry(self.table, "/there/")
        self.assertEqual(
            [u.as_dict() for u in report.unready],
            [
                {
                    "host": "",
                    "prefix": "/there/",
                    "kind": "wsgi",
                    "where": str(there.route.origin),
                    "why": "0 of 2 workers ready",
                }
            ],
        )
        self.assertEqual(
            report.reason, "1 route cannot serve: /there/ (0 of 2 workers ready)"
        )

    def test_one_ready_worker_is_enough(self) -> None:
        """
        One ready worker of two makes the route ready.
        """
        workers = entry(self.table, "/there/").workers
        assert workers is not None
        workers.group.members[1].ready = True
        report = self.now()
        self.assertEqual(
            (report.ready, report.reason, report.unready), (True, None, ())
        )

    def test_upstreams_marked_down(self) -> None:
        """
        A proxy route is not ready while every upstream is marked down, and
        says for how long; one upstream up is enough.
        """
        all_workers_ready(self.table)
        group = entry(self.table, "/api/").upstreams
        assert group is not None
        group.mark_down(group.members[0])
        self.assertTrue(self.now().ready)
        self.clock.advance(4)
        group.mark_down(group.members[1])
        [unready] = self.now().unready
        self.assertEqual(
            (unready.key, unready.kind, unready.why),
            (
                RouteKey("", "/api/"),
                "proxy",
                f"every upstream is marked down, for {DOWN_FOR - 4:.1f}s more",
            ),
        )
        self.clock.advance(DOWN_FOR - 4)
        self.assertTrue(self.now().ready)

    def test_single_upstream_of_a_host(self) -> None:
        """
        A host's proxy route with its one upstream down is named with its
        host.
        """
        all_workers_ready(self.table)
        group = entry(self.table, "/one/", "shop.example.com").upstreams
        assert group is not None
        group.mark_down(group.members[0])
        report = self.now()
        self.assertEqual(
            report.reason,
            "1 route cannot serve: shop.example.com/one/ (the upstream is marked "
            f"down, for {DOWN_FOR:.1f}s more)",
        )

    def test_workers_marked_down(self) -> None:
        """
        Ready workers that are all marked down do not make the route ready.
        """
        all_workers_ready(self.table)
        workers = entry(self.table, "/there/").workers
        assert workers is not None
        for member in workers.group.members:
            workers.group.mark_down(member)
        [unready] = self.now().unready
        self.assertEqual(
            unready.why, f"every worker is marked down, for {DOWN_FOR:.1f}s more"
        )

    def test_others_always_ready(self) -> None:
        """
        Static, redirect, in-process and health routes never count against
        readiness, whatever the others do.
        """
        for group in [e.upstreams for e in self.table.routes.values()]:
            for member in group.members if group else []:
                member.ready = False
        unready = {u.key.prefix for u in self.now().unready}
        self.assertEqual(unready, {"/there/", "/api/", "/one/"})

    def test_stopping(self) -> None:
        """
        A stopping router is not ready even when every route can serve; the
        reason is why it stops.
        """
        all_workers_ready(self.table)
        for why in (SHUTTING_DOWN, DRAINING, HANDED_OVER):
            report = self.now(why)
            self.assertEqual((report.ready, report.reason), (False, why))

    def test_no_table(self) -> None:
        """
        Before any table is served, the router is not ready.
        """
        report = readiness(None, 0.0, None)
        self.assertEqual((report.ready, report.reason), (False, "no route table yet"))

    def test_as_dict(self) -> None:
        """
        The admin endpoint's body: status, reason, generation and each
        route that cannot serve.
        """
        data = self.now().as_dict()
        self.assertEqual(
            (data["status"], data["reason"], data["generation"]),
            ("not ready", "1 route cannot serve: /there/ (0 of 2 workers ready)", 1),
        )
        self.assertEqual([u["prefix"] for u in data["unready"]], ["/there/"])
        all_workers_ready(self.table)
        self.assertEqual(
            self.now().as_dict(), {"status": "ready", "generation": 1, "unready": []}
        )

    def test_public(self) -> None:
        """
        The public body names only the prefixes of the asking route's own
        host, and nothing of workers, upstreams or the routes file.
        """
        group = entry(self.table, "/one/", "shop.example.com").upstreams
        assert group is not None
        group.mark_down(group.members[0])
        report = self.now()
        self.assertEqual(
            report.public(""),
            {
                "status": "not ready",
                "reason": "2 routes cannot serve",
                "unready": ["/there/"],
            },
        )
        self.assertEqual(
            report.public("shop.example.com"),
            {
                "status": "not ready",
                "reason": "2 routes cannot serve",
                "unready": ["/one/"],
            },
        )
        self.assertEqual(
            self.now(DRAINING).public(""), {"status": "not ready", "reason": "draining"}
        )
        all_workers_ready(self.table)
        self.clock.advance(DOWN_FOR)
        self.assertEqual(self.now().public(""), {"status": "ready"})

    def test_stop_delay(self) -> None:
        """
        The stop delay is the longest of the table's C{health: ready}
        routes, 0 without one.
        """
        self.assertEqual(stop_delay(self.table), 5.0)
        config = self.folder.config(
            """
            listen: tcp:8080
            routes:
              /a/: {health: ready, stop_delay: 3}
              /b/: {health: ready, stop_delay: 7.5}
              /c/: {health: live}
            """
        )
        self.assertEqual(
            stop_delay(build_table(config, make_engines(config, self.clock))), 7.5
        )
        config = plain(self.folder)
        self.assertEqual(
            stop_delay(build_table(config, make_engines(config, self.clock))), 0.0
        )
        self.assertEqual(stop_delay(None), 0.0)


class RouterHealthTests(SynchronousTestCase):
    """
    L{RouterHealth} follows the table the router serves and its stop.
    """

    def setUp(self) -> None:
        self.folder = Folder(self)
        self.clock = MemoryReactorClock()
        self.top = build_service(self.folder.config(ROUTES), self.clock)
        self.health = self.top.health
        assert self.health is not None

    def test_follows_served_table(self) -> None:
        """
        After a reload serves a new table, readiness is the new table's.
        """
        assert self.health is not None
        self.assertIs(self.health.table, self.top.table)
        self.assertFalse(self.health.ready().ready)
        config = plain(self.folder)
        new = build_table(config, make_engines(config, self.clock), 2)
        self.top.serve(new)
        report = self.health.ready()
        self.assertEqual((report.ready, report.generation), (True, 2))

    def test_live(self) -> None:
        """
        Liveness: ok, this process's PID, seconds since the router started,
        and the table served.
        """
        assert self.health is not None
        self.clock.advance(100)
        self.health.start()
        self.clock.advance(2.5)
        self.assertEqual(
            self.health.live(),
            {"status": "ok", "pid": os.getpid(), "uptime": 2.5, "generation": 1},
        )

    def test_stop_delay(self) -> None:
        """
        C{stop} makes the router not ready at once (shutting down), and
        fires after the stop delay, by then draining.
        """
        assert self.health is not None
        stopped = self.health.stop()
        self.assertEqual(self.health.stopping, SHUTTING_DOWN)
        self.clock.advance(4.9)
        self.assertNoResult(stopped)
        self.clock.advance(0.1)
        self.successResultOf(stopped)
        self.assertEqual(self.health.stopping, DRAINING)

    def test_no_stop_delay(self) -> None:
        """
        Without a C{health: ready} route with a stop delay, the ports may
        close at once: the router is draining.
        """
        top = build_service(plain(self.folder), self.clock)
        assert top.health is not None
        self.successResultOf(top.health.stop())
        self.assertEqual(top.health.stopping, DRAINING)

    def test_handed_over(self) -> None:
        """
        After an upgrade, there is nothing to delay.
        """
        assert self.health is not None
        self.successResultOf(self.health.stop(handed_over=True))
        self.assertEqual(self.health.stopping, HANDED_OVER)


class StopTests(SynchronousTestCase):
    """
    L{txrouter.services.RouterService.stopService}: not ready at once, the
    ports open for the stop delay, then closed, then the drain with the
    admin endpoint still answering; after an upgrade, every socket closes
    at once.
    """

    def start(self, stop_delay: float | None = None, drain_timeout: float = 30) -> None:
        folder = Folder(self)
        config = plain(folder, stop_delay)
        self.admin = f"unix:{folder.root}/adm/admin.sock"
        self.reactor = ThreadingMemoryReactor()
        config = dataclasses.replace(config, drain_timeout=drain_timeout)
        self.top = build_service(config, self.reactor)
        self.top.privilegedStartService()
        self.top.startService()
        pool = self.top.getServiceNamed("threadpool").pool
        self.addCleanup(lambda: pool.stop() if pool.started else None)
        self.health = self.top.health
        assert self.health is not None and self.top.site is not None
        self.in_flight = request_in_flight(self.top.site)

    def listeners(self) -> dict[str, bool]:
        return {
            str(s.name): s.running for s in self.top if isinstance(s, ListenerService)
        }

    def health_route(self) -> tuple[DummyRequest, Any]:
        assert self.top.table is not None
        return render(routed(self.top.table, b"/_health/"))

    def test_stop_delay_then_drain(self) -> None:
        """
        SIGTERM (C{stopService}): at once the health route answers 503
        "shutting down" while every port stays open; after the stop delay
        the public ports close, and while the request in flight drains the
        admin endpoint still listens and the reason is "draining".
        """
        self.start(5)
        stopped = self.top.stopService()
        request, body = self.health_route()
        self.assertEqual(request.responseCode, 503)
        self.assertEqual(
            json.loads(body), {"status": "not ready", "reason": "shutting down"}
        )
        self.assertEqual(set(self.listeners().values()), {True})
        self.reactor.advance(4.9)
        self.assertEqual(set(self.listeners().values()), {True})
        self.reactor.advance(0.1)
        self.assertEqual(
            self.listeners(),
            {
                self.admin: True,
                "tcp:8080:interface=127.0.0.1": False,
                "tcp:8081:interface=127.0.0.1": False,
            },
        )
        assert self.health is not None
        self.assertEqual(self.health.ready().reason, DRAINING)
        self.assertNoResult(stopped)

        self.in_flight.finish()
        self.reactor.advance(KEEPALIVE_GRACE)
        self.reactor.run_thread_calls()
        self.successResultOf(stopped)
        self.assertEqual(set(self.listeners().values()), {False})

    def test_drain_timeout_after_delay(self) -> None:
        """
        The drain gets its whole C{drain_timeout} after the stop delay.
        """
        self.start(5, drain_timeout=3)
        self.top.stopService()
        self.reactor.advance(5)
        self.reactor.advance(2.9)
        self.assertFalse(self.in_flight.channel.transport.disconnected)
        self.reactor.advance(0.2)
        self.assertTrue(self.in_flight.channel.transport.disconnected)

    def test_no_delay(self) -> None:
        """
        Without a stop delay the public ports close at once, as before
        health routes existed; the admin endpoint stays for the drain.
        """
        self.start()
        self.top.stopService()
        self.assertEqual(
            self.listeners(),
            {
                self.admin: True,
                "tcp:8080:interface=127.0.0.1": False,
                "tcp:8081:interface=127.0.0.1": False,
            },
        )
        self.assertEqual(self.health_route()[0].responseCode, 503)

    def test_handed_over(self) -> None:
        """
        After an upgrade has handed the sockets over, every listener, the
        admin endpoint's too, stops at once, with no stop delay.
        """
        self.start(5)
        self.top.handed_over = True
        self.top.stopService()
        self.assertEqual(set(self.listeners().values()), {False})
        assert self.health is not None
        self.assertEqual(self.health.ready().reason, HANDED_OVER)

    def test_operations_refused(self) -> None:
        """
        While the router stops, reload, restart and upgrade are refused
        and say why.
        """
        self.start(5)
        self.top.stopService()
        reloader = self.top.reloader
        assert reloader is not None
        outcome = self.successResultOf(reloader.reload())
        self.assertEqual(
            (outcome.ok, outcome.message),
            (False, "reload refused: the router is stopping (shutting down)"),
        )
        outcome = self.successResultOf(reloader.restart("", "/files/"))
        self.assertEqual(
            outcome.message, "restart refused: the router is stopping (shutting down)"
        )
        [admin] = [s for s in self.top if isinstance(s, AdminListener)]
        request = DummyRequest([b""])
        request.method = b"POST"
        rendered = admin.factory.resource.children[b"upgrade"].render(request)
        self.assertIs(rendered, NOT_DONE_YET)
        self.assertEqual(request.responseCode, 409)
        self.assertEqual(
            json.loads(b"".join(request.written))["message"],
            "upgrade refused: the router is stopping (shutting down)",
        )


class _Reloader:
    def status(self) -> dict[str, Any]:
        return {}


class AdminTests(SynchronousTestCase):
    """
    The admin endpoint's C{/healthz} and C{/readyz}.
    """

    def setUp(self) -> None:
        folder = Folder(self)
        self.clock = MemoryReactorClock()
        config = folder.config(ROUTES)
        self.table = build_table(config, make_engines(config, self.clock))
        self.health = RouterHealth(self.clock)
        self.health.table = self.table
        self.site = admin_site(_Reloader(), lambda: succeed(None), self.health)

    def get(self, name: bytes) -> tuple[DummyRequest, Any]:
        request = DummyRequest([name])
        return request, self.site.resource.children[name].render(request)

    def test_readyz(self) -> None:
        """
        C{/readyz} answers 503 with what is missing, then 200 once every
        route can serve; JSON, never cached.
        """
        request, body = self.get(b"readyz")
        self.assertEqual(request.responseCode, 503)
        self.assertEqual(json.loads(body), self.health.ready().as_dict())
        self.assertEqual(json.loads(body)["unready"][0]["prefix"], "/there/")
        self.assertEqual(header(request, b"content-type"), [b"application/json"])
        self.assertEqual(header(request, b"cache-control"), [b"no-store"])
        all_workers_ready(self.table)
        request, body = self.get(b"readyz")
        self.assertEqual(request.responseCode, 200)
        self.assertEqual(json.loads(body)["status"], "ready")

    def test_healthz(self) -> None:
        """
        C{/healthz} answers 200 while the process answers, stopping or not.
        """
        self.health.stopping = DRAINING
        request, body = self.get(b"healthz")
        self.assertEqual(request.responseCode, 200)
        self.assertEqual(json.loads(body)["status"], "ok")
        self.assertEqual(json.loads(body)["pid"], os.getpid())
        self.assertEqual(header(request, b"cache-control"), [b"no-store"])

    def test_without_health(self) -> None:
        """
        A site made without a health has no health pages (a worker's, say).
        """
        site = admin_site(_Reloader(), lambda: succeed(None))
        self.assertNotIn(b"readyz", site.resource.children)


class HealthRouteTests(SynchronousTestCase):
    """
    A C{health:} route is routed like any route and answers with the
    router's health.
    """

    def setUp(self) -> None:
        self.folder = Folder(self)
        self.clock = MemoryReactorClock()
        self.top = build_service(self.folder.config(ROUTES), self.clock)
        assert self.top.table is not None
        self.table = self.top.table

    def test_routed(self) -> None:
        """
        Each host's health route is its own, found by host and prefix; its
        bare prefix is answered, not redirected (a load balancer would take
        the redirect for a healthy answer), where other routes' are.
        """
        default = routed(self.table, b"/_health/")
        shop = routed(self.table, b"/_health/", b"shop.example.com")
        self.assertIsInstance(default, HealthCheck)
        self.assertIsInstance(shop, HealthCheck)
        self.assertIsNot(default, shop)
        self.assertIsInstance(routed(self.table, b"/_health"), HealthCheck)
        self.assertIsInstance(routed(self.table, b"/there"), AddSlash)
        self.assertIsInstance(routed(self.table, b"/_health/x"), HealthCheck)

    def test_ready(self) -> None:
        """
        C{ready}: 503 with the public reason while a route cannot serve,
        200 once all can; JSON, never cached.
        """
        request, body = render(routed(self.table, b"/_health/"))
        self.assertEqual(request.responseCode, 503)
        self.assertEqual(
            json.loads(body),
            {
                "status": "not ready",
                "reason": "1 route cannot serve",
                "unready": ["/there/"],
            },
        )
        self.assertEqual(header(request, b"content-type"), [b"application/json"])
        self.assertEqual(header(request, b"cache-control"), [b"no-store"])
        request, body = render(routed(self.table, b"/_health/", b"shop.example.com"))
        self.assertEqual(json.loads(body)["unready"], [])
        all_workers_ready(self.table)
        request, body = render(routed(self.table, b"/_health/"))
        self.assertEqual(request.responseCode, 200)
        self.assertEqual(json.loads(body), {"status": "ready"})

    def test_head(self) -> None:
        """
        HEAD gets the status and headers of a GET and no body (which
        Twisted would otherwise log a warning for, at every check).
        """
        request, body = render(routed(self.table, b"/_health/"), b"HEAD")
        _, full = render(routed(self.table, b"/_health/"))
        self.assertEqual((request.responseCode, body), (503, b""))
        self.assertEqual(header(request, b"content-length"), [b"%d" % len(full)])
        self.assertEqual(header(request, b"cache-control"), [b"no-store"])

    def test_live(self) -> None:
        """
        C{live}: 200 whatever the routes, and while the router stops.
        """
        assert self.top.health is not None
        self.top.health.stopping = DRAINING
        request, body = render(routed(self.table, b"/_live/"))
        self.assertEqual(
            (request.responseCode, json.loads(body)), (200, {"status": "ok"})
        )

    def test_other_methods(self) -> None:
        """
        Methods other than GET and HEAD get 405 with C{Allow}.
        """
        for method in (b"POST", b"PUT", b"DELETE", b"OPTIONS"):
            request, body = render(routed(self.table, b"/_health/"), method)
            self.assertEqual(request.responseCode, 405, method)
            self.assertEqual(header(request, b"allow"), [b"GET, HEAD"])
            self.assertEqual(header(request, b"cache-control"), [b"no-store"])
            self.assertIn(b"GET and HEAD", body)


#: Health routes that are wrong, and the one problem each gives (after
#: C{file:}).
MISTAKES = [
    (
        "/_health: {health: sometimes}",
        "3: routes['/_health'].health: expected 'ready' or 'live', got str 'sometimes'",
    ),
    (
        "/_health/: {health: [ready]}",
        "3: routes['/_health/'].health: expected 'ready' or 'live', got a list",
    ),
    (
        "/_health/: {health: ready, stop_delay: -1}",
        "3: routes['/_health/'].stop_delay: must be >= 0, got -1",
    ),
    (
        "/_health/: {health: ready, stop_delay: soon}",
        "3: routes['/_health/'].stop_delay: expected a number, got str 'soon'",
    ),
    (
        "/_health/: {health: live, stop_delay: 5}",
        "3: routes['/_health/'].stop_delay: stop_delay is for 'health: ready' "
        "routes (a liveness check answers 200 until the router exits): remove "
        "it, or check 'ready'",
    ),
    (
        "/_health/: {health: ready, cache: 60}",
        "3: routes['/_health/'].cache: 'cache' is an option of static routes, "
        "not health",
    ),
    (
        "/_health/: {health: ready, colour: red}",
        "3: routes['/_health/'].colour: unknown key; a health route takes: "
        "health, stop_delay",
    ),
]


class HealthConfigTests(SynchronousTestCase):
    """
    A C{health:} route is read and checked like any route: every problem
    with its C{file:line}, by the server, C{txrouter check} and the schema.
    """

    def setUp(self) -> None:
        self.folder = Folder(self)

    def read(self, route: str) -> Config:
        return self.folder.config(f"listen: tcp:8080\nroutes:\n  {route}\n")

    def test_read(self) -> None:
        """
        C{ready} and C{live}, with and without a stop delay.
        """
        route = self.read("/_health: {health: ready}").tables[""]["/_health/"]
        self.assertEqual(route, HealthRoute("/_health/", route.origin, "ready", 0.0))
        route = self.read("/up/: {health: ready, stop_delay: 6}").tables[""]["/up/"]
        self.assertEqual((route.check, route.stop_delay), ("ready", 6.0))  # type: ignore[attr-defined]
        route = self.read("/live/: {health: live}").tables[""]["/live/"]
        self.assertEqual(route.check, "live")  # type: ignore[attr-defined]

    def test_mistakes(self) -> None:
        """
        Each mistake gives exactly its one problem, word for word.
        """
        path = self.folder.root / "routes.yaml"
        failures = []
        for route, expected in MISTAKES:
            try:
                self.read(route)
            except ConfigError as e:
                found = [str(p) for p in e.problems]
            else:
                found = ["(accepted)"]
            if found != [f"{path}:{expected}"]:
                failures.append(f"{route}:\n  got      {found}\n  expected {expected}")
        self.assertEqual(failures, [], "\n".join(failures))

    def test_every_problem_at_once(self) -> None:
        """
        Two bad health routes give two problems, each on its line.
        """
        with self.assertRaises(ConfigError) as raised:
            self.folder.config(
                "listen: tcp:8080\nroutes:\n"
                "  /a/: {health: sometimes}\n"
                "  /b/: {health: ready, stop_delay: -2}\n"
            )
        self.assertEqual([p.line for p in raised.exception.problems], [3, 4])

    def test_check_command(self) -> None:
        """
        C{txrouter check} prints the problem with its C{file:line} and
        exits 1; a good file passes.
        """
        path = self.folder.root / "routes.yaml"
        path.write_text("listen: tcp:8080\nroutes:\n  /_health: {health: sometimes}\n")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["check", str(path)])
        self.assertEqual(code, 1)
        self.assertIn(
            f"{path}:3: routes['/_health'].health: expected 'ready' or 'live', "
            "got str 'sometimes'",
            err.getvalue(),
        )
        path.write_text("listen: tcp:8080\nroutes:\n  /_health: {health: ready}\n")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            self.assertEqual(main(["check", str(path)]), 0)

    def test_schema(self) -> None:
        """
        The schema accepts what the reader accepts, refuses what it refuses
        for its shape, and has the reader's default stop delay.
        """
        check = jsonschema.Draft202012Validator(routes_schema())

        def valid(route: str) -> bool:
            return check.is_valid(
                yaml.safe_load(f"listen: tcp:8080\nroutes:\n  {route}\n")
            )

        for route in (
            "/h/: {health: ready}",
            "/h/: {health: live}",
            "/h/: {health: ready, stop_delay: 2.5}",
        ):
            self.assertTrue(valid(route), route)
        for route, _ in MISTAKES:
            if "{health: live, stop_delay: 5}" not in route:
                self.assertFalse(valid(route), route)
        # Only the reader knows that a liveness check has no stop delay.
        self.assertTrue(valid("/h/: {health: live, stop_delay: 5}"))
        option = routes_schema()["$defs"]["health"]["properties"]["stop_delay"]
        route = self.read("/h/: {health: ready}").tables[""]["/h/"]
        self.assertEqual(option["default"], route.stop_delay)  # type: ignore[attr-defined]
