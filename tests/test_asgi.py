"""
Unit tests of C{asgi:} routes: how L{txrouter.kinds.asgi} reads and checks
them, what L{txrouter.asgifacts.router_facts} lets an application see of a
request its router sent, how a table is built with one, and what C{txrouter
explain} says of one. Nothing listens; the middleware is driven with real
ASGI scopes, C{receive} and C{send} on an asyncio loop of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_config import make_site, problems_of, write_routes
from txrouter.asgifacts import router_facts, worker_scope
from txrouter.assembly import make_engines
from txrouter.build import build_table
from txrouter.bulkhead import BulkheadResource
from txrouter.config import AsgiRoute, load_config
from txrouter.explain import CLIENT, explain, explanation_text
from txrouter.proxy import ProxyResource
from txrouter.routetable import RouteKey
from txrouter.schema import routes_schema

pytestmark = pytest.mark.unit

TOKEN = b"0123456789abcdef0123456789abcdef"


class ReadTests(SynchronousTestCase):
    """
    An C{asgi:} route as the reader makes it, and each of its mistakes as
    C{file:line: where: what}.
    """

    def setUp(self) -> None:
        self.root = make_site(self)

    def routes(self, route: str) -> Path:
        return write_routes(
            self.root,
            f"""
            listen: tcp:8080:interface=127.0.0.1
            routes:
              /live/: {route}
            """,
        )

    def test_minimal(self) -> None:
        """
        Only C{asgi:} is required: one worker, no path, no settings, the
        application timeout.
        """
        config = load_config(self.routes('{asgi: "chat.asgi:application"}'))
        route = config.tables[""]["/live/"]
        assert isinstance(route, AsgiRoute)
        self.assertEqual(
            (route.app, route.path, route.settings, route.workers, route.timeout),
            ("chat.asgi:application", None, None, 1, 60.0),
        )
        self.assertEqual(route.env, ())

    def test_all_options(self) -> None:
        """
        Every option is read: path (relative to the file), settings,
        workers, env, timeout and admission.
        """
        config = load_config(
            self.routes(
                '{asgi: "chat.asgi:application", path: hello, '
                "settings: chat.settings, workers: 3, env: {A: 1, B: yes}, "
                "timeout: 5, max_concurrent: 7, queue: 2, max_body: 1M}"
            )
        )
        route = config.tables[""]["/live/"]
        assert isinstance(route, AsgiRoute)
        self.assertEqual(route.path, self.root / "hello")
        self.assertEqual(route.settings, "chat.settings")
        self.assertEqual(route.workers, 3)
        self.assertEqual(route.env, (("A", "1"), ("B", "true")))
        self.assertEqual(route.timeout, 5.0)
        self.assertEqual(
            (route.admission.max_concurrent, route.admission.queue, route.max_body),
            (7, 2, 1024 * 1024),
        )

    def test_never_in_the_router(self) -> None:
        """
        C{workers: 0} is refused, saying that an ASGI application runs only
        in worker processes and what to write instead.
        """
        path = self.routes('{asgi: "chat.asgi:application", workers: 0}')
        [problem] = problems_of(self, path)
        self.assertEqual((problem.line, problem.where), (3, "routes['/live/'].workers"))
        self.assertTrue(problem.message.startswith("must be >= 1, got 0: "))
        self.assertIn("never runs in the router process", problem.message)
        self.assertIn("write 'workers: 1'", problem.message)
        [negative] = problems_of(self, self.routes('{asgi: "a:b", workers: -2}'))
        self.assertTrue(negative.message.startswith("must be >= 1, got -2"))

    def test_mistakes_at_once(self) -> None:
        """
        Every mistake of one route is reported, each with its place: the
        application name, the settings, the folder, a wrong type, and an
        option of other kinds.
        """
        path = write_routes(
            self.root,
            """
            listen: tcp:8080:interface=127.0.0.1
            routes:
              /live/:
                asgi: chat.asgi
                settings: chat-settings
                path: nowhere
                workers: two
                threads: {min: 1, max: 2}
            """,
        )
        found = {p.where: (p.line, p.message) for p in problems_of(self, path)}
        where = "routes['/live/']"
        self.assertEqual(found[f"{where}.asgi"][0], 4)
        self.assertIn(
            "expected 'module:attribute', e.g. 'chat.asgi:application', "
            "got str 'chat.asgi'",
            found[f"{where}.asgi"][1],
        )
        self.assertEqual(found[f"{where}.settings"][0], 5)
        self.assertIn("expected a dotted module name", found[f"{where}.settings"][1])
        self.assertEqual(found[f"{where}.path"][0], 6)
        self.assertIn("is not a folder", found[f"{where}.path"][1])
        self.assertEqual(
            found[f"{where}.workers"], (7, "expected a whole number, got str 'two'")
        )
        self.assertEqual(
            found[f"{where}.threads"],
            (8, "'threads' is an option of django and wsgi routes, not asgi"),
        )

    def test_schema_defaults(self) -> None:
        """
        The schema's defaults for an C{asgi:} route are the reader's.
        """
        config = load_config(self.routes('{asgi: "a:b"}'))
        route = config.tables[""]["/live/"]
        assert isinstance(route, AsgiRoute)
        options = routes_schema()["$defs"]["asgi"]["properties"]
        self.assertEqual(options["workers"]["default"], route.workers)
        self.assertEqual(options["workers"]["type"], ["integer", "null"])
        self.assertEqual(options["workers"]["minimum"], 1)
        self.assertEqual(options["timeout"]["default"], route.timeout)
        self.assertEqual(options["queue"]["default"], route.admission.queue)
        self.assertEqual(options["env"]["default"], dict(route.env))


class BuildTests(SynchronousTestCase):
    """
    An C{asgi:} route in a route table: its workers behind the proxy
    engine, and nothing started.
    """

    def test_workers_behind_the_engine(self) -> None:
        """
        The route is a proxy to its workers that tunnels WebSockets, behind
        a bulkhead of 1024 slots per worker (an event loop serves many
        requests at once); no process starts while building.
        """
        root = make_site(self)
        (root / "run").mkdir()
        path = write_routes(
            root,
            """
            listen: tcp:8080:interface=127.0.0.1
            runtime_dir: run/w
            routes:
              /live/: {asgi: "chat.asgi:application", path: hello, workers: 2}
            """,
        )
        config = load_config(path)
        engines = make_engines(config, MemoryReactorClock())
        built = build_table(config, engines).routes[RouteKey("", "/live/")]
        resource = built.built.resource
        assert isinstance(resource, BulkheadResource)
        assert isinstance(resource.inner, ProxyResource)
        self.assertEqual(resource.inner.settings.upgrades, {b"websocket"})
        self.assertIsNotNone(resource.inner.settings.worker_token)
        self.assertEqual(resource.bulkhead.max_concurrent, 2 * 1024)
        assert built.workers is not None
        self.assertEqual(
            built.workers.names,
            ["routes['/live/'] worker 1", "routes['/live/'] worker 2"],
        )
        self.assertEqual(engines.monitor.protocols, {})


def _run(
    application: Any, scope: dict[str, Any], incoming: Iterable[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """
    Call an ASGI application with C{scope}; C{receive} gives C{incoming}
    in order.

    @return: the messages it sent.
    """
    queue = list(incoming)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    asyncio.run(application(scope, receive, send))
    return sent


class _Recorder:
    """
    An ASGI application that keeps the scope it is called with, and
    answers 200 (or accepts a WebSocket).
    """

    def __init__(self) -> None:
        self.scopes: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})


def _daphne_scope(kind: str = "http", **facts: bytes) -> dict[str, Any]:
    """
    A scope as Daphne makes it of a request on a UNIX socket: no client,
    no server, its own root path; the router's facts as headers.
    """
    headers = [
        (b"host", b"example.localhost:1234"),
        (b"x-custom", b"kept"),
        (b"x-txrouter-token", TOKEN),
        (b"x-txrouter-client", b"203.0.113.7"),
        (b"x-txrouter-client-port", b"50123"),
        (b"x-txrouter-scheme", b"https"),
        (b"x-txrouter-server-port", b"8443"),
        (b"x-txrouter-protocol", b"HTTP/1.0"),
    ]
    given = {
        b"x-txrouter-" + name.replace("_", "-").encode(): v for name, v in facts.items()
    }
    headers = [(n, given.pop(n, v)) for n, v in headers] + list(given.items())
    scope: dict[str, Any] = {
        "type": kind,
        "path": "/live/ws/lobby/",
        "raw_path": b"/live/ws/lobby/",
        "root_path": "",
        "query_string": b"a=1",
        "headers": headers,
        "client": None,
        "server": None,
    }
    if kind == "http":
        scope.update(method="GET", http_version="1.1", scheme="http")
    return scope


class RouterFactsTests(SynchronousTestCase):
    """
    L{router_facts}: the application sees a request of its router as the
    client made it, and no request of anyone else.
    """

    def test_facts(self) -> None:
        """
        The client's address and port, its scheme, the server as the client
        named it with the router's port, the client's protocol and the
        prefix as C{root_path}; the path is unchanged (it includes the
        prefix, as ASGI says), and the original scope is left as it was.
        """
        app = _Recorder()
        scope = _daphne_scope()
        before = dict(scope)
        sent = _run(router_facts(app, TOKEN, "/live/"), scope)
        self.assertEqual(sent[0]["status"], 200)
        [seen] = app.scopes
        self.assertEqual(seen["client"], ("203.0.113.7", 50123))
        self.assertEqual(seen["scheme"], "https")
        self.assertEqual(seen["server"], ("example.localhost", 8443))
        self.assertEqual(seen["root_path"], "/live")
        self.assertEqual(seen["http_version"], "1.0")
        self.assertEqual(seen["path"], "/live/ws/lobby/")
        self.assertEqual(seen["query_string"], b"a=1")
        self.assertEqual(scope, before)

    def test_headers_stripped(self) -> None:
        """
        No C{x-txrouter-*} header reaches the application, in any case of
        its name; the client's own headers do, in order.
        """
        app = _Recorder()
        scope = _daphne_scope()
        scope["headers"].append((b"X-TXROUTER-Extra", b"1"))
        _run(router_facts(app, TOKEN, "/live/"), scope)
        [seen] = app.scopes
        self.assertEqual(
            seen["headers"],
            [(b"host", b"example.localhost:1234"), (b"x-custom", b"kept")],
        )

    def test_plain_http(self) -> None:
        """
        A request the client made over plain HTTP/1.1 says so.
        """
        app = _Recorder()
        scope = _daphne_scope(scheme=b"http", protocol=b"HTTP/1.1")
        _run(router_facts(app, TOKEN, "/"), scope)
        [seen] = app.scopes
        self.assertEqual((seen["scheme"], seen["http_version"]), ("http", "1.1"))
        self.assertEqual(seen["root_path"], "")

    def test_websocket(self) -> None:
        """
        A WebSocket's scheme is C{ws} or C{wss}, as the client connected;
        its other facts are an HTTP request's.
        """
        for scheme, expected in ((b"http", "ws"), (b"https", "wss")):
            app = _Recorder()
            scope = _daphne_scope("websocket", scheme=scheme)
            sent = _run(
                router_facts(app, TOKEN, "/live/"),
                scope,
                [{"type": "websocket.connect"}],
            )
            self.assertEqual(sent, [{"type": "websocket.accept"}])
            [seen] = app.scopes
            self.assertEqual(seen["scheme"], expected)
            self.assertEqual(seen["client"], ("203.0.113.7", 50123))
            self.assertEqual(seen["root_path"], "/live")
            self.assertNotIn("http_version", seen)

    def test_server_name(self) -> None:
        """
        The server is the C{Host} without its port (an IPv6 literal keeps
        its brackets, as in a WSGI worker's C{SERVER_NAME}); without a
        C{Host} it is unknown.
        """
        cases = [
            (b"example.com", ("example.com", 8443)),
            (b"Example.COM:80", ("Example.COM", 8443)),
            (b"[::1]:8080", ("[::1]", 8443)),
            (b"bad host:x:y", None),
        ]
        for host, server in cases:
            scope = _daphne_scope()
            scope["headers"][0] = (b"host", host)
            seen = worker_scope(scope, TOKEN, "/")
            assert seen is not None
            self.assertEqual(seen["server"], server, host)
        scope = _daphne_scope()
        del scope["headers"][0]
        seen = worker_scope(scope, TOKEN, "/")
        assert seen is not None
        self.assertIsNone(seen["server"])

    def test_strangers_refused(self) -> None:
        """
        An HTTP request without the token, with another token, or to a
        worker that has none, is answered 403 and never reaches the
        application.
        """
        cases = [
            (TOKEN, _daphne_scope(token=b"f" * 32)),
            (TOKEN, _daphne_scope(token=b"")),
            (b"", _daphne_scope(token=b"")),
        ]
        without = _daphne_scope()
        without["headers"] = [
            h for h in without["headers"] if h[0] != b"x-txrouter-token"
        ]
        cases.append((TOKEN, without))
        for token, scope in cases:
            app = _Recorder()
            sent = _run(router_facts(app, token, "/live/"), scope)
            self.assertEqual(app.scopes, [])
            self.assertEqual(sent[0]["type"], "http.response.start")
            self.assertEqual(sent[0]["status"], 403)
            self.assertEqual(
                sent[1]["body"], b"403 Forbidden: not from this worker's router.\n"
            )

    def test_websocket_strangers_refused(self) -> None:
        """
        A WebSocket without the token is closed before it is accepted
        (which Daphne answers with 403), and never reaches the application.
        """
        app = _Recorder()
        sent = _run(
            router_facts(app, TOKEN, "/live/"),
            _daphne_scope("websocket", token=b"x"),
            [{"type": "websocket.connect"}],
        )
        self.assertEqual(app.scopes, [])
        self.assertEqual([m["type"] for m in sent], ["websocket.close"])

    def test_lifespan_passes(self) -> None:
        """
        A C{lifespan} scope reaches the application as it is.
        """
        app = _Recorder()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
        _run(router_facts(app, b"", "/live/"), scope)
        self.assertEqual(app.scopes, [scope])


class ExplainTests(SynchronousTestCase):
    """
    C{txrouter explain} of an C{asgi:} route.
    """

    def test_scope(self) -> None:
        """
        It says the route runs in Daphne workers, what the proxy engine
        sends them, and the scope the application gets: the client's
        address, the prefix as C{root_path}, no router header; a route
        with Django settings gets the static files note.
        """
        root = make_site(self)
        path = write_routes(
            root,
            """
            listen: tcp:8080:interface=127.0.0.1
            routes:
              /live/: {asgi: "chat.asgi:application", settings: chat.settings}
              /plain/: {asgi: "probe:application", workers: 2}
            """,
        )
        found = explain(load_config(path), "/live/lobby/?x=1", host="h.example:8080")
        self.assertEqual(
            found["runs"], {"in": "workers", "workers": 1, "server": "daphne"}
        )
        self.assertEqual(found["sent"]["request_line"], "GET /live/lobby/?x=1 HTTP/1.1")
        scope = found["scope"]
        self.assertEqual(scope["client"], [CLIENT.host, CLIENT.port])
        self.assertEqual(scope["server"], ["h.example", 8080])
        self.assertEqual(
            (scope["path"], scope["root_path"], scope["query_string"]),
            ("/live/lobby/", "/live", "x=1"),
        )
        self.assertEqual(scope["headers"], [["host", "h.example:8080"]])
        self.assertIn("note", found)
        text = explanation_text(found)
        self.assertIn("served by Daphne", text)
        self.assertIn(f"client        {CLIENT.host}:{CLIENT.port}", text)
        plain = explain(load_config(path), "/plain/x")
        self.assertNotIn("note", plain)
        self.assertEqual(plain["route"]["summary"], "asgi probe:application")
