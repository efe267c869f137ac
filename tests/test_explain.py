"""
Tests for L{txrouter.explain}: what C{txrouter explain} tells about one
request, and that it is what the real code does: the answers of the real
proxy engine and static route are compared with the explanations, and the
small functions factored out for it (L{Router.candidates},
L{child_path}, L{upstream_address}) are tested here by table.

Nothing listens: the explanation starts nothing, which one test proves.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from tests.test_proxy import World, parse_request
from tests.test_staticfiles import _StaticRouteTestCase
from txrouter.config import Config, load_config
from txrouter.explain import CLIENT, explain, explanation_text
from txrouter.router import Router
from txrouter.staticfiles import Refused, child_path
from txrouter.upstream import upstream_address

pytestmark = pytest.mark.unit

MISSING = "txrouter_explain_no_such_module"

ROUTES = f"""
    listen: tcp:8080:interface=127.0.0.1
    threads: {{min: 1, max: 4}}
    routes:
      /:          {{wsgi: "{MISSING}:root"}}
      /wiki/:     {{wsgi: "{MISSING}:wiki", workers: 2, threads: {{min: 1, max: 3}}}}
      /wiki/a/b/: {{wsgi: "{MISSING}:deep"}}
      /one/:      {{wsgi: "{MISSING}:one", workers: 1}}
      /api/:      {{proxy: "http://127.0.0.1:9000/v1/"}}
      /lb/:
        proxy: ["http://127.0.0.1:9001/", "https://api.internal/base"]
        preserve_host: false
      /sock/:     {{proxy: "unix:/run/app.sock"}}
      /files/:    {{static: pub, cache: 60}}
      /old/:      {{redirect: /new/, status: 301}}
    hosts:
      shop.example.com: {{routes: {{/: {{static: pub}}}}}}
      "*.example.org": {{routes: {{/docs/: {{redirect: "https://docs.example.org/"}}}}}}
    """


def make_config(case: SynchronousTestCase, text: str = ROUTES) -> Config:
    """
    Write C{text} as a routes file beside a C{pub} folder of files, and
    load it.
    """
    root = Path(tempfile.mkdtemp(prefix="txrouter-explain-")).resolve()
    case.addCleanup(shutil.rmtree, root, ignore_errors=True)
    pub = root / "pub"
    (pub / "sub").mkdir(parents=True)
    (pub / "index.html").write_text("<p>hi</p>\n")
    (pub / "a.css").write_text("p {}\n")
    (pub / ".secret").write_text("x\n")
    (root / "outside.txt").write_text("no\n")
    (pub / "out").symlink_to(root / "outside.txt")
    path = root / "routes.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return load_config(path)


class ApplicationTests(SynchronousTestCase):
    """
    A C{wsgi:} or C{django:} route: where it runs and the environ it gets,
    in the router process or in workers.
    """

    CASES = [
        # path, route prefix, SCRIPT_NAME, PATH_INFO, QUERY_STRING
        ("/", "/", "", "/", ""),
        ("/x?y=1", "/", "", "/x", "y=1"),
        ("/wikipedia", "/", "", "/wikipedia", ""),
        ("/wiki/", "/wiki/", "/wiki", "/", ""),
        ("/wiki/page?q=1", "/wiki/", "/wiki", "/page", "q=1"),
        ("/wiki/a/", "/wiki/", "/wiki", "/a/", ""),
        ("/wiki/a/b/c?x=1", "/wiki/a/b/", "/wiki/a/b", "/c", "x=1"),
        ("/wiki%2Fpage", "/", "", "/wiki/page", ""),
        ("/one/x/y", "/one/", "/one", "/x/y", ""),
        # The proxy engine resolves dot-segments on the way to a worker;
        # in process, Twisted leaves them to the application.
        ("/wiki/a/../b", "/wiki/", "/wiki", "/b", ""),
        ("/x/../y", "/", "", "/x/../y", ""),
    ]

    def test_table(self) -> None:
        """
        Each path reaches the expected route with C{SCRIPT_NAME} the prefix
        and C{PATH_INFO} the rest, in process and in workers alike.
        """
        config = make_config(self)
        for path, prefix, script, info, query in self.CASES:
            found = explain(config, path)
            environ = found["environ"]
            self.assertEqual(
                (
                    found["route"]["prefix"],
                    environ["SCRIPT_NAME"],
                    environ["PATH_INFO"],
                    environ["QUERY_STRING"],
                ),
                (prefix, script, info, query),
                f"for {path!r}",
            )

    def test_in_process(self) -> None:
        """
        A route with C{workers: 0} runs on the router's shared pool; its
        environ names the client and the listener.
        """
        found = explain(make_config(self), "/x")
        self.assertEqual(
            found["runs"], {"in": "router", "threads": {"min": 1, "max": 4}}
        )
        self.assertNotIn("sent", found)
        environ = found["environ"]
        self.assertEqual(environ["REMOTE_ADDR"], CLIENT.host)
        self.assertEqual(environ["SERVER_NAME"], "127.0.0.1")
        self.assertEqual(environ["SERVER_PORT"], "8080")
        self.assertEqual(environ["HTTP_HOST"], "127.0.0.1:8080")
        self.assertEqual(environ["wsgi.url_scheme"], "http")
        self.assertFalse(environ["wsgi.multiprocess"])

    def test_in_workers(self) -> None:
        """
        A route with workers says how many, what the proxy engine sends a
        worker (the client's headers plus the connection's facts), and the
        environ the worker builds from it.
        """
        found = explain(make_config(self), "/wiki/page?q=1", method="post")
        self.assertEqual(
            found["runs"],
            {"in": "workers", "workers": 2, "threads": {"min": 1, "max": 3}},
        )
        self.assertEqual(found["sent"]["request_line"], "POST /wiki/page?q=1 HTTP/1.1")
        headers = dict(found["sent"]["headers"])
        self.assertEqual(headers["Host"], "127.0.0.1:8080")
        self.assertEqual(headers["X-Txrouter-client"], CLIENT.host)
        self.assertEqual(headers["X-Txrouter-scheme"], "http")
        self.assertIn("X-Txrouter-Token", headers)
        environ = found["environ"]
        self.assertEqual(environ["REQUEST_METHOD"], "POST")
        self.assertEqual(environ["REMOTE_ADDR"], CLIENT.host)
        self.assertEqual(environ["SERVER_PORT"], "8080")
        self.assertEqual(environ["SERVER_PROTOCOL"], "HTTP/1.1")
        self.assertTrue(environ["wsgi.multiprocess"])
        self.assertNotIn("HTTP_X_TXROUTER_TOKEN", environ)
        one = explain(make_config(self), "/one/")
        self.assertFalse(one["environ"]["wsgi.multiprocess"])

    def test_worker_unsafe_path(self) -> None:
        """
        A path the proxy engine refuses (C{..%2F}) is its 400, for workers
        too.
        """
        found = explain(make_config(self), "/wiki/..%2F..%2Fetc")
        self.assertEqual(found["answer"]["status"], 400)
        self.assertNotIn("environ", found)

    def test_nothing_started(self) -> None:
        """
        Explaining imports no application and makes no socket, process or
        thread.
        """
        config = make_config(self)

        def refuse(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("explain must start nothing")

        self.patch(socket, "socket", refuse)
        self.patch(subprocess, "Popen", refuse)
        self.patch(os, "fork", refuse)
        threads = threading.active_count()
        for path in ("/x", "/wiki/page", "/api/x", "/files/a.css", "/old/x"):
            explain(config, path)
        self.assertEqual(threading.active_count(), threads)
        self.assertNotIn(MISSING, sys.modules)

    def test_django_note(self) -> None:
        """
        A Django route's explanation says that its static and media files,
        which the router serves, are not told apart.
        """
        text = """
            listen: tcp:8080
            routes:
              /blog/: {django: blog, settings: blog.settings}
            """
        root = Path(tempfile.mkdtemp(prefix="txrouter-explain-")).resolve()
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        (root / "blog").mkdir()
        (root / "routes.yaml").write_text(textwrap.dedent(text))
        found = explain(load_config(root / "routes.yaml"), "/blog/static/x.css")
        self.assertEqual(found["environ"]["SCRIPT_NAME"], "/blog")
        self.assertIn("STATIC_URL", found["note"])
        self.assertIn("(settings blog.settings)", found["route"]["summary"])


class ProxyTests(SynchronousTestCase):
    """
    A C{proxy:} route: the URL and headers each upstream would get.
    """

    CASES = [
        # path, upstream URL
        ("/api/", "http://127.0.0.1:9000/v1/"),
        ("/api/x?q=1", "http://127.0.0.1:9000/v1/x?q=1"),
        ("/api/a/../b", "http://127.0.0.1:9000/v1/b"),
        ("/api/../../etc/passwd", "http://127.0.0.1:9000/v1/etc/passwd"),
        ("/api/a%20b/c%2Fd", "http://127.0.0.1:9000/v1/a%20b/c%2Fd"),
        ("/api/café", "http://127.0.0.1:9000/v1/caf%C3%A9"),
        ("/sock/x", "http://localhost/x"),
    ]

    def test_urls(self) -> None:
        """
        The path after the prefix lands under the upstream's base path.
        """
        config = make_config(self)
        for path, url in self.CASES:
            [upstream] = explain(config, path)["upstreams"]
            self.assertEqual(upstream["url"], url, f"for {path!r}")

    def test_headers(self) -> None:
        """
        The client's C{Host} goes on, and the forwarding headers are the
        router's own.
        """
        [upstream] = explain(make_config(self), "/api/x", host="Example.com:8080")[
            "upstreams"
        ]
        self.assertEqual(upstream["request_line"], "GET /v1/x HTTP/1.1")
        self.assertEqual(
            upstream["headers"],
            [
                ["Host", "Example.com:8080"],
                ["X-Forwarded-For", CLIENT.host],
                ["X-Forwarded-Proto", "http"],
                ["X-Forwarded-Host", "Example.com:8080"],
                ["X-Forwarded-Prefix", "/api"],
                ["Forwarded", f'for={CLIENT.host};proto=http;host="Example.com:8080"'],
            ],
        )

    def test_several_upstreams(self) -> None:
        """
        Each upstream of a route is shown with its own base path and, with
        C{preserve_host: false}, its own C{Host}.
        """
        found = explain(make_config(self), "https://x.test/lb/a?b")
        first, second = found["upstreams"]
        self.assertEqual(first["url"], "http://127.0.0.1:9001/a?b")
        self.assertEqual(second["url"], "https://api.internal/base/a?b")
        self.assertEqual(second["request_line"], "GET /base/a?b HTTP/1.1")
        self.assertEqual(dict(first["headers"])["Host"], "127.0.0.1:9001")
        self.assertEqual(dict(second["headers"])["Host"], "api.internal")
        self.assertEqual(dict(second["headers"])["X-Forwarded-Host"], "x.test")
        self.assertEqual(dict(second["headers"])["X-Forwarded-Proto"], "https")

    def test_unix_socket(self) -> None:
        """
        A UNIX upstream names its socket.
        """
        [upstream] = explain(make_config(self), "/sock/x")["upstreams"]
        self.assertEqual(upstream["socket"], "/run/app.sock")

    def test_unsafe_path(self) -> None:
        """
        A segment that hides a separator next to a dot-segment is the proxy
        engine's 400.
        """
        found = explain(make_config(self), "/api/x/..%2f..%2fy")
        self.assertEqual(found["answer"]["status"], 400)
        self.assertNotIn("upstreams", found)


class ProxyAgreementTests(SynchronousTestCase):
    """
    The request explained is the one the real proxy engine sends.
    """

    PATHS = [
        "/api/",
        "/api/x",
        "/api/x/y/?q=1&r=%20",
        "/api/a/../b",
        "/api/%2e%2e/%2E%2e/x",
        "/api/a%20b/c%2Fd",
        "/api//x",
    ]

    def test_same_request(self) -> None:
        """
        For each path, with and without C{preserve_host}, the request line
        and headers explained are those the engine wrote upstream.
        """
        for preserve in (True, False):
            config = make_config(
                self,
                f"""
                listen: tcp:8080
                routes:
                  /api/:
                    proxy: http://a.internal:8080/v1/
                    preserve_host: {str(preserve).lower()}
                """,
            )
            for path in self.PATHS:
                world = World(self, preserve_host=preserve)
                raw = f"GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n"
                world.request(raw.encode("ascii"), peer=CLIENT)
                line, sent, _ = parse_request(world.upstream().received())
                [upstream] = explain(config, path, host="example.com")["upstreams"]
                explained = [
                    (name.lower().encode(), value.encode())
                    for name, value in upstream["headers"]
                ]
                self.assertEqual(
                    (upstream["request_line"].encode(), sorted(explained)),
                    (line, sorted(sent)),
                    f"for {path!r}, preserve_host {preserve}",
                )


class StaticTests(SynchronousTestCase):
    """
    A C{static:} route: the file it reads, or why not.
    """

    def test_file(self) -> None:
        """
        A file is named with its size, type and C{Cache-Control}.
        """
        config = make_config(self)
        found = explain(config, "/files/a.css")
        root = str(config.path.parent / "pub")
        self.assertEqual(
            found["file"],
            {
                "path": f"{root}/a.css",
                "size": 5,
                "content_type": "text/css",
                "cache_control": "max-age=60",
            },
        )
        self.assertEqual(
            explain(config, "/files/")["file"]["path"], f"{root}/index.html"
        )

    def test_refused(self) -> None:
        """
        Each refusal says why.
        """
        config = make_config(self)
        cases = [
            ("/files/.secret", 404, "hidden"),
            ("/files/../routes.yaml", 404, "dot-segment '..'"),
            ("/files/%2e%2e/routes.yaml", 404, "dot-segment '..'"),
            ("/files/..%2froutes.yaml", 404, "hides a separator"),
            ("/files/out", 404, "leads outside the route's folder"),
            ("/files/nothing", 404, "does not exist"),
            ("/files/a.css/x", 404, "is a file, not a folder"),
            ("/files/sub/", 404, "index.html' does not exist"),
            ("/files/%00", 400, "NUL"),
            ("/files/%ff", 400, "not UTF-8"),
        ]
        for path, status, reason in cases:
            refused = explain(config, path)["refused"]
            self.assertEqual(refused["status"], status, f"for {path!r}")
            self.assertIn(reason, refused["reason"], f"for {path!r}")

    def test_folder_and_method(self) -> None:
        """
        A folder without its slash is redirected to it; a method other
        than GET and HEAD is refused.
        """
        config = make_config(self)
        answer = explain(config, "/files/sub?x=1")["answer"]
        self.assertEqual(
            (answer["status"], answer["location"]), (302, "/files/sub/?x=1")
        )
        self.assertEqual(
            explain(config, "/files/a.css", method="POST")["answer"]["status"], 405
        )
        self.assertIn("file", explain(config, "/files/a.css", method="HEAD"))


class StaticAgreementTests(_StaticRouteTestCase):
    """
    The status explained for a static path is the one the real route
    answers (on the tree of L{tests.test_staticfiles}).
    """

    PATHS = [
        "/files/hello.txt",
        "/files/caf%C3%A9.txt",
        "/files/site/",
        "/files/site",
        "/files/plain/",
        "/files/plain/inner.txt",
        "/files/.secret",
        "/files/.git/config",
        "/files/../outside/secret.txt",
        "/files/%2e%2e/outside/secret.txt",
        "/files/plain%2f..%2f..%2foutside/secret.txt",
        "/files/inside-link.txt",
        "/files/outside-link.txt",
        "/files/outside-dir/secret.txt",
        "/files/loop",
        "/files/hello.txt/x",
        "/files/nothing",
        "/files/%00",
        "/files/%ff",
    ]

    def test_same_status(self) -> None:
        """
        For each path, the explained status (200 for a file) is the real
        route's.
        """
        path = self.root.parent / "routes.yaml"
        path.write_text(
            f"listen: tcp:8080\nroutes: {{/files/: {{static: {self.root}}}}}\n"
        )
        config = load_config(path)
        for url in self.PATHS:
            found = explain(config, url)
            if "file" in found:
                status = 200
            elif "refused" in found:
                status = found["refused"]["status"]
            else:
                status = found["answer"]["status"]
            self.assertEqual(status, self.get(url).status, f"for {url!r}")


class RedirectTests(SynchronousTestCase):
    """
    A C{redirect:} route, and the router's own redirect of a bare prefix.
    """

    def test_location(self) -> None:
        """
        The rest of the path and the query are kept, as sent.
        """
        answer = explain(make_config(self), "/old/a%2Fb?x=%20")["answer"]
        self.assertEqual(
            answer,
            {
                "by": "route",
                "status": 301,
                "reason": "Moved Permanently",
                "location": "/new/a%2Fb?x=%20",
            },
        )

    def test_absolute(self) -> None:
        """
        A redirect to an absolute URL, in a wildcard host's table.
        """
        answer = explain(make_config(self), "http://a.example.org/docs/x")["answer"]
        self.assertEqual(
            (answer["status"], answer["location"]), (302, "https://docs.example.org/x")
        )

    def test_bare_prefix(self) -> None:
        """
        A prefix without its slash: the router's 301, and a match.
        """
        found = explain(make_config(self), "/wiki?x=1")
        self.assertTrue(found["matched"])
        self.assertNotIn("route", found)
        self.assertEqual(
            (
                found["answer"]["by"],
                found["answer"]["status"],
                found["answer"]["location"],
            ),
            ("router", 301, "/wiki/?x=1"),
        )


class HostAndPrefixTests(SynchronousTestCase):
    """
    Which table serves the request, and the prefixes weighed in it.
    """

    CASES = [
        # URL, --host, table, match
        ("/", None, "", "default"),
        ("/", "shop.example.com", "shop.example.com", "exact"),
        ("/", "SHOP.Example.COM:8443", "shop.example.com", "exact"),
        ("http://shop.example.com/", None, "shop.example.com", "exact"),
        ("http://shop.example.com/", "other.net", "", "default"),
        ("/docs/", "a.b.example.org", "*.example.org", "wildcard"),
        ("/", "example.org", "", "default"),
    ]

    def test_tables(self) -> None:
        """
        An exact name beats a wildcard, which beats the default table;
        case and port are ignored; C{--host} beats the URL's host.
        """
        config = make_config(self)
        for url, host, table, match in self.CASES:
            found = explain(config, url, host)
            self.assertEqual(
                (found["host"]["table"], found["host"]["match"]),
                (table, match),
                f"for {url!r}, {host!r}",
            )

    def test_request(self) -> None:
        """
        The request says where its C{Host} came from: the first listener,
        the URL or C{--host}; an https URL makes a secure request.
        """
        config = make_config(self)
        self.assertEqual(
            explain(config, "/x")["request"],
            {
                "method": "GET",
                "target": "/x",
                "host": "127.0.0.1:8080",
                "host_from": "listen[0]",
                "scheme": "http",
                "client": CLIENT.host,
            },
        )
        request = explain(config, "https://a.test/x")["request"]
        self.assertEqual(
            (request["host"], request["host_from"], request["scheme"]),
            ("a.test", "the URL", "https"),
        )
        found = explain(config, "https://a.test/x", host="b.test")
        self.assertEqual(
            (found["request"]["host"], found["request"]["target"]), ("b.test", "/x")
        )
        self.assertEqual(found["environ"]["wsgi.url_scheme"], "https")

    def test_prefixes(self) -> None:
        """
        Every prefix of the table is listed in file order; those that match
        are marked, and the longest wins.
        """
        found = explain(make_config(self), "/wiki/a/b/c")
        marks = {p["prefix"]: (p["matches"], p["wins"]) for p in found["prefixes"]}
        self.assertEqual(
            marks,
            {
                "/": (True, False),
                "/wiki/": (True, False),
                "/wiki/a/b/": (True, True),
                "/one/": (False, False),
                "/api/": (False, False),
                "/lb/": (False, False),
                "/sock/": (False, False),
                "/files/": (False, False),
                "/old/": (False, False),
            },
        )

    def test_no_route(self) -> None:
        """
        A path no prefix matches is the router's 404, and no match.
        """
        found = explain(make_config(self), "/x", host="shop.example.com")
        self.assertTrue(found["matched"])
        found = explain(make_config(self), "/elsewhere", host="a.example.org")
        self.assertFalse(found["matched"])
        self.assertEqual(
            (found["answer"]["by"], found["answer"]["status"]), ("router", 404)
        )
        self.assertEqual(
            found["prefixes"], [{"prefix": "/docs/", "matches": False, "wins": False}]
        )

    def test_refused_at_the_edge(self) -> None:
        """
        What the edge refuses never reaches the router: a 400 that says
        why, and no match.
        """
        config = make_config(self)
        for url, method, why in [
            ("nope", "GET", "must be a path starting with '/'"),
            ("/x", "CONNECT", "CONNECT is not served here"),
            ("http://a@b/x", "GET", "host is not valid"),
        ]:
            found = explain(config, url, method=method)
            self.assertFalse(found["matched"], url)
            self.assertNotIn("host", found)
            self.assertEqual(found["answer"]["status"], 400)
            self.assertIn(why, found["answer"]["message"])

    def test_bad_method(self) -> None:
        """
        A method that is not an HTTP token is a L{ValueError}.
        """
        self.assertRaises(ValueError, explain, make_config(self), "/", None, "GE T")


class TextTests(SynchronousTestCase):
    """
    The explanation as a person reads it.
    """

    def test_redirect(self) -> None:
        """
        A whole explanation, line by line.
        """
        config = make_config(self)
        text = explanation_text(explain(config, "/old/x?y=1", host="Shop.Example.com"))
        self.assertEqual(
            text.splitlines(),
            [
                "request:  GET /old/x?y=1",
                "          Host: Shop.Example.com (from --host), http, from "
                "192.0.2.10 (an example client)",
                "host:     Shop.Example.com: its own table, hosts['shop.example.com']",
                "prefixes: /  matches, the longest: it wins",
                f"route:    {config.path}:16: hosts['shop.example.com'].routes['/']: "
                f"static {config.path.parent / 'pub'}",
                f"refused:  404: '{config.path.parent / 'pub' / 'old'}' does not exist",
            ],
        )

    def test_sections(self) -> None:
        """
        Each kind's explanation has its own lines.
        """
        config = make_config(self)
        cases = [
            (
                "/wiki/x",
                [
                    "runs:     in 2 worker processes of its own (threads 1-3 each)",
                    "sent:     GET /wiki/x",
                    "SCRIPT_NAME        /wiki",
                ],
            ),
            (
                "/x",
                [
                    "runs:     in the router process, on the shared pool (threads 1-4)",
                    "PATH_INFO          /x",
                ],
            ),
            (
                "/lb/x",
                [
                    "upstream: http://127.0.0.1:9001/x",
                    "X-Forwarded-Prefix: /lb",
                    "least busy",
                ],
            ),
            (
                "/files/a.css",
                ["file:     ", "(5 bytes, text/css, Cache-Control: max-age=60)"],
            ),
            ("/old/x", ["answer:   301 Moved Permanently, Location: /new/x"]),
            (
                "/wiki",
                [
                    "answer:   301 Moved Permanently, Location: /wiki/: a prefix "
                    "without its trailing slash"
                ],
            ),
            (
                "nope",
                [
                    "400 Bad Request (the request target must be a path starting "
                    "with '/'): refused before routing"
                ],
            ),
        ]
        for url, parts in cases:
            text = explanation_text(explain(config, url))
            for part in parts:
                self.assertIn(part, text, f"for {url!r}")
        text = explanation_text(explain(config, "/x", host="a.example.org"))
        self.assertIn("answer:   404 Not Found: no route matches this URL", text)
        self.assertIn("prefixes: /docs/  -", text)


class CandidatesTests(SynchronousTestCase):
    """
    L{Router.candidates}: the table for a host, and every matching prefix.
    """

    def test_table(self) -> None:
        """
        Matching prefixes come longest first; the table key says which
        host table was chosen.
        """
        leaf = Resource()
        router = Router(
            {
                "": {"/": leaf, "/a/": leaf, "/a/b/c/": leaf},
                "x.test": {"/a/": leaf},
                "*.test": {"/": leaf},
            }
        )
        cases = [
            (b"other", [b""], ("", [0])),
            (b"other", [b"a", b"b", b"c", b"d"], ("", [3, 1, 0])),
            (b"other", [b"a", b"b"], ("", [1, 0])),
            (b"x.test", [b"a", b""], ("x.test", [1])),
            (b"x.test", [b"b"], ("x.test", [])),
            (b"y.x.test", [b"b"], ("*.test", [0])),
        ]
        for host, segments, expected in cases:
            self.assertEqual(
                router.candidates(host, segments), expected, f"{host!r} {segments!r}"
            )
        only_default = Router({"": {"/a/": leaf}})
        self.assertEqual(only_default.candidates(b"x.test", [b"a", b""]), ("", [1]))


class ChildPathTests(SynchronousTestCase):
    """
    L{child_path}: one segment below a static route's folder.
    """

    def test_table(self) -> None:
        """
        Each segment gives a path, or a refusal with its status.
        """
        base = Path(self.mktemp()).absolute()
        (base / "root" / "dir").mkdir(parents=True)
        (base / "root" / "f.txt").write_text("x")
        (base / "root" / "dir" / "index.html").write_text("x")
        (base / "other.txt").write_text("x")
        (base / "root" / "link").symlink_to(base / "other.txt")
        root = str(base / "root")
        cases: list[tuple[str, bytes, str | int]] = [
            (root, b"f.txt", f"{root}/f.txt"),
            (root, b"dir", f"{root}/dir"),
            (f"{root}/dir", b"", f"{root}/dir/index.html"),
            (root, b"", 404),
            (root, b"..", 404),
            (root, b".", 404),
            (root, b".f", 404),
            (root, b"a/b", 404),
            (root, b"a\\b", 404),
            (root, b"link", 404),
            (root, b"missing", 404),
            (f"{root}/f.txt", b"x", 404),
            (root, b"\x00", 400),
            (root, b"\xff", 400),
        ]
        for folder, segment, expected in cases:
            found = child_path(root, folder, segment, os.path.isdir(folder))
            got = found.status if isinstance(found, Refused) else found
            self.assertEqual(got, expected, f"for {folder!r}, {segment!r}")


class UpstreamAddressTests(SynchronousTestCase):
    """
    L{upstream_address}: an upstream URL's own C{Host} and base path.
    """

    def test_table(self) -> None:
        """
        The port is kept unless it is the scheme's; the base ends with C{/}.
        """
        cases = [
            ("http://127.0.0.1:9000/v1/", (b"127.0.0.1:9000", b"/v1/")),
            ("http://h", (b"h", b"/")),
            ("http://h:80/a", (b"h", b"/a/")),
            ("https://h:443/", (b"h", b"/")),
            ("https://h:80/", (b"h:80", b"/")),
            ("http://[::1]:8080/", (b"[::1]:8080", b"/")),
            ("unix:/run/app.sock", (b"localhost", b"/")),
        ]
        for url, expected in cases:
            self.assertEqual(upstream_address(url), expected, url)
