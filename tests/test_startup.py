"""
End to end: C{twistd txrouter} refuses to start on bad input with a clear
message and no traceback, and writes the access log it is asked for.
"""

from __future__ import annotations

import re
import socket

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support import APPS, Txrouter, prepared_sites, request

pytestmark = pytest.mark.e2e


class RefusalTests(SynchronousTestCase):
    """
    Problems found before anything listens end twistd with status 1.
    """

    def refuse(self, routes: str) -> str:
        result = Txrouter(routes).run_to_failure()
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        return result.stderr

    def test_bad_config(self) -> None:
        """
        Every problem of a bad file is listed as file:line: where: what.
        """
        stderr = self.refuse(
            "listen: tcp:{port}:interface=127.0.0.1\n"
            "routes:\n"
            "  /a/: {static: /nonexistent/folder}\n"
            "  /b/: {static: /tmp, cache: -1}\n"
            "  /c/: {frobnicate: yes}\n"
        )
        self.assertRegex(
            stderr, r"routes\.yaml:3: routes\['/a/'\]\.static: .*not a folder"
        )
        self.assertRegex(
            stderr, r"routes\.yaml:4: routes\['/b/'\]\.cache: must be >= 0"
        )
        self.assertRegex(stderr, r"routes\.yaml:5: routes\['/c/'\]: no route kind")

    def test_missing_module(self) -> None:
        """
        A WSGI module that does not exist is named, with the route's line.
        """
        stderr = self.refuse(
            "listen: tcp:{port}:interface=127.0.0.1\n"
            "routes:\n"
            "  /: {wsgi: 'nosuchmodule:application'}\n"
        )
        self.assertRegex(
            stderr, r"routes\.yaml:3: routes\['/'\]: no module named 'nosuchmodule'"
        )

    def test_app_import_error(self) -> None:
        """
        An exception inside the application's module is reported as itself.
        """
        server = Txrouter("")
        (server.dir / "broken.py").write_text(
            "raise ValueError('settings are wrong')\n"
        )
        server.config.write_text(
            f"listen: tcp:{server.port}:interface=127.0.0.1\n"
            "routes:\n"
            f"  /: {{wsgi: 'broken:application', path: {server.dir}}}\n"
        )
        result = server.run_to_failure()
        self.assertEqual(result.returncode, 1)
        self.assertIn("ValueError: settings are wrong", result.stderr)
        self.assertIn("broken.py", result.stderr)

    def test_port_in_use(self) -> None:
        """
        A port that cannot be bound stops the start with a non-zero status.
        """
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            result = Txrouter(
                f"listen: tcp:{port}:interface=127.0.0.1\n"
                f"routes:\n  /: {{wsgi: 'probe:application', path: {APPS}}}\n"
            ).run_to_failure()
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("Address already in use", result.stderr)


class AccessLogTests(SynchronousTestCase):
    """
    C{access_log:} writes one combined-format line per request.
    """

    def test_combined_format(self) -> None:
        """
        A request is logged with client, request line, status, size, referer
        and user agent.
        """
        server = Txrouter(
            "listen: tcp:{port}:interface=127.0.0.1\n"
            "access_log: access.log\n"
            f"routes:\n  /: {{static: {prepared_sites() / 'files'}}}\n"
        ).start()
        try:
            request(server.port, "GET", "/1k.txt", headers={"User-Agent": "probe/1"})
        finally:
            server.stop()
        line = (server.dir / "access.log").read_text().strip()
        self.assertRegex(
            line,
            r'^"?127\.0\.0\.1"? - - \[[^\]]+\] "GET /1k\.txt HTTP/1\.1" 200 1024 '
            r'"-" "probe/1"$',
        )
        self.assertTrue(re.search(r"\[\d\d/\w{3}/\d{4}:", line))
