"""
End to end: a real, daemonized C{twistd txrouter} answers its health
checks, on the admin endpoint (C{/healthz}, C{/readyz}) and on public
C{health:} routes, from the route table it serves:

  - ready once its workers answer; 503 naming the route while none of a
    worker route's workers is ready (killed by PID, their restart held
    back by the test); ready again once they are back; after a reload
    that adds a proxy route, 503 naming it once its upstream is marked
    down;
  - after SIGTERM with a slow request in flight: 503 ("shutting down") on
    both while the public port still accepts (the route's C{stop_delay}),
    then the port closes and the admin endpoint says "draining" until the
    request is answered, and the process exits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    APPS,
    Txrouter,
    alive,
    free_port,
    listening,
    request,
    stop_daemon,
    wait_until,
)
from txrouter.admin import unix_path_of
from txrouter.adminclient import admin_endpoint, call

pytestmark = pytest.mark.e2e

#: A WSGI app whose import waits while the C{hold} file exists, so that a
#: restarted worker stays unready until the test lets it go.
_HELD_APP = """
import time
from pathlib import Path

_HOLD = Path({hold!r})
_deadline = time.monotonic() + 60
while _HOLD.exists() and time.monotonic() < _deadline:
    time.sleep(0.02)


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", "3")])
    return [b"app"]
