"""
Unit tests of L{txrouter.build.build_table} and the L{RouteTable} it
returns, of the route kind registry (L{txrouter.kinds}), and of swapping
tables in a running site (L{txrouter.services.RouterService.serve}).

Routes are static, redirect, proxy and WSGI ones (in process and in
workers): no Django is set up in this process, no worker is started, and
the reactor is a C{MemoryReactorClock}.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import IResource
from twisted.web.test.requesthelper import DummyRequest

from tests.support import REPO
from txrouter import kinds
from txrouter.assembly import build_service, make_engines
from txrouter.build import build_table
from txrouter.bulkhead import BulkheadResource
from txrouter.config import Config, load_config
from txrouter.errors import AppLoadError, ConfigError
from txrouter.kinds import KINDS, Built, RouteKind
from txrouter.kinds.application import socket_stem
from txrouter.proxy import ProxyResource
from txrouter.redirect import Redirect
from txrouter.routespec import Origin
from txrouter.routetable import RouteKey, RouteTable
from txrouter.staticfiles import StaticFiles
from txrouter.wsgi import WSGIResource

pytestmark = pytest.mark.unit

APP = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
"""

ROUTES = """
    listen: tcp:8080:interface=127.0.0.1
    runtime_dir: run/workers
    routes:
      /files/: {static: pub}
      /old/: {redirect: /files/}
      /api/: {proxy: "http://127.0.0.1:9000/v1/"}
      /here/: {wsgi: "txrouter_build_app:application", path: apps}
      /there/: {wsgi: "txrouter_build_app:application", path: apps, workers: 2}
    hosts:
      shop.example.com:
        routes:
          /: {static: pub}
          /here/: {wsgi: "txrouter_build_app:application", path: apps}
    """


