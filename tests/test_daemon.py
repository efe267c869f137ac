"""
End to end: a real, daemonized C{twistd txrouter} serving the example sites
and a probe application, driven over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import socket
import tempfile
import threading
from pathlib import Path
from typing import ClassVar

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support import APPS, Txrouter, prepared_sites, request, wait_until

pytestmark = pytest.mark.e2e


def _routes(django_prefix: str, extra: str = "") -> str:
    sites = prepared_sites()
    return f"""
listen: tcp:{{port}}:interface=127.0.0.1
threads: {{min: 2, max: 20}}
drain_timeout: 30
routes:
  {django_prefix}: {{django: {sites / "blog"}}}
  /files/: {{static: {sites / "files"}, cache: 60}}
  /old/: {{redirect: /files/, status: 301}}
  /probe/: {{wsgi: "probe:application", path: {APPS}, max_concurrent: 12}}
{extra}"""


class DjangoAtRootTests(SynchronousTestCase):
    """
    A daemon with the blog at C{/} beside static, redirect, WSGI and host
    routes.
    """

    server: ClassVar[Txrouter]

    @classmethod
    def setUpClass(cls) -> None:
        files = prepared_sites() / "files"
        hosts = f"""
hosts:
  "*.shop.localhost": {{routes: {{/: {{wsgi: "probe:application", path: {APPS}}}}}}}
  exact.localhost: {{routes: {{/: {{static: {files / "docs"}}}}}}}
