"""
End to end: Python C{logging} records of applications reach a daemonized
router's log, in process and in workers, whether the application logs to
C{sys.stderr} or has no handler at all.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support import Txrouter, prepared_sites, request, stop_daemon, wait_until

pytestmark = pytest.mark.e2e

#: An app with no logging configuration: its records have no handler.
_APP = """
import logging

log = logging.getLogger("txrouter_test_app")


def application(environ, start_response):
    log.warning("warned about %s", environ["PATH_INFO"])
    log.info("an info line nobody asked for")
    try:
        raise ValueError("handled badly")
    except ValueError:
        log.exception("failed at %s", environ["PATH_INFO"])
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"""


class LoggingTests(SynchronousTestCase):
    """
    A router with the blog (which logs to C{sys.stderr}) in process and an
    app without logging configuration both in process and in a worker.
    """

    def setUp(self) -> None:
        sites = prepared_sites()
        self.folder = Path(tempfile.mkdtemp(prefix="txrouter-logging-"))
        (self.folder / "logapp.py").write_text(_APP)
        self.server = Txrouter(
            f"""
listen: tcp:{{port}}:interface=127.0.0.1
routes:
  /: {{django: {sites / "blog"}, workers: 0}}
  /here/: {{wsgi: "logapp:application", path: {self.folder}}}
  /there/: {{wsgi: "logapp:application", path: {self.folder}, workers: 1}}
"""
        )
        self.addCleanup(stop_daemon, self.server, (), self.folder)
        self.server.start()
        port = self.server.port
        wait_until(lambda: request(port, "GET", "/there/")[0] == 200, "the worker")

    def test_records_in_log(self) -> None:
        """
        Django's error for a failing view (the blog logs to stderr) and an
        app's warnings and exceptions (no handler at all) are in the log
        with their tracebacks; records below WARNING are not.
        """
        port = self.server.port
        self.assertEqual(request(port, "GET", "/boom/")[0], 500)
        self.assertEqual(request(port, "GET", "/here/x")[0], 200)
        self.assertEqual(request(port, "GET", "/there/y")[0], 200)
        wait_until(lambda: "failed at /y" in self.server.log(), "the worker's record")
        log = self.server.log()
        self.assertIn("Internal Server Error: /boom/", log)
        self.assertIn('raise RuntimeError("boom")', log)
        for path in ("/x", "/y"):
            self.assertIn(f"warned about {path}", log)
            self.assertIn(f"failed at {path}", log)
        self.assertIn("ValueError: handled badly", log)
        self.assertNotIn("an info line nobody asked for", log)