"""


def _json_of(answer: tuple[int, dict[str, str], bytes]) -> tuple[int, Any]:
    status, _, body = answer
    return status, json.loads(body)


class WorkerReadinessTests(SynchronousTestCase):
    """
    Readiness follows the workers and upstreams of the table served.
    """

    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="txrouter-health-"))
        self.hold = self.folder / "hold"
        (self.folder / "apps").mkdir()
        (self.folder / "pub").mkdir()
        (self.folder / "apps" / "heldapp.py").write_text(
            _HELD_APP.format(hold=str(self.hold))
        )
        self.routes = textwrap.dedent(
            f"""
            listen: tcp:{{port}}:interface=127.0.0.1
            drain_timeout: 5
            routes:
              /app/:
                wsgi: "heldapp:application"
                path: {self.folder / "apps"}
                workers: 2
              /files/: {{static: {self.folder / "pub"}}}
              /_health/: {{health: ready}}
              /_live/: {{health: live}}
            """
        )
        self.server = Txrouter(self.routes)
        self.pids: set[int] = set()
        self.addCleanup(lambda: stop_daemon(self.server, self.pids, self.folder))

    def admin(self, path: str, method: str = "GET") -> tuple[int, Any]:
        return call(admin_endpoint(self.server.config), method, path)

    def worker_pids(self) -> list[int]:
        _, status = self.admin("/status")
        [app] = [r for r in status["routes"] if r["prefix"] == "/app/"]
        pids = [w["pid"] for w in app["workers"] if w["pid"] is not None]
        self.pids.update(pids)
        return pids

    def test_workers_and_upstreams(self) -> None:
        """
        200 once the workers answer; 503 naming the route while none does;
        200 again once they are back; after a reload, 503 naming a new
        proxy route whose upstream is marked down.
        """
        self.server.start()
        port = self.server.port
        wait_until(lambda: self.admin("/readyz")[0] == 200, "the workers")
        self.assertEqual(
            self.admin("/readyz"),
            (200, {"status": "ready", "generation": 1, "unready": []}),
        )
        status, live = self.admin("/healthz")
        self.assertEqual(
            (status, live["status"], live["pid"]), (200, "ok", self.server.pid)
        )
        status, headers, body = request(port, "GET", "/_health/")
        self.assertEqual((status, body), (200, b'{\n  "status": "ready"\n}\n'))
        self.assertEqual(headers["cache-control"], "no-store")
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(request(port, "HEAD", "/_health/")[::2], (200, b""))
        status, headers, _ = request(port, "POST", "/_health/", b"x")
        self.assertEqual((status, headers["allow"]), (405, "GET, HEAD"))
        self.assertEqual(
            _json_of(request(port, "GET", "/_live/")), (200, {"status": "ok"})
        )

        # Both workers killed; their restarts wait for the hold file.
        old = self.worker_pids()
        self.assertEqual(len(old), 2)
        self.hold.touch()
        for pid in old:
            os.kill(pid, signal.SIGKILL)

        def none_ready() -> bool:
            status, ready = self.admin("/readyz")
            return status == 503 and [u["why"] for u in ready["unready"]] == [
                "0 of 2 workers ready"
            ]

        wait_until(none_ready, "/readyz to say no worker is ready")
        _, ready = self.admin("/readyz")
        [unready] = ready["unready"]
        self.assertEqual(
            (ready["reason"], unready["host"], unready["prefix"], unready["kind"]),
            ("1 route cannot serve: /app/ (0 of 2 workers ready)", "", "/app/", "wsgi"),
        )
        self.assertEqual(unready["where"], f"{self.server.config}:5: routes['/app/']")
        self.assertEqual(
            _json_of(request(port, "GET", "/_health/")),
            (
                503,
                {
                    "status": "not ready",
                    "reason": "1 route cannot serve",
                    "unready": ["/app/"],
                },
            ),
        )
        self.assertEqual(request(port, "GET", "/app/")[0], 503)
        self.assertEqual(self.admin("/healthz")[0], 200)

        self.hold.unlink()
        wait_until(lambda: self.admin("/readyz")[0] == 200, "the workers to be back")
        new = self.worker_pids()
        self.assertEqual(len(new), 2)
        self.assertFalse(set(new) & set(old))
        self.assertFalse(any(alive(pid) for pid in old))
        self.assertEqual(request(port, "GET", "/app/")[2], b"app")

        # A reload: readiness is the new table's.
        dead = f"http://127.0.0.1:{free_port()}/"
        self.server.config.write_text(
            self.routes.replace("{port}", str(port))
            + f'  /dead/: {{proxy: "{dead}", connect_timeout: 5}}\n'
        )
        status, outcome = self.admin("/reload", "POST")
        self.assertEqual(status, 200, outcome)
        self.assertEqual(self.admin("/readyz")[1]["generation"], 2)
        self.assertEqual(self.admin("/readyz")[0], 200)
        self.assertEqual(request(port, "GET", "/dead/x")[0], 502)
        status, ready = self.admin("/readyz")
        [unready] = ready["unready"]
        self.assertEqual(
            (status, unready["prefix"], unready["kind"]), (503, "/dead/", "proxy")
        )
        self.assertRegex(
            unready["why"], r"^the upstream is marked down, for \d+\.\ds more$"
        )


class ShutdownReadinessTests(SynchronousTestCase):
    """
    From SIGTERM on the router is not ready, before its port closes and
    while its requests drain.
    """

    def test_sigterm(self) -> None:
        """
        With a slow request in flight, SIGTERM makes C{/readyz} and the
        public C{/_health/} answer 503 "shutting down" while the port
        still accepts (and serves); once it closes, the admin endpoint says
        "draining" until the request is answered; then the process exits.
        """
        gate = Path(tempfile.mkdtemp(prefix="txrouter-health-gate-"))
        self.addCleanup(shutil.rmtree, gate, ignore_errors=True)
        server = Txrouter(
            textwrap.dedent(
                f"""
                listen: tcp:{{port}}:interface=127.0.0.1
                drain_timeout: 30
                routes:
                  /probe/: {{wsgi: "probe:application", path: {APPS}}}
                  /_health/: {{health: ready, stop_delay: 8}}
                """
            )
        )
        self.addCleanup(server.stop)
        server.start()
        port = server.port
        admin = admin_endpoint(server.config)
        admin_socket = Path(str(unix_path_of(admin)))
        self.assertEqual(call(admin, "GET", "/readyz")[0], 200)
        self.assertEqual(request(port, "GET", "/_health/")[0], 200)

        answers: list[tuple[int, bytes]] = []

        def slow() -> None:
            status, _, body = request(port, "GET", f"/probe/gate?gate={gate}")
            answers.append((status, body))

        client = threading.Thread(target=slow)
        client.start()
        self.addCleanup(client.join, 30)
        self.addCleanup((gate / "release").touch)
        wait_until((gate / "started").exists, "the slow request to start")

        server.terminate()
        wait_until(
            lambda: request(port, "GET", "/_health/")[0] == 503,
            "the public health check to answer 503",
        )
        self.assertEqual(
            _json_of(request(port, "GET", "/_health/")),
            (503, {"status": "not ready", "reason": "shutting down"}),
        )
        status, ready = call(admin, "GET", "/readyz")
        self.assertEqual(
            (status, ready["status"], ready["reason"]),
            (503, "not ready", "shutting down"),
        )
        self.assertEqual(call(admin, "GET", "/healthz")[0], 200)
        self.assertEqual(request(port, "GET", "/probe/environ")[0], 200)

        wait_until(
            lambda: not listening(port), "the port to close after the stop delay"
        )
        self.assertTrue(server.alive(), "exited with a request in flight")
        self.assertEqual(answers, [])
        status, ready = call(admin, "GET", "/readyz")
        self.assertEqual((status, ready["reason"]), (503, "draining"))
        status, outcome = call(admin, "POST", "/reload")
        self.assertEqual(
            (status, outcome["message"]),
            (409, "reload refused: the router is stopping (draining)"),
        )

        (gate / "release").touch()
        client.join(30)
        self.assertEqual(answers, [(200, b"released")])
        wait_until(lambda: not server.alive(), "the server to exit")
        self.assertFalse(server.pidfile.exists())
        self.assertFalse(admin_socket.exists())
