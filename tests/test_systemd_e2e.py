"""
End to end: a real C{twistd txrouter} started by systemd socket activation
(C{systemd-socket-activate}, which binds the sockets, waits for the first
connection and then runs the router with them, as a C{.socket} unit does):
the first request, queued before the router ran, is answered; both sockets
(one by C{index=}, one by C{name=}) serve the routes; C{txrouter check}
accepts the file outside systemd; an upgrade is refused with the reason.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    APPS,
    REPO,
    free_port,
    kill_workers,
    program,
    request,
    wait_until,
)

pytestmark = pytest.mark.e2e

_BIN = Path(sys.executable).parent

_ROUTES = """\
listen:
  - systemd:domain=INET:index=0
  - systemd:domain=INET:name=second
routes:
  /: {{static: pub}}
  /app/: {{wsgi: "whoami:application", path: {apps}}}
  /worker/: {{wsgi: "whoami:application", path: {apps}, workers: 1}}
"""


def _bound(port: int) -> bool:
    """
    Whether something has bound 127.0.0.1:C{port} (without connecting).
    """
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


class SocketActivationTests(SynchronousTestCase):
    """
    A router run by C{systemd-socket-activate} on two sockets.
    """

    def setUp(self) -> None:
        self.activate = program("systemd-socket-activate", "systemd")
        self.dir = Path(tempfile.mkdtemp(prefix="txrouter-systemd-"))
        self.addCleanup(shutil.rmtree, self.dir, True)
        (self.dir / "pub").mkdir()
        (self.dir / "pub" / "index.html").write_text("static\n")
        self.config = self.dir / "routes.yaml"
        self.config.write_text(_ROUTES.format(apps=APPS))
        self.log = self.dir / "twistd.log"
        self.first, self.second = free_port(), free_port()
        self.workers: set[int] = set()
        self.process = subprocess.Popen(
            [
                self.activate,
                "--listen",
                f"127.0.0.1:{self.first}",
                "--listen",
                f"127.0.0.1:{self.second}",
                # Twisted finds sockets by LISTEN_FDNAMES, which systemd
                # always sets and this tool only when asked.
                "--fdname=first:second",
                "--setenv=PYTHONPATH",
                str(_BIN / "twistd"),
                "--nodaemon",
                "--pidfile=",
                "--logfile",
                str(self.log),
                "txrouter",
                "--config",
                str(self.config),
            ],
            cwd=self.dir,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(self.stop)
        # The sockets listen before the router runs (a probe connection
        # would start it: see whether the ports are taken instead).
        wait_until(lambda: _bound(self.first) and _bound(self.second), "the sockets")

    def stop(self) -> None:
        """
        SIGTERM the router (the process the tool became) by its PID, wait
        for it, and kill any worker left.
        """
        with contextlib.ExitStack() as steps:
            steps.callback(kill_workers, self.workers)
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)

    def router_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"

    def test_first_request_and_routes(self) -> None:
        """
        The first request, sent before the router runs, is answered; the
        router is the process systemd started; both sockets serve every
        route: static files, an app in the router, one in a worker.
        """
        status, _, body = request(self.first, "GET", "/", timeout=60)
        self.assertEqual((status, body), (200, b"static\n"), self.router_log())
        for port in (self.first, self.second):
            status, _, body = request(port, "GET", "/app/")
            self.assertEqual(status, 200)
            self.assertEqual(json.loads(body)["pid"], self.process.pid)
            wait_until(
                lambda port=port: request(port, "GET", "/worker/")[0] == 200,
                "the worker",
            )
            facts = json.loads(request(port, "GET", "/worker/")[2])
            self.workers.add(facts["pid"])
            self.assertNotEqual(facts["pid"], self.process.pid)
            self.assertEqual(facts["remote_addr"], "127.0.0.1")

    def test_check_outside_systemd(self) -> None:
        """
        C{txrouter check} accepts the file in a process systemd did not
        start (it looks up no socket).
        """
        result = subprocess.run(
            [str(_BIN / "txrouter"), "check", str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("OK (2 listener(s)", result.stdout)

    def test_upgrade_refused(self) -> None:
        """
        An upgrade is refused, saying to restart the service, and the
        router goes on serving.
        """
        self.assertEqual(request(self.first, "GET", "/", timeout=60)[0], 200)
        result = subprocess.run(
            [str(_BIN / "txrouter"), "upgrade", "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        said = result.stdout + result.stderr
        self.assertIn("systemctl restart", said)
        self.assertIn("systemd:domain=INET:index=0", said)
        self.assertEqual(request(self.second, "GET", "/")[0], 200)
        self.assertIsNone(self.process.poll())