class Folder:
    """
    A scratch folder with a routes file, a static folder and an app.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="txrouter-build-")).resolve()
        case.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
        (self.root / "pub").mkdir()
        (self.root / "run").mkdir()
        (self.root / "apps").mkdir()
        (self.root / "apps" / "txrouter_build_app.py").write_text(APP)
        saved = sys.path[:]
        case.addCleanup(sys.path.__setitem__, slice(None), saved)

    def config(self, text: str = ROUTES) -> Config:
        path = self.root / "routes.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return load_config(path)


def build(config: Config, generation: int = 1) -> RouteTable:
    return build_table(config, make_engines(config, MemoryReactorClock()), generation)


def routed(table: RouteTable, path: bytes, host: bytes = b"example.com") -> Any:
    """
    The resource C{table}'s router picks for C{path} on C{host}.
    """
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.requestHeaders.setRawHeaders(b"host", [host])
    request.prepath = []
    return table.router.getChildWithDefault(request.postpath[0], request)


class RouteTableTests(SynchronousTestCase):
    """
    One build is one immutable table of every route, keyed by host and prefix.
    """

    def setUp(self) -> None:
        self.folder = Folder(self)
        self.table = build(self.folder.config())

    def test_keys_in_file_order(self) -> None:
        """
        Every route is in the table under its host and prefix, in file order.
        """
        self.assertEqual(
            list(self.table.routes),
            [
                RouteKey("", "/files/"),
                RouteKey("", "/old/"),
                RouteKey("", "/api/"),
                RouteKey("", "/here/"),
                RouteKey("", "/there/"),
                RouteKey("shop.example.com", "/"),
                RouteKey("shop.example.com", "/here/"),
            ],
        )
        self.assertEqual(str(RouteKey("shop.example.com", "/")), "shop.example.com/")
        self.assertEqual(str(RouteKey("", "/api/")), "/api/")

    def test_what_each_route_built(self) -> None:
        """
        Each entry holds its route, its resource, and its workers or
        upstreams when it has them; the router serves those resources.
        """
        routes = self.table.routes
        files = routes[RouteKey("", "/files/")]
        self.assertIsInstance(files.built.resource, StaticFiles)
        self.assertEqual((files.workers, files.upstreams), (None, None))
        self.assertIsInstance(routes[RouteKey("", "/old/")].built.resource, Redirect)
        api = routes[RouteKey("", "/api/")]
        self.assertIsInstance(api.built.resource, BulkheadResource)
        self.assertIsInstance(
            api.built.resource.inner,  # type: ignore[attr-defined]
            ProxyResource,
        )
        self.assertIsNotNone(api.upstreams)
        there = routes[RouteKey("", "/there/")]
        self.assertIsNotNone(there.workers)
        self.assertIs(there.upstreams, there.workers.group)  # type: ignore[union-attr]
        self.assertEqual(self.table.worker_sets(), [there.workers])
        self.assertIs(routed(self.table, b"/api/x"), api.built.resource)
        self.assertIs(routed(self.table, b"/there/x"), there.built.resource)

    def test_one_app_own_bulkheads(self) -> None:
        """
        An in-process application mounted by two routes is loaded once;
        each route has its own bulkhead in front of it.
        """
        here = self.table.routes[RouteKey("", "/here/")].built.resource
        shop = self.table.routes[RouteKey("shop.example.com", "/here/")].built.resource
        assert isinstance(here, BulkheadResource)
        assert isinstance(shop, BulkheadResource)
        self.assertIsInstance(here.inner, WSGIResource)
        self.assertIs(
            here.inner._application,  # type: ignore[attr-defined]
            shop.inner._application,  # type: ignore[attr-defined]
        )
        self.assertIsNot(here.bulkhead, shop.bulkhead)

    def test_in_process_slots(self) -> None:
        """
        An in-process route's default slots: half the shared pool when
        several in-process routes share it (two here, pool of 8 threads by
        default), two per thread when one route is its only user (the next
        request waits beside each thread); a worker route's are two per
        thread of its workers.
        """
        here = self.table.routes[RouteKey("", "/here/")].built.resource
        there = self.table.routes[RouteKey("", "/there/")].built.resource
        assert isinstance(here, BulkheadResource)
        assert isinstance(there, BulkheadResource)
        self.assertEqual(here.bulkhead.max_concurrent, 4)
        self.assertEqual(there.bulkhead.max_concurrent, 2 * 2 * 8)
        alone = build(
            self.folder.config(
                """
                listen: tcp:8080:interface=127.0.0.1
                threads: {min: 1, max: 6}
                routes:
                  /here/: {wsgi: "txrouter_build_app:application", path: apps}
                  /files/: {static: pub}
                """
            )
        )
        only = alone.routes[RouteKey("", "/here/")].built.resource
        assert isinstance(only, BulkheadResource)
        self.assertEqual(only.bulkhead.max_concurrent, 2 * 6)

    def test_immutable(self) -> None:
        """
        Neither the table nor its routes mapping can be changed.
        """
        with self.assertRaises(dataclasses.FrozenInstanceError):
            self.table.generation = 2  # type: ignore[misc]
        with self.assertRaises(TypeError):
            self.table.routes[RouteKey("", "/x/")] = None  # type: ignore[index]

    def test_generation(self) -> None:
        """
        A table carries the generation it was built as.
        """
        self.assertEqual(self.table.generation, 1)
        self.assertEqual(build(self.folder.config(), 7).generation, 7)

    def test_socket_names_stable(self) -> None:
        """
        A worker route's socket names depend on its host and prefix, the
        router and the table's generation: a later table's workers of the
        same route get sockets of their own beside the first ones.
        """
        config = self.folder.config()
        engines = make_engines(config, MemoryReactorClock())
        first = build_table(config, engines).routes[RouteKey("", "/there/")]
        second = build_table(config, engines, 2).routes[RouteKey("", "/there/")]
        assert first.workers is not None and second.workers is not None
        stem = f"{socket_stem(RouteKey('', '/there/'))}-{engines.instance}-"
        folder = str(self.folder.root / "run" / "workers")
        self.assertEqual(
            [u.key for u in first.workers.group.members],
            [("txrouter-worker", f"{folder}/{stem}g1-{n}.sock") for n in (1, 2)],
        )
        self.assertEqual(
            [u.key for u in second.workers.group.members],
            [("txrouter-worker", f"{folder}/{stem}g2-{n}.sock") for n in (1, 2)],
        )
        self.assertEqual(
            first.workers.names,
            ["routes['/there/'] worker 1", "routes['/there/'] worker 2"],
        )
        self.assertEqual(
            second.workers.names,
            [
                "routes['/there/'] worker 1 (table 2)",
                "routes['/there/'] worker 2 (table 2)",
            ],
        )
        self.assertNotEqual(
            socket_stem(RouteKey("", "/there/")),
            socket_stem(RouteKey("a.example", "/there/")),
        )

    def test_build_makes_nothing(self) -> None:
        """
        Building acquires nothing: the runtime folder is not made and no
        thread or process starts.
        """
        config = self.folder.config()
        engines = make_engines(config, MemoryReactorClock())
        build_table(config, engines)
        self.assertFalse((self.folder.root / "run" / "workers").exists())
        self.assertFalse(engines.pool.started)
        self.assertEqual(engines.monitor.protocols, {})

    def test_temporary_runtime_dir_made_at_start(self) -> None:
        """
        Without C{runtime_dir}, the temporary folder is named at build time,
        made (mode 0700) when the service starts, and removed at stop.
        """
        config = self.folder.config(ROUTES.replace("runtime_dir: run/workers", ""))
        top = build_service(config, MemoryReactorClock())
        service = top.getServiceNamed("runtime_dir")
        path = Path(service.path)
        self.assertFalse(path.exists())
        service.startService()
        self.assertEqual(path.stat().st_mode & 0o777, 0o700)
        service.stopService()
        self.assertFalse(path.exists())


class LoadFailureTests(SynchronousTestCase):
    """
    A build reports every application that fails to load, not the first.
    """

    def test_every_failure(self) -> None:
        """
        Two routes with missing modules give one error naming both routes.
        """
        folder = Folder(self)
        config = folder.config(
            """
            listen: tcp:8080
            routes:
              /a/: {wsgi: "txrouter_no_such_a:application", path: apps}
              /ok/: {static: pub}
              /b/: {wsgi: "txrouter_no_such_b:application", path: apps}
            """
        )
        error = self.assertRaises(AppLoadError, build, config)
        lines = str(error).splitlines()
        self.assertTrue(lines[0].startswith(f"{config.path}:3: routes['/a/']: "))
        self.assertIn("txrouter_no_such_a", lines[0])
        b_lines = [line for line in lines if "routes['/b/']" in line]
        self.assertEqual(len(b_lines), 1, str(error))
        self.assertTrue(b_lines[0].startswith(f"{config.path}:5: routes['/b/']: "))


@dataclasses.dataclass(frozen=True)
class EchoRoute:
    """
    The route of a kind made up for the test.
    """

    kind: ClassVar[str] = "echo"
    prefix: str
    origin: Origin
    text: str


class EchoResource:
    """
    The resource of the made-up kind; a marker, never rendered.
    """

    def __init__(self, text: str) -> None:
        self.text = text


def _read_echo(reader: Any, prefix: str, spec: Any, origin: Origin) -> EchoRoute:
    return EchoRoute(prefix, origin, str(spec["echo"]) + str(spec.get("times", 1)))


def _build_echo(route: EchoRoute, key: RouteKey, builder: Any) -> Built:
    return Built(EchoResource(route.text))  # type: ignore[arg-type]


class RegistryTests(SynchronousTestCase):
    """
    The kinds are listed in one registry, and a kind needs nothing else.
    """

    def test_kinds(self) -> None:
        """
        The five kinds of routes.yaml version 1, and the asgi and health
        kinds, are registered by their key.
        """
        self.assertEqual(
            sorted(KINDS),
            ["asgi", "django", "health", "proxy", "redirect", "static", "wsgi"],
        )
        for name, kind in KINDS.items():
            self.assertEqual(kind.name, name)

    def test_new_kind(self) -> None:
        """
        A kind added to the registry is read, checked for unknown keys, and
        built, with no other change anywhere.
        """
        KINDS["echo"] = RouteKind("echo", ("times",), _read_echo, _build_echo)
        self.addCleanup(KINDS.pop, "echo")
        folder = Folder(self)
        config = folder.config(
            """
            listen: tcp:8080
            routes:
              /e/: {echo: hi, times: 2}
            """
        )
        route = config.tables[""]["/e/"]
        self.assertEqual(route, EchoRoute("/e/", route.origin, "hi2"))
        self.assertIs(kinds.kind_of(route), KINDS["echo"])
        table = build(config)
        resource = table.routes[RouteKey("", "/e/")].built.resource
        self.assertEqual(resource.text, "hi2")  # type: ignore[attr-defined]
        error = self.assertRaises(
            ConfigError,
            folder.config,
            "listen: tcp:8080\nroutes: {/e/: {echo: hi, cache: 1}}\n",
        )
        self.assertIn("'cache' is an option of static routes, not echo", str(error))


class ServeTests(SynchronousTestCase):
    """
    A running site serves one table at a time; a new one takes over in one
    step, and a request keeps the table that received it.
    """

    def test_swap(self) -> None:
        """
        After C{serve(new)}, new requests are routed by the new table; a
        request routed before keeps the old table's resource.
        """
        folder = Folder(self)
        top = build_service(folder.config(), MemoryReactorClock())
        old = top.table
        assert old is not None and top.site is not None
        self.assertIs(top.site.resource, old.router)
        before: IResource = routed(old, b"/files/a")
        text = "listen: tcp:8080\nroutes: {/files/: {redirect: /}}\n"
        new = build(folder.config(text), 2)
        top.serve(new)
        self.assertIs(top.table, new)
        self.assertIs(top.site.resource, new.router)
        self.assertIsInstance(routed(new, b"/files/a"), Redirect)
        self.assertIsInstance(before, StaticFiles)


class WorkerImportTests(SynchronousTestCase):
    """
    A worker process has the router's shape but none of its assembly.
    """

    def test_no_assembly_in_worker(self) -> None:
        """
        Building a worker's service tree imports no assembly, build, config
        or route kind module.
        """
        code = textwrap.dedent(
            """
            import argparse, sys
            from twisted.internet.testing import MemoryReactorClock
            from txrouter import worker
            args = argparse.Namespace(
                threads="1:2", processes=1, prefix="/app/",
                drain_timeout=1.0, socket=sys.argv[1],
            )
            worker._build(MemoryReactorClock(), args, lambda e, s: [])
            assembly = ("txrouter.assembly", "txrouter.build", "txrouter.config",
                        "txrouter.configreader", "txrouter.kinds")
            print(sorted(m for m in sys.modules if m.startswith(assembly)))
            """
        )
        folder = Path(tempfile.mkdtemp(prefix="txrouter-imports-"))
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        result = subprocess.run(
            [sys.executable, "-c", code, str(folder / "w.sock")],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "[]")