"""
        cls.server = Txrouter(_routes("/", hosts)).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        return request(self.server.port, "GET", path, headers=headers)

    def test_daemonized(self) -> None:
        """
        The server runs as a daemon: the pidfile names a live process that is
        not the test's child.
        """
        self.assertTrue(self.server.alive())
        self.assertNotEqual(self.server.pid, None)

    def test_django_page(self) -> None:
        """
        The blog's home page renders posts from its SQLite database.
        """
        status, headers, body = self.get("/")
        self.assertEqual(status, 200, body)
        self.assertIn("text/html", headers["content-type"])
        self.assertIn(b"/static/posts/style.css", body)

    def test_django_environ(self) -> None:
        """
        At C{/}, SCRIPT_NAME is empty and reverse() gives root URLs.
        """
        status, _, body = self.get("/whoami/")
        self.assertEqual(status, 200)
        seen = json.loads(body)
        self.assertEqual(seen["script_name"], "")
        self.assertEqual(seen["path_info"], "/whoami/")
        self.assertEqual(seen["reverse_hello"], "/hello/")
        self.assertEqual(seen["remote_addr"], "127.0.0.1")

    def test_django_static(self) -> None:
        """
        The project's STATIC_URL is served from STATIC_ROOT by the router.
        """
        status, headers, body = self.get("/static/posts/style.css")
        self.assertEqual(status, 200)
        self.assertIn("text/css", headers["content-type"])
        self.assertTrue(body)

    def test_static_route(self) -> None:
        """
        A static route serves a file with its size and cache header.
        """
        status, headers, body = self.get("/files/1k.txt")
        self.assertEqual(status, 200)
        self.assertEqual(len(body), 1024)
        self.assertEqual(headers["cache-control"], "max-age=60")

    def test_redirect_route(self) -> None:
        """
        A redirect route keeps the rest of the path and the query.
        """
        status, headers, _ = self.get("/old/docs/guide.txt?x=1")
        self.assertEqual(status, 301)
        self.assertEqual(headers["location"], "/files/docs/guide.txt?x=1")

    def test_bare_prefix_redirects(self) -> None:
        """
        A prefix without its trailing slash gets a 301 to the slashed form.
        """
        status, headers, _ = self.get("/probe?a=b")
        self.assertEqual(status, 301)
        self.assertEqual(headers["location"], "/probe/?a=b")

    def test_wsgi_prefix(self) -> None:
        """
        A WSGI app under a prefix gets SCRIPT_NAME and PATH_INFO split there.
        """
        status, _, body = self.get("/probe/environ?q=1")
        self.assertEqual(status, 200)
        self.assertIn(b"SCRIPT_NAME=/probe\n", body)
        self.assertIn(b"PATH_INFO=/environ\n", body)
        self.assertIn(b"QUERY_STRING=q=1\n", body)

    def test_wildcard_host(self) -> None:
        """
        A C{*.} wildcard host, matched ignoring case and port, has its own
        table.
        """
        status, _, body = self.get(
            "/environ", Host=f"A.B.Shop.localhost:{self.server.port}"
        )
        self.assertEqual(status, 200, body)
        self.assertIn(b"SCRIPT_NAME=\n", body)

    def test_exact_host(self) -> None:
        """
        An exact host name has its own table.
        """
        status, _, body = self.get("/guide.txt", Host="exact.localhost")
        self.assertEqual(status, 200)
        self.assertEqual(body, (prepared_sites() / "files/docs/guide.txt").read_bytes())

    def test_unknown_host_uses_default(self) -> None:
        """
        An unknown host falls back to the top-level routes.
        """
        status, _, _ = self.get("/files/1k.txt", Host="unknown.example")
        self.assertEqual(status, 200)

    def test_post_body(self) -> None:
        """
        A 100 KiB POST reaches Django whole.
        """
        body = bytes(range(256)) * 400
        status, _, answer = request(
            self.server.port,
            "POST",
            "/echo/",
            body=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        self.assertEqual(status, 200, answer)
        seen = json.loads(answer)
        self.assertEqual(seen["length"], len(body))
        import hashlib

        self.assertEqual(seen["sha256"], hashlib.sha256(body).hexdigest())

    def test_streaming(self) -> None:
        """
        A streamed response reaches the client chunk by chunk: the first
        chunk arrives while the application still holds the second.
        """
        gate = Path(tempfile.mkdtemp())
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.server.port, timeout=30
        )
        try:
            connection.request("GET", f"/probe/stream?gate={gate}")
            response = connection.getresponse()
            self.assertEqual(response.status, 200)
            self.assertEqual(response.readline(), b"first chunk\n")
            (gate / "release").touch()
            self.assertEqual(response.read(), b"second chunk\n")
        finally:
            connection.close()

    def test_parallel_requests(self) -> None:
        """
        Twelve requests that each wait for the other eleven all succeed: the
        daemon's pool runs them in parallel (the #4347 trap would hang).
        """
        results: list[tuple[int, bytes]] = []

        def one() -> None:
            status, _, body = request(self.server.port, "GET", "/probe/barrier")
            results.append((status, body))

        threads = [threading.Thread(target=one) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(len(results), 12)
        self.assertEqual({status for status, _ in results}, {200}, results)

    def test_error_then_serving(self) -> None:
        """
        A failing view gets a 500 and the server keeps serving.
        """
        status, _, _ = self.get("/boom/")
        self.assertEqual(status, 500)
        status, _, _ = self.get("/probe/boom")
        self.assertEqual(status, 500)
        status, _, _ = self.get("/hello/")
        self.assertEqual(status, 200)

    def test_malformed_request(self) -> None:
        """
        A malformed request line gets a 400, and the server keeps serving.
        """
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10) as s:
            s.sendall(b"GARBAGE\r\n\r\n")
            self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 400"))
        self.assertEqual(self.get("/files/1k.txt")[0], 200)


class DjangoUnderPrefixTests(SynchronousTestCase):
    """
    A daemon with the blog mounted at C{/blog/}.
    """

    server: ClassVar[Txrouter]

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = Txrouter(_routes("/blog/")).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def test_reverse_includes_prefix(self) -> None:
        """
        Under C{/blog/}, SCRIPT_NAME is C{/blog} and reverse() and static()
        include it, with no change to the project's settings.
        """
        status, _, body = request(self.server.port, "GET", "/blog/whoami/")
        self.assertEqual(status, 200, body)
        seen = json.loads(body)
        self.assertEqual(seen["script_name"], "/blog")
        self.assertEqual(seen["path_info"], "/whoami/")
        self.assertEqual(seen["reverse_hello"], "/blog/hello/")
        self.assertEqual(seen["static_url"], "/blog/static/posts/style.css")

    def test_static_under_prefix(self) -> None:
        """
        The project's static files are served under the route's prefix.
        """
        status, headers, _ = request(
            self.server.port, "GET", "/blog/static/posts/style.css"
        )
        self.assertEqual(status, 200)
        self.assertIn("text/css", headers["content-type"])

    def test_media_under_prefix(self) -> None:
        """
        MEDIA_URL is served from MEDIA_ROOT under the prefix too.
        """
        status, _, body = request(self.server.port, "GET", "/blog/media/readme.txt")
        self.assertEqual(status, 200)
        self.assertTrue(body)

    def test_bare_prefix(self) -> None:
        """
        C{/blog} redirects to C{/blog/}.
        """
        status, headers, _ = request(self.server.port, "GET", "/blog")
        self.assertEqual(status, 301)
        self.assertEqual(headers["location"], "/blog/")

    def test_outside_prefix(self) -> None:
        """
        A path outside every route is a 404 from the router.
        """
        status, _, _ = request(self.server.port, "GET", "/elsewhere/")
        self.assertEqual(status, 404)


class ShutdownTests(SynchronousTestCase):
    """
    SIGTERM stops accepting, lets requests in flight finish, then exits.
    """

    def drain_in_flight(self, daemon: bool) -> None:
        server = Txrouter(_routes("/"), daemon=daemon).start()
        self.addCleanup(server.stop)
        gate = Path(tempfile.mkdtemp())
        answers: list[tuple[int, bytes]] = []

        def slow() -> None:
            status, _, body = request(server.port, "GET", f"/probe/gate?gate={gate}")
            answers.append((status, body))

        client = threading.Thread(target=slow)
        client.start()
        wait_until((gate / "started").exists, "the request to start")
        server.terminate()

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            except OSError:
                return True
            return False

        wait_until(refused, "the port to close")
        self.assertTrue(server.alive(), "exited with a request in flight")
        (gate / "release").touch()
        client.join(30)
        self.assertEqual(answers, [(200, b"released")])
        wait_until(lambda: not server.alive(), "the server to exit")
        self.assertFalse(server.pidfile.exists())

    def test_drain_daemonized(self) -> None:
        """
        A daemonized server finishes the request in flight after SIGTERM.
        """
        self.drain_in_flight(daemon=True)

    def test_drain_foreground(self) -> None:
        """
        So does a server run in the foreground (C{twistd -n}).
        """
        self.drain_in_flight(daemon=False)
