"""
End to end: a daemonized C{twistd txrouter} writes its access log as JSON
lines naming the route and who served each request (the worker's real
PID, the upstream's URL), reopens the file on SIGUSR1 after logrotate's
rename without losing or splitting a line, and takes a new format on
reload.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support import Txrouter, request, stop_daemon, wait_until
from tests.upstreams import RecordingUpstream

pytestmark = pytest.mark.e2e

#: Answers with the PID of the process it runs in.
_APP = """
import os


def application(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""


def lines_of(path: Path) -> list[str]:
    """
    The lines of a log file so far (none when it does not exist).
    """
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


class _Scratch:
    """
    A folder with the PID app and a static file, and the processes a test
    starts, all cleaned up after it.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="txrouter-accesslog-"))
        (self.folder / "pidapp.py").write_text(_APP)
        (self.folder / "files").mkdir()
        (self.folder / "files" / "a.txt").write_text("hello\n")
        self.workers: set[int] = set()
        self.server: Txrouter | None = None
        self.upstream = RecordingUpstream().start()
        test.addCleanup(
            lambda: stop_daemon(
                self.server, self.workers, self.folder, self.upstream.stop
            )
        )


class JsonAccessLogTests(SynchronousTestCase):
    """
    A daemonized router with every kind of route, logging JSON lines.
    """

    def setUp(self) -> None:
        scratch = self.scratch = _Scratch(self)
        folder = scratch.folder
        scratch.server = self.server = Txrouter(
            f"""
listen: tcp:{{port}}:interface=127.0.0.1
access_log: access.log
access_log_format: json
routes:
  /: {{wsgi: "pidapp:application", path: {folder}}}
  /there/: {{wsgi: "pidapp:application", path: {folder}, workers: 1}}
  /api/: {{proxy: "{scratch.upstream.url}/"}}
  /files/: {{static: {folder / "files"}}}
  /old/: {{redirect: /new/, status: 301}}
"""
        )
        self.server.start()
        self.log = self.server.dir / "access.log"
        wait_until(lambda: self.get("/there/")[0] == 200, "the worker")
        self.worker_pid = int(self.get("/there/")[1])
        scratch.workers.add(self.worker_pid)

    def get(self, path: str) -> tuple[int, bytes]:
        status, _, body = request(self.server.port, "GET", path)
        return status, body

    def logged(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in lines_of(self.log)]

    def test_who_served(self) -> None:
        """
        Each line names the route and who served the request: the router
        process for an in-process app, the worker by its PID, the upstream
        by its URL, the static files, the redirect.
        """
        self.assertNotEqual(self.worker_pid, self.server.pid)
        before = len(lines_of(self.log))
        paths = ["/x?n=1", "/there/y", "/api/z", "/files/a.txt", "/old/w"]
        answers = [self.get(path) for path in paths]
        self.assertEqual([status for status, _ in answers], [200, 200, 200, 200, 301])
        self.assertEqual(int(answers[0][1]), self.server.pid)
        wait_until(lambda: len(lines_of(self.log)) == before + 5, "the lines")
        lines = self.logged()[before:]
        self.assertEqual([line["path"] for line in lines], paths)
        self.assertEqual(
            [
                (line["route"]["prefix"], line["served_by"], line["worker_pid"])
                for line in lines
            ],
            [
                ("/", "in process", None),
                ("/there/", "worker", self.worker_pid),
                ("/api/", "upstream", None),
                ("/files/", "static", None),
                ("/old/", "redirect", None),
            ],
        )
        self.assertEqual(lines[2]["upstream"], f"{self.scratch.upstream.url}/")
        for line in lines:
            self.assertEqual(line["client"], "127.0.0.1")
            self.assertEqual(line["route"]["host"], "")
            self.assertIsInstance(line["duration"], float)

    def test_reopen_on_sigusr1(self) -> None:
        """
        logrotate's way: while a client sends requests one after another,
        the file is renamed and the router gets SIGUSR1. Every request is
        logged exactly once, each line whole and valid JSON; the renamed
        file holds the first ones, the new file the rest. twistd goes on
        rotating its own log on SIGUSR1, and the router says it reopened.
        """
        sent: list[str] = []
        stop = threading.Event()
        failures: list[BaseException] = []

        def client() -> None:
            try:
                while not stop.is_set():
                    path = f"/files/a.txt?n={len(sent)}"
                    status, _ = self.get(path)
                    if status != 200:
                        raise AssertionError(f"{path}: {status}")
                    sent.append(path)
            except BaseException as e:
                failures.append(e)

        traffic = threading.Thread(target=client, daemon=True)
        traffic.start()
        self.addCleanup(traffic.join, 30)
        wait_until(lambda: len(sent) >= 20, "traffic before the rename")
        rotated = self.log.with_name("access.log.1")
        self.log.rename(rotated)
        assert self.server.pid is not None
        os.kill(self.server.pid, signal.SIGUSR1)
        wait_until(
            lambda: "SIGUSR1: reopened the access log" in self.server.log(),
            "the router to say it reopened the file",
        )
        count = len(sent)
        wait_until(lambda: len(sent) >= count + 20, "traffic after the reopen")
        stop.set()
        traffic.join(30)
        self.assertEqual(failures, [])
        wait_until(
            lambda: len(lines_of(rotated)) + len(lines_of(self.log)) >= len(sent),
            "every request logged",
        )
        old = [json.loads(line) for line in lines_of(rotated)]
        new = [json.loads(line) for line in lines_of(self.log)]
        paths = [line["path"] for line in old + new]
        ours = [path for path in paths if path.startswith("/files/a.txt?n=")]
        self.assertEqual(ours, sent)  # each once, in order, none split
        self.assertTrue(old)
        self.assertTrue(new)
        self.assertTrue(old[-1]["time"] <= new[0]["time"])
        twistd_rotated = self.server.logfile.with_name("twistd.log.1")
        self.assertTrue(twistd_rotated.exists(), "twistd rotated its own log")


class FormatReloadTests(SynchronousTestCase):
    """
    C{access_log_format} changes on reload.
    """

    def test_reload(self) -> None:
        """
        A router logging the combined format logs JSON after a reload of a
        file that says so, into the same file.
        """
        scratch = _Scratch(self)
        routes = f"""
listen: tcp:{{port}}:interface=127.0.0.1
access_log: access.log
access_log_format: FORMAT
routes:
  /files/: {{static: {scratch.folder / "files"}}}
"""
        server = scratch.server = Txrouter(routes.replace("FORMAT", "combined"))
        server.start()
        log = server.dir / "access.log"
        self.assertEqual(request(server.port, "GET", "/files/a.txt")[0], 200)
        wait_until(lambda: len(lines_of(log)) == 1, "the combined line")
        text = server.config.read_text().replace("format: combined", "format: json")
        server.config.write_text(text)
        assert server.pid is not None
        os.kill(server.pid, signal.SIGHUP)
        wait_until(
            lambda: "access log format: json (was combined)" in server.log(),
            "the reload",
        )
        self.assertEqual(request(server.port, "GET", "/files/a.txt?n=2")[0], 200)
        wait_until(lambda: len(lines_of(log)) == 2, "the JSON line")
        first, second = lines_of(log)
        self.assertRegex(first, r'^"127\.0\.0\.1" - - \[.*\] "GET /files/a\.txt HTTP')
        self.assertEqual(json.loads(second)["path"], "/files/a.txt?n=2")
