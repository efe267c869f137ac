"""
Unit tests of the admin endpoint's status page (L{txrouter.statuspage}):
its answer's headers, a page that loads nothing from anywhere (no URL, no
protocol-relative reference, no inline attribute that its
Content-Security-Policy would block), the policy itself, its place in a
resource tree, and its shipping in the wheel. It runs in a real browser in
C{tests/test_statuspage_e2e.py}.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import NoResource, Resource, getChildForRequest
from twisted.web.server import UnsupportedMethod
from twisted.web.test.requesthelper import DummyRequest

from txrouter.statuspage import (
    StatusPage,
    content_security_policy,
    status_page_html,
)

REPO = Path(__file__).resolve().parent.parent


def _get(path: list[bytes], method: bytes = b"GET") -> tuple[DummyRequest, bytes]:
    request = DummyRequest(path)
    request.method = method
    return request, StatusPage().render(request)


def _header(request: DummyRequest, name: bytes) -> bytes:
    [value] = request.responseHeaders.getRawHeaders(name)
    return bytes(value)


@pytest.mark.unit
class AnswerTests(SynchronousTestCase):
    """
    C{GET /} answers the page as HTML that is never cached and may run
    only itself.
    """

    def test_html(self) -> None:
        """
        The body is the shipped page, as UTF-8 HTML.
        """
        request, body = _get([b""])
        self.assertEqual(body, status_page_html())
        self.assertTrue(body.startswith(b"<!doctype html>"))
        self.assertEqual(_header(request, b"content-type"), b"text/html; charset=utf-8")
        body.decode("utf-8")

    def test_not_cached(self) -> None:
        """
        C{Cache-Control: no-store}: after an upgrade, a new router's page
        is the one shown.
        """
        request, _ = _get([b""])
        self.assertEqual(_header(request, b"cache-control"), b"no-store")

    def test_hardening_headers(self) -> None:
        """
        The answer carries the page's Content-Security-Policy, and forbids
        sniffing, framing and referrers.
        """
        request, body = _get([b""])
        self.assertEqual(
            _header(request, b"content-security-policy"),
            content_security_policy(body),
        )
        self.assertEqual(_header(request, b"x-content-type-options"), b"nosniff")
        self.assertEqual(_header(request, b"x-frame-options"), b"DENY")
        self.assertEqual(_header(request, b"referrer-policy"), b"no-referrer")

    def test_get_only(self) -> None:
        """
        A POST is refused (405, by Twisted); HEAD is answered as GET.
        """
        self.assertRaises(UnsupportedMethod, _get, [b""], b"POST")
        request, _ = _get([b""], b"HEAD")
        self.assertEqual(_header(request, b"content-type"), b"text/html; charset=utf-8")

    def test_in_a_tree(self) -> None:
        """
        Put at the root as the admin endpoint puts it, it answers C{/}, and
        nothing below it: C{/stats} stays its sibling's, C{//x} is a 404.
        """
        root = Resource()
        page = StatusPage()
        stats = Resource()
        root.putChild(b"", page)
        root.putChild(b"stats", stats)
        self.assertIs(getChildForRequest(root, DummyRequest([b""])), page)
        self.assertIs(getChildForRequest(root, DummyRequest([b"stats"])), stats)
        self.assertIsInstance(
            getChildForRequest(root, DummyRequest([b"", b"x"])), NoResource
        )


@pytest.mark.unit
class SelfContainedTests(SynchronousTestCase):
    """
    The page needs nothing but the admin endpoint: it works offline and
    through an SSH tunnel, and its policy blocks everything else.
    """

    def setUp(self) -> None:
        self.page = status_page_html().decode("utf-8")
        [self.script] = re.findall(r"<script>(.*?)</script>", self.page, re.DOTALL)
        self.markup = re.sub(
            r"<(script|style)>.*?</\1>", "", self.page, flags=re.DOTALL
        )

    def assertNoMatch(self, pattern: str, text: str) -> None:
        match = re.search(pattern, text, re.IGNORECASE)
        if match is not None:
            start = max(0, match.start() - 60)
            self.fail(f"{pattern!r} found: ...{text[start : match.end() + 60]}...")

    def test_no_url(self) -> None:
        """
        No absolute or protocol-relative URL anywhere in the page (its
        comments are C{/* */}, so not even C{//} appears).
        """
        self.assertNoMatch(r"\b(?:https?|ftp|wss?|file):", self.page)
        self.assertNoMatch(r"//", self.page)

    def test_references_are_local(self) -> None:
        """
        Every C{src} and C{href} is a relative path on the admin endpoint
        or a C{data:} URL; no CSS C{url()} or C{@import}; no C{<script
        src>}, C{<link rel=stylesheet>}, frame or object.
        """
        references = re.findall(
            r"""\b(?:src|href|srcset|action|xlink:href)\s*=\s*["']?([^"'\s>]*)""",
            self.markup,
        )
        self.assertEqual(sorted(set(references)), ["data:,", "metrics", "stats"])
        for forbidden in (
            r"url\(",
            r"@import",
            r"<script\s",
            r"stylesheet",
            r"<(?:iframe|object|embed|img|audio|video|source)\b",
        ):
            self.assertNoMatch(forbidden, self.page)

    def test_asks_stats_relative(self) -> None:
        """
        The script asks C{stats} relative to the page, so the page works
        mounted anywhere (behind a tunnel or a proxy's prefix).
        """
        self.assertIn('fetch("stats"', self.page)
        self.assertNotIn('"/stats"', self.page)

    def test_one_script_one_style(self) -> None:
        """
        One C{<script>} and one C{<style>}, without attributes, so that the
        policy's two hashes cover all of the page's code and style.
        """
        self.assertEqual(len(re.findall(r"<script\b", self.page)), 1)
        self.assertEqual(len(re.findall(r"<style\b", self.page)), 1)
        self.assertIn("<script>", self.page)
        self.assertIn("<style>", self.page)

    def test_no_inline_attributes(self) -> None:
        """
        No C{style="..."} and no C{onclick=...}: the policy would block
        them (the script sets styles through the CSSOM, which it allows).
        """
        self.assertNoMatch(r"\sstyle\s*=", self.markup)
        self.assertNoMatch(r"\son[a-z]+\s*=", self.markup)
        self.assertNoMatch(r"setAttribute\(\s*[\"']style", self.script)

    def test_text_only_dom(self) -> None:
        """
        The script puts the router's strings (host, upstream and worker
        names, reload messages) into the page as text only, never as HTML,
        and evaluates no string.
        """
        for sink in (
            r"innerHTML",
            r"outerHTML",
            r"insertAdjacentHTML",
            r"document\.write",
            r"\beval\(",
            r"new Function",
        ):
            self.assertNoMatch(sink, self.script)

    def test_colour_scheme(self) -> None:
        """
        The page follows the system's light or dark scheme.
        """
        self.assertIn("@media (prefers-color-scheme: dark)", self.page)
        self.assertIn('<meta name="color-scheme" content="light dark">', self.page)


@pytest.mark.unit
class PolicyTests(SynchronousTestCase):
    """
    L{content_security_policy} allows exactly a page's own inline code.
    """

    def test_hashes(self) -> None:
        """
        The script and style are allowed by the SHA-256 of their text.
        """
        policy = content_security_policy(
            b"<style>p {}</style><script>go();\n</script>"
        ).decode()

        def digest(text: bytes) -> str:
            return base64.b64encode(hashlib.sha256(text).digest()).decode()

        script, style = digest(b"go();\n"), digest(b"p {}")
        self.assertIn(f"script-src 'sha256-{script}'", policy)
        self.assertIn(f"style-src 'sha256-{style}'", policy)

    def test_nothing_else(self) -> None:
        """
        Requests go to the page's own origin only; no frame, form, base or
        plugin; a page without a script may run none.
        """
        directives = dict(
            directive.split(" ", 1)
            for directive in content_security_policy(b"<p>x</p>").decode().split("; ")
        )
        self.assertEqual(
            directives,
            {
                "default-src": "'none'",
                "script-src": "'none'",
                "style-src": "'none'",
                "connect-src": "'self'",
                "img-src": "data:",
                "base-uri": "'none'",
                "form-action": "'none'",
                "frame-ancestors": "'none'",
            },
        )

    def test_page_covered(self) -> None:
        """
        The shipped page's policy holds one hash for each of its blocks.
        """
        policy = content_security_policy(status_page_html()).decode()
        self.assertEqual(policy.count("'sha256-"), 2)


@pytest.mark.unit
class PackageDataTests(SynchronousTestCase):
    """
    The page is package data, declared where setuptools reads it.
    """

    def test_declared(self) -> None:
        """
        C{pyproject.toml}'s package data for C{txrouter} matches the page.
        """
        config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
        patterns = config["tool"]["setuptools"]["package-data"]["txrouter"]
        self.assertTrue(
            any(fnmatch.fnmatch("statuspage.html", pattern) for pattern in patterns)
        )


@pytest.mark.e2e
class WheelTests(SynchronousTestCase):
    """
    The wheel built from the checkout ships the page.
    """

    def test_wheel_holds_page(self) -> None:
        """
        C{pip wheel} of a copy of the checkout (the checkout itself is left
        as it is) holds C{txrouter/statuspage.html}, the same bytes.
        """
        scratch = Path(tempfile.mkdtemp(prefix="txrouter-wheel-"))
        self.addCleanup(shutil.rmtree, scratch, True)
        source = scratch / "source"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO / name, source / name)
        ignore = shutil.ignore_patterns("__pycache__", "dropin.cache")
        shutil.copytree(REPO / "txrouter", source / "txrouter", ignore=ignore)
        shutil.copytree(REPO / "twisted", source / "twisted", ignore=ignore)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--wheel-dir",
                str(scratch / "dist"),
                str(source),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        [wheel] = (scratch / "dist").glob("txrouter-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            self.assertEqual(
                archive.read("txrouter/statuspage.html"), status_page_html()
            )
