"""
The example sites as a newcomer meets them: C{sites/prepare.py} gives the
blog an admin account to log in with; the blog and the wiki, served on one
host name by a real, daemonized C{twistd txrouter}, name their cookies apart,
and a login to the blog survives visits to the wiki.

The client is a browser in miniature: a cookie jar that accepts cookies from
127.0.0.1 only, no proxy, no redirect followed, and only paths of the
router's own address.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any, ClassVar
from urllib.error import HTTPError
from urllib.parse import urlencode

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    REPO,
    Txrouter,
    prepared_sites,
    request,
    stop_daemon,
    wait_until,
)

pytestmark = pytest.mark.e2e

#: The account C{sites/prepare.py} makes for local use.
_ADMIN = {"username": "admin", "password": "admin"}

_CSRF_FIELD = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """
    Follow no redirect: the test sees the 302 itself (and goes nowhere else).
    """

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Browser:
    """
    A cookie-keeping client of 127.0.0.1:C{port}.
    """

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.jar = CookieJar(DefaultCookiePolicy(allowed_domains=["127.0.0.1"]))
        self._opener = urllib.request.build_opener(
            # An empty mapping: no proxy from the environment, ever.
            urllib.request.ProxyHandler({}),
            _NoRedirect(),
            urllib.request.HTTPCookieProcessor(self.jar),
        )

    def open(
        self, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """
        GET C{path}, or POST C{form} to it when given.

        @return: status, headers (lower-case names) and body.
        """
        if not path.startswith("/"):
            raise ValueError(f"a path on the router, not {path!r}")
        data = None if form is None else urlencode(form).encode()
        try:
            with self._opener.open(self.base + path, data=data, timeout=30) as answer:
                return answer.status, _lower(answer.headers.items()), answer.read()
        except HTTPError as error:
            with error:
                return error.code, _lower(error.headers.items()), error.read()

    def cookies(self) -> dict[str, str]:
        """
        The cookies held, by name.
        """
        return {cookie.name: cookie.value or "" for cookie in self.jar}


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def _json(browser: _Browser, path: str) -> dict[str, Any]:
    """
    GET C{path}, which must answer 200 with JSON.
    """
    status, _, body = browser.open(path)
    if status != 200:
        raise AssertionError(f"GET {path}: {status} {body[:500]!r}")
    return dict(json.loads(body))


class BlogAndWikiCookiesTests(SynchronousTestCase):
    """
    A daemon with the prepared blog in the router process at C{/} and the
    prepared wiki in one worker at C{/wiki/}, both on 127.0.0.1.
    """

    scratch: ClassVar[Path]
    server: ClassVar[Txrouter]
    workers: ClassVar[set[int]]

    @classmethod
    def setUpClass(cls) -> None:
        cls.scratch = Path(tempfile.mkdtemp(prefix="txrouter-sites-"))
        cls.workers = set()
        try:
            sites = prepared_sites()
            cls.server = Txrouter(
                f"""
listen: tcp:{{port}}:interface=127.0.0.1
runtime_dir: {cls.scratch / "run"}
routes:
  /: {{django: {sites / "blog"}, workers: 0}}
  /wiki/: {{django: {sites / "wiki"}, workers: 1}}
"""
            )
            cls.server.start()
            wait_until(cls._wiki_answers, f"the wiki to answer ({cls.server.log()})")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        # The server is absent when setUpClass failed before making it.
        stop_daemon(getattr(cls, "server", None), cls.workers, cls.scratch)

    @classmethod
    def _wiki_answers(cls) -> bool:
        """
        Whether the wiki's worker answers yet; remember its PID when it does.
        """
        status, _, body = request(cls.server.port, "GET", "/wiki/whoami/")
        if status == 200:
            cls.workers.add(json.loads(body)["pid"])
        return status == 200

    def test_cookie_names_differ(self) -> None:
        """
        The blog and the wiki name their session and CSRF cookies apart, and
        the cookies they set carry those names.
        """
        browser = _Browser(self.server.port)
        blog = _json(browser, "/cookies/")
        wiki = _json(browser, "/wiki/cookies/")
        self.assertEqual((blog["project"], wiki["project"]), ("blog", "wiki"))
        names = [
            blog["session_cookie"],
            blog["csrf_cookie"],
            wiki["session_cookie"],
            wiki["csrf_cookie"],
        ]
        self.assertEqual(len(set(names)), 4, names)
        self.assertNotIn("sessionid", names)
        self.assertNotIn("csrftoken", names)
        self.assertEqual(
            set(browser.cookies()), {blog["csrf_cookie"], wiki["csrf_cookie"]}
        )

    def test_blog_login_survives_the_wiki(self) -> None:
        """
        Logging into the blog's admin with prepare.py's account works even
        when the wiki sets its CSRF cookie between the login form and the
        post, and the blog's session is still valid after more wiki visits.
        """
        browser = _Browser(self.server.port)
        status, headers, _ = browser.open("/admin/")
        self.assertEqual(status, 302)
        self.assertTrue(headers["location"].startswith("/admin/login/"), headers)

        status, _, page = browser.open("/admin/login/")
        self.assertEqual(status, 200, page[:500])
        token = _CSRF_FIELD.search(page)
        assert token is not None, page[:500]
        # The wiki has no admin; its CSRF cookie is the one that could clash.
        _json(browser, "/wiki/cookies/")

        status, headers, body = browser.open(
            "/admin/login/",
            {
                **_ADMIN,
                "csrfmiddlewaretoken": token.group(1).decode(),
                "next": "/admin/",
            },
        )
        self.assertEqual((status, headers.get("location")), (302, "/admin/"), body)
        logged_in = browser.cookies()
        self.assertIn("blog_sessionid", logged_in)

        status, _, body = browser.open("/wiki/")
        self.assertEqual(status, 200, body[:500])
        wiki = _json(browser, "/wiki/cookies/")
        self.assertIn(wiki["csrf_cookie"], browser.cookies())

        status, headers, body = browser.open("/admin/")
        self.assertEqual(status, 200, (headers, body[:500]))
        self.assertIn(b"Site administration", body)
        self.assertEqual(
            browser.cookies()["blog_sessionid"], logged_in["blog_sessionid"]
        )


class PrepareTests(SynchronousTestCase):
    """
    C{sites/prepare.py} on a fresh copy of C{sites/}, run twice.
    """

    def test_admin_account_once(self) -> None:
        """
        The first run creates the blog's admin account and says it is for
        local use only, the second keeps it and says so; the wiki, which has
        no admin, gets none; the other lines are unchanged.
        """
        scratch = Path(tempfile.mkdtemp(prefix="txrouter-prepare-"))
        self.addCleanup(shutil.rmtree, scratch, True)
        shutil.copytree(
            REPO / "sites",
            scratch / "sites",
            ignore=shutil.ignore_patterns("db.sqlite3", "staticfiles", "__pycache__"),
        )

        def run() -> list[str]:
            result = subprocess.run(
                [sys.executable, str(scratch / "sites" / "prepare.py")],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            return result.stdout.splitlines()

        first, second = run(), run()
        done = [
            "blog: migrated, static files collected",
            "chat: migrated, static files collected",
            "wiki: migrated, static files collected",
        ]
        for lines in (first, second):
            self.assertEqual([line for line in lines if "admin" not in line], done)
        (created,) = (line for line in first if "admin" in line)
        (kept,) = (line for line in second if "admin" in line)
        self.assertTrue(created.startswith("blog: "), created)
        self.assertIn("admin / admin created", created)
        self.assertIn("already exists", kept)
        for line in (created, kept):
            self.assertIn("for local use only", line)
