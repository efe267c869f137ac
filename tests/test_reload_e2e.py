"""
End to end: reloading a real, daemonized C{twistd txrouter} with SIGHUP
while several keep-alive clients load every route kind, and no request
fails or gets a wrong answer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.load import SteadyLoad, echo_post, get
from tests.support import (
    REPO,
    Txrouter,
    alive,
    free_port,
    listening,
    request,
    stop_daemon,
    wait_until,
)
from txrouter.config import default_admin

pytestmark = pytest.mark.e2e

#: A WSGI app answering with its process and its FLAVOUR variable, and
#: with the length and SHA-256 of a POSTed body.
_APP = """
import hashlib, json, os

def application(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST":
        data = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        body = json.dumps(
            {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        ).encode()
    else:
        body = f"{os.getpid()} {os.environ.get('FLAVOUR')}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""


def _routes(port: int, extra_port: int | None, flavour: str, more: str = "") -> str:
    listen = [f"tcp:{port}:interface=127.0.0.1"]
    if extra_port is not None:
        listen.append(f"tcp:{extra_port}:interface=127.0.0.1")
    return textwrap.dedent(
        f"""
        listen: [{", ".join(listen)}]
        drain_timeout: 10
        routes:
          /files/: {{static: pub}}
          /here/: {{wsgi: "reloadapp:application", path: apps}}
          /kept/: {{wsgi: "reloadapp:application", path: apps, workers: 1}}
          /env/:
            wsgi: "reloadapp:application"
            path: apps
            workers: 2
            env: {{FLAVOUR: {flavour}}}
        """
    ) + textwrap.indent(textwrap.dedent(more), "  ")


def _pid_of(port: int, path: str) -> int:
    status, _, body = request(port, "GET", path)
    assert status == 200, (status, body)
    return int(body.split()[0])


class RunningRouter(SynchronousTestCase):
    """
    A daemonized router serving static files, an in-process app and two
    worker routes of an app in a scratch folder.
    """

    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="txrouter-reload-"))
        (self.folder / "pub").mkdir()
        (self.folder / "pub" / "a.txt").write_bytes(b"static a\n")
        (self.folder / "apps").mkdir()
        (self.folder / "apps" / "reloadapp.py").write_text(_APP)
        self.server = Txrouter("")
        self.config = self.server.config
        self.write(_routes(self.server.port, None, "one"))
        self.workers: set[int] = set()
        self.addCleanup(lambda: stop_daemon(self.server, self.workers, self.folder))
        self.server.start()
        wait_until(lambda: self.answers("/kept/"), "the workers to answer")
        wait_until(lambda: self.answers("/env/"), "the workers to answer")

    def write(self, text: str) -> None:
        # The routes file refers to the folders beside it.
        for name in ("pub", "apps"):
            link = self.config.parent / name
            if not link.exists():
                link.symlink_to(self.folder / name)
        self.config.write_text(text, encoding="utf-8")

    def answers(self, path: str) -> bool:
        status, _, _ = request(self.server.port, "GET", path)
        return status == 200

    @property
    def admin(self) -> str:
        return default_admin(self.config)

    def hup(self) -> None:
        assert self.server.pid is not None
        os.kill(self.server.pid, signal.SIGHUP)


