"""
End to end: every operation on a running router, under load.

A real, daemonized C{twistd txrouter} serves the example blog in process,
the example wiki in two workers, a WSGI app in workers whose code the test
changes, static files, a redirect and a proxy to a real upstream. Four
keep-alive clients load every route kind, POST bodies checked by hash,
while the test runs, with the C{txrouter} command line, 10 reloads with
changes (routes added, removed and changed, a listener added and removed),
one broken file, 3 per-route restarts after code changes and 2 upgrades.
Not one request may fail or get a wrong answer, and no process or socket
may be left when the router stops.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.load import Check, SteadyLoad, echo_post, get
from tests.support import (
    REPO,
    Txrouter,
    alive,
    free_port,
    listening,
    prepared_sites,
    request,
    stop_daemon,
    wait_until,
)
from tests.upstreams import RecordingUpstream

pytestmark = pytest.mark.e2e

#: The app whose code the restarts change: it answers with its version,
#: and takes a moment to import, as a real project does.
_APP = """
import time

VERSION = {version!r}
time.sleep(0.3)


def application(environ, start_response):
    body = VERSION.encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""


def _txrouter(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "txrouter.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def _descendants(*folders: Path) -> set[int]:
    """
    Every live txrouter worker and twistd process whose command line names
    one of C{folders} (the test's own: never another test's processes).
    """
    marks = [str(folder).encode() for folder in folders]
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            line = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = any(mark in part for part in line for mark in marks)
        if ours and (
            b"txrouter.worker" in line or any(b"twistd" in p for p in line[:2])
        ):
            found.add(int(entry.name))
    return found


class OperationsUnderLoadTests(SynchronousTestCase):
    """
    Reloads, restarts and upgrades with zero failed requests.
    """

    def setUp(self) -> None:
        sites = prepared_sites()
        self.folder = Path(tempfile.mkdtemp(prefix="txrouter-ops-"))
        self.runtime = self.folder / "run"
        (self.folder / "pub").mkdir()
        (self.folder / "pub" / "a.txt").write_bytes(b"static a\n")
        (self.folder / "apps").mkdir()
        self.set_version("v1")
        self.upstream = RecordingUpstream().start()
        self.server = Txrouter("")
        self.before = _descendants(self.folder, self.server.dir)
        self.extra_port = free_port()
        self.sites = sites
        self.addCleanup(
            lambda: stop_daemon(
                self.server,
                _descendants(self.folder, self.server.dir) - self.before,
                self.folder,
                self.upstream.stop,
            )
        )

    def set_version(self, version: str) -> None:
        (self.folder / "apps" / "deployapp.py").write_text(_APP.format(version=version))

    def routes(self, step: int, extra_listener: bool = False) -> str:
        """
        The routes file of step C{step}: a few routes differ from one step
        to the next.
        """
        port = self.server.port
        listen = [f"tcp:{port}:interface=127.0.0.1"]
        if extra_listener:
            listen.append(f"tcp:{self.extra_port}:interface=127.0.0.1")
        text = f"""
            listen: [{", ".join(listen)}]
            drain_timeout: 10
            runtime_dir: {self.runtime}
            routes:
              /: {{django: {self.sites / "blog"}, workers: 0}}
              /wiki/: {{django: {self.sites / "wiki"}, workers: 2}}
              /app/:
                wsgi: "deployapp:application"
                path: {self.folder / "apps"}
                workers: 2
              /files/: {{static: {self.folder / "pub"}}}
              /up/: {{proxy: "{self.upstream.url}/base/"}}
              /old/: {{redirect: /files/step{step}/}}
            """
        text = textwrap.dedent(text)
        if step % 2:
            text += f"  /extra{step}/: {{static: {self.folder / 'pub'}}}\n"
        if step % 3 == 0:
            text += (
                f'  /w{step}/: {{wsgi: "deployapp:application", '
                f"path: {self.folder / 'apps'}, workers: 1}}\n"
            )
        return text

    def write(self, text: str) -> None:
        self.server.config.write_text(text, encoding="utf-8")

    def versions(self, count: int = 12) -> set[bytes]:
        return {request(self.server.port, "GET", "/app/")[2] for _ in range(count)}

    def test_everything_under_load(self) -> None:
        """
        10 reloads, a broken file, 3 restarts and 2 upgrades, while four
        clients load every route kind: no failed or wrong request, the
        changes are seen, and nothing is left behind at the end.
        """
        config = str(self.server.config)
        self.write(self.routes(0))
        self.server.start()
        port = self.server.port
        wait_until(lambda: request(port, "GET", "/wiki/hello/")[0] == 200, "wiki")
        wait_until(lambda: request(port, "GET", "/app/")[0] == 200, "the app")

        versions = [b"v1"]

        def app_version(status: int, body: bytes) -> str | None:
            if status != 200 or body not in versions:
                return f"{status} {body[:80]!r} (versions so far {versions})"
            return None

        def upstream_get(status: int, body: bytes) -> str | None:
            return None if status == 200 and b'"/base/x"' in body else f"{status}"

        load = SteadyLoad(
            port,
            [
                get("/hello/", b"hello from blog", prefix=True),
                get("/wiki/hello/", b"hello from wiki", prefix=True),
                get("/files/a.txt", b"static a\n"),
                Check("GET", "/app/", None, app_version),
                Check("GET", "/up/x", None, upstream_get),
                echo_post("/echo/", 40_000),
                echo_post("/wiki/echo/", 200_000),
                echo_post("/up/echo", 60_000),
            ],
        ).start()
        self.addCleanup(load.stop)
        load.wait_for(100)

        # 10 reloads with changes, a listener added at 3 and removed at 6.
        for step in range(1, 11):
            self.write(self.routes(step, extra_listener=3 <= step < 6))
            result = _txrouter("reload", "--config", config)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn(f"generation {step + 1} serving", result.stdout)
            status, headers, _ = request(port, "GET", "/old/x")
            self.assertEqual(
                (status, headers["location"].endswith(f"/files/step{step}/x")),
                (302, True),
            )
            self.assertEqual(
                request(port, "GET", f"/extra{step}/a.txt")[0],
                200 if step % 2 else 404,
            )
            self.assertEqual(listening(self.extra_port), 3 <= step < 6)
            load.wait_for(30)

        # A broken file changes nothing, and says why.
        self.write("listen: [\n")
        result = _txrouter("reload", "--config", config)
        self.assertEqual(result.returncode, 1)
        self.assertIn("routes.yaml:2: not valid YAML", result.stderr)
        _, headers, _ = request(port, "GET", "/old/x")
        self.assertTrue(headers["location"].endswith("/files/step10/x"))
        self.write(self.routes(10))
        load.wait_for(30)

        # 3 redeploys of /app/: new code, served only once its workers answer.
        for number in (2, 3, 4):
            version = f"v{number}".encode()
            versions.append(version)
            self.set_version(version.decode())
            self.assertEqual(self.versions(), {versions[-2]})
            result = _txrouter("restart", "/app/", "--config", config)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(self.versions(), {version})
            load.wait_for(30)

        # 2 upgrades: a new router process each time, on the same port.
        for _ in range(2):
            old = self.server.pid
            assert old is not None
            result = _txrouter("upgrade", "--config", config)
            self.assertEqual(result.returncode, 0, result.stderr)
            new = int(self.server.pidfile.read_text())
            self.assertNotEqual(new, old)
            self.server.pid = new
            wait_until(lambda: not alive(old), "the old router to exit")  # noqa: B023
            self.assertEqual(self.versions(), {versions[-1]})
            load.wait_for(60)

        load.stop()
        self.assertEqual(load.failures, [])
        self.assertGreater(load.done, 800)
        status = _txrouter("status", "--config", config)
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertIn("/app/", status.stdout)
        # Kept for the closing note: how many requests, how many resent.
        print(f"\nload: {load.done} requests, {load.resent} resent", file=sys.stderr)

        self.server.stop()
        wait_until(
            lambda: not (_descendants(self.folder, self.server.dir) - self.before),
            "every process to exit",
        )
        self.assertEqual(list(self.runtime.glob("*.sock")), [])
        self.assertFalse(self.server.pidfile.exists())
