"""
End to end: bulkheads and timeouts on a daemonized router. A hung
in-process application fills its own slots and waiting line, gets its
clients 504 and 503, and leaves the shared thread pool to the other
application; a worker whose requests keep timing out is restarted.
"""

from __future__ import annotations

import tempfile
import threading
from collections import Counter
from pathlib import Path

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support import Txrouter, request, stop_daemon, wait_until

pytestmark = pytest.mark.e2e

#: Hangs on /hang until a file named "release" exists beside it; answers
#: with its process ID.
_APP = '''
"""A WSGI application that can hang."""

import os
import time

RELEASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "release")


def application(environ, start_response):
    if environ["PATH_INFO"] == "/hang":
        # The application's own hang (the test waits on the router's log
        # and statuses, never on this): it polls, as a file is what both
        # the router's threads and a worker process can see.
        while not os.path.exists(RELEASE):
            time.sleep(0.02)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


def _statuses(port: int, path: str, count: int) -> list[int]:
    """
    Send C{count} requests at once; their statuses, in no order.
    """
    found: list[int] = []

    def one() -> None:
        found.append(request(port, "GET", path, timeout=60)[0])

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


class BulkheadTests(SynchronousTestCase):
    """
    Two in-process applications on a pool of 4 threads, and one in a
    worker, each with a 2 s timeout.
    """

    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="txrouter-bulkhead-"))
        app = self.folder / "app"
        app.mkdir()
        (app / "hanging.py").write_text(_APP, encoding="utf-8")
        self.release = app / "release"
        self.server = Txrouter(
            f"""
listen: tcp:{{port}}:interface=127.0.0.1
threads: {{min: 1, max: 4}}
drain_timeout: 2
routes:
  /slow/: {{wsgi: "hanging:application", path: {app}, timeout: 2, queue: 2}}
  /ok/: {{wsgi: "hanging:application", path: {app}}}
  /w/: {{wsgi: "hanging:application", path: {app}, workers: 1, timeout: 2}}
"""
        )
        self.addCleanup(
            stop_daemon, self.server, (), self.folder, lambda: self.release.touch()
        )
        self.server.start()

    def test_hung_app_keeps_to_its_share(self) -> None:
        """
        Five requests to a hung application on a pool of 4 threads: 2 take
        its 2 slots (half the pool) and get 504 at the timeout, 2 wait and
        get 503 when their wait ends, 1 finds the line full (503 at once).
        Meanwhile, and while the abandoned threads still run, the other
        application answers; once they end, the slots serve again.
        """
        port = self.server.port
        done: list[list[int]] = []
        hung = threading.Thread(
            target=lambda: done.append(_statuses(port, "/slow/hang", 5))
        )
        hung.start()
        wait_until(lambda: "refused so far (503)" in self.server.log(), "the refusal")
        self.assertEqual(request(port, "GET", "/ok/fine")[0], 200)
        hung.join()
        self.assertEqual(Counter(done[0]), {504: 2, 503: 3})
        self.assertIn("did not answer in 2s (504)", self.server.log())
        # The two threads are still stuck: the slots are still taken.
        self.assertEqual(request(port, "GET", "/slow/fine")[0], 503)
        self.assertEqual(request(port, "GET", "/ok/fine")[0], 200)
        self.release.touch()
        wait_until(
            lambda: self.server.log().count("thread finished after its 504") == 2,
            "both threads to finish",
        )
        self.assertEqual(request(port, "GET", "/slow/fine")[0], 200)

    def test_stuck_worker_restarted(self) -> None:
        """
        A worker that leaves three requests in a row unanswered in time is
        restarted; a new process then serves the route.
        """
        port = self.server.port
        wait_until(lambda: request(port, "GET", "/w/fine")[0] == 200, "the worker")
        first = request(port, "GET", "/w/fine")[2]
        for _ in range(3):
            self.assertEqual(request(port, "GET", "/w/hang")[0], 504)
        wait_until(
            lambda: "unanswered within the route's timeout" in self.server.log(),
            "the restart",
        )

        def new_worker() -> bool:
            status, _, pid = request(port, "GET", "/w/fine")
            return status == 200 and pid != first

        wait_until(new_worker, "a new worker", timeout=30)