class ReloadTests(RunningRouter):
    """
    SIGHUP re-reads the routes file; the table changes between two requests.
    """

    def test_reloads_under_load(self) -> None:
        """
        Routes added, changed and removed, a listener added and removed and
        a broken file, all while clients load every route: zero failed or
        wrong requests; an unchanged worker route keeps its process.
        """
        port = self.server.port
        kept = _pid_of(port, "/kept/")
        old_env: set[int] = set()
        wait_until(
            lambda: old_env.add(_pid_of(port, "/env/")) or len(old_env) == 2,
            "both workers to answer",
        )
        self.workers |= old_env | {kept}
        load = SteadyLoad(
            port,
            [
                get("/files/a.txt", b"static a\n"),
                get("/here/", prefix=True),
                get("/kept/", f"{kept} None".encode()),
                get("/env/", prefix=True),
                echo_post("/here/", 50_000),
                echo_post("/kept/", 300_000),
            ],
        ).start()
        self.addCleanup(load.stop)
        load.wait_for(50)

        # 1. Add a route and a listener, change the worker route.
        extra = free_port()
        self.write(_routes(port, extra, "two", "/new/: {static: pub}\n"))
        self.hup()
        wait_until(lambda: self.answers("/new/a.txt"), "the new route")
        self.assertTrue(listening(extra))
        status, _, body = request(extra, "GET", "/files/a.txt")
        self.assertEqual((status, body), (200, b"static a\n"))
        new_env = {_pid_of(port, "/env/") for _ in range(6)}
        self.workers |= new_env
        self.assertEqual(new_env & old_env, set())
        self.assertTrue(
            all(request(port, "GET", "/env/")[2].endswith(b" two") for _ in range(4))
        )
        wait_until(lambda: not any(map(alive, old_env)), "the old workers to exit")
        load.wait_for(50)

        # 2. A broken file changes nothing.
        self.config.write_text("listen: [\n", encoding="utf-8")
        self.hup()
        wait_until(
            lambda: "was not loaded; nothing changed" in self.server.log(),
            "the refusal in the log",
        )
        self.assertIn("routes.yaml:2: not valid YAML", self.server.log())
        self.assertTrue(self.answers("/new/a.txt"))
        load.wait_for(50)

        # 3. Remove the route and the listener again.
        self.write(_routes(port, None, "two"))
        self.hup()
        wait_until(lambda: not self.answers("/new/a.txt"), "the route to go")
        wait_until(lambda: not listening(extra), "the listener to close")
        load.wait_for(50)
        load.stop()

        self.assertEqual(load.failures, [])
        self.assertEqual(_pid_of(port, "/kept/"), kept)
        self.assertGreater(load.done, 200)

    def test_refused_in_place(self) -> None:
        """
        A change the running process cannot take (the thread pool's size)
        refuses the whole reload, naming what to do instead.
        """
        port = self.server.port
        self.write(
            _routes(port, None, "one", "/new/: {static: pub}\n")
            + "threads: {min: 1, max: 3}\n"
        )
        self.hup()
        wait_until(
            lambda: "need a new router process" in self.server.log(),
            "the refusal in the log",
        )
        self.assertIn("threads: the shared thread pool", self.server.log())
        self.assertFalse(self.answers("/new/a.txt"))

    def test_broken_worker(self) -> None:
        """
        A new worker route whose application does not load leaves the old
        table serving, and the log gives the worker's own error.
        """
        port = self.server.port
        self.write(
            _routes(
                port,
                None,
                "one",
                '/broken/: {wsgi: "no_such_module_here:app", path: apps, workers: 1}\n'
                "/new/: {static: pub}\n",
            )
        )
        self.hup()
        wait_until(
            lambda: "reload failed" in self.server.log(), "the failure in the log"
        )
        log = self.server.log()
        self.assertIn("exited before it was ready", log)
        self.assertIn("no_such_module_here", log)
        self.assertFalse(self.answers("/new/a.txt"))
        self.assertTrue(self.answers("/env/"))


class FailedChangeTests(RunningRouter):
    """
    A restart or an upgrade that cannot start its new processes leaves the
    old ones serving, and the command says why.
    """

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "txrouter.cli", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    def test_restart_with_broken_code(self) -> None:
        """
        New code that does not import: C{txrouter restart} exits 1 with the
        worker's own error, and the old workers go on answering.
        """
        port = self.server.port
        before: set[int] = set()
        wait_until(
            lambda: before.add(_pid_of(port, "/env/")) or len(before) == 2,
            "both workers to answer",
        )
        app = self.folder / "apps" / "reloadapp.py"
        good = app.read_text()
        app.write_text(good + "\nraise RuntimeError('deploy went wrong')\n")
        result = self.cli("restart", "/env/")
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertIn("txrouter restart failed", result.stderr)
        self.assertIn("deploy went wrong", result.stderr)
        self.assertLessEqual({_pid_of(port, "/env/") for _ in range(10)}, before)
        app.write_text(good)
        result = self.cli("restart", "/env/")
        self.assertEqual(result.returncode, 0, result.stderr)
        after = {_pid_of(port, "/env/") for _ in range(6)}
        self.workers |= before | after
        self.assertEqual(after & before, set())

    def test_upgrade_that_cannot_start(self) -> None:
        """
        A new router that refuses to start (its routes file is broken):
        C{txrouter upgrade} exits 1 with its reason, and the old router
        keeps serving and keeps its pidfile.
        """
        old = self.server.pid
        self.config.write_text("listen: tcp:notaport\nroutes: {}\n")
        result = self.cli("upgrade", "--admin", self.admin)
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertIn("the new router did not start", result.stderr)
        self.assertIn("notaport", result.stderr)
        self.assertTrue(self.answers("/files/a.txt"))
        self.assertEqual(int(self.server.pidfile.read_text()), old)
