"""
Unit tests of L{txrouter.router.Router}: host matching and longest-prefix
routing, table-driven, with in-memory requests.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import pytest
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from txrouter.redirect import AddSlash, Redirect
from txrouter.router import Router

pytestmark = pytest.mark.unit


class Leaf(Resource):
    """
    A route's resource that takes the rest of the path, as WSGIResource does.
    """

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class HostRequest(DummyRequest):
    """
    A DummyRequest for a path and a Host, split like Twisted's Request.
    """

    def __init__(self, path: bytes, host: bytes = b"example.com") -> None:
        raw = path.split(b"?")[0]
        super().__init__([unquote_to_bytes(s) for s in raw[1:].split(b"/")])
        self.uri = path
        self.host_name = host

    def getRequestHostname(self) -> bytes:
        return self.host_name


def route(router: Router, path: bytes, host: bytes = b"example.com") -> tuple:
    """
    Traverse like Site does; return (resource, SCRIPT_NAME, PATH_INFO).
    """
    request = HostRequest(path, host)
    found = getChildForRequest(router, request)
    script = b"/" + b"/".join(request.prepath) if request.prepath else b""
    info = b"/" + b"/".join(request.postpath) if request.postpath else b""
    return found, script, info


ROOT, WIKI, DEEP, API, SHOP, ORG, SUB_ORG = (
    Leaf(n) for n in ("root", "wiki", "deep", "api", "shop", "org", "sub.org")
)


def make_router() -> Router:
    return Router(
        {
            "": {"/": ROOT, "/wiki/": WIKI, "/wiki/a/b/": DEEP, "/api/": API},
            "shop.example.com": {"/": SHOP},
            "*.example.org": {"/": ORG},
            "*.sub.example.org": {"/": SUB_ORG},
        }
    )


class PrefixTests(SynchronousTestCase):
    """
    The longest matching prefix wins, and the request is split there.
    """

    CASES = [
        # path, expected route, SCRIPT_NAME, PATH_INFO
        (b"/", "root", b"", b"/"),
        (b"/x", "root", b"", b"/x"),
        (b"/wikipedia", "root", b"", b"/wikipedia"),
        (b"/wiki/", "wiki", b"/wiki", b"/"),
        (b"/wiki/page", "wiki", b"/wiki", b"/page"),
        (b"/wiki/page/", "wiki", b"/wiki", b"/page/"),
        (b"/wiki/a/", "wiki", b"/wiki", b"/a/"),
        (b"/wiki/a/b/", "deep", b"/wiki/a/b", b"/"),
        (b"/wiki/a/b/c?x=1", "deep", b"/wiki/a/b", b"/c"),
        (b"/wiki//x", "wiki", b"/wiki", b"//x"),
        (b"/api/v1/items", "api", b"/api", b"/v1/items"),
        (b"/wiki%2Fpage", "root", b"", b"/wiki/page"),
    ]

    def test_table(self) -> None:
        """
        Each path reaches the expected route with SCRIPT_NAME and PATH_INFO
        split at the prefix.
        """
        router = make_router()
        for path, name, script, info in self.CASES:
            found, got_script, got_info = route(router, path)
            self.assertEqual(
                (getattr(found, "name", found), got_script, got_info),
                (name, script, info),
                f"for {path!r}",
            )

    def test_bare_prefix_redirects(self) -> None:
        """
        A prefix without its trailing slash gets the add-slash redirect.
        """
        router = make_router()
        for path in (b"/wiki", b"/api", b"/wiki/a/b"):
            found, _, _ = route(router, path)
            self.assertIsInstance(found, AddSlash, f"for {path!r}")

    def test_add_slash_location(self) -> None:
        """
        The redirect keeps the query and re-quotes the path.
        """
        request = HostRequest(b"/wiki?x=1&y=%20")
        found = getChildForRequest(make_router(), request)
        found.render(request)
        self.assertEqual(request.responseCode, 301)
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"location"), [b"/wiki/?x=1&y=%20"]
        )

    def test_no_route(self) -> None:
        """
        Without a C{/} route, an unmatched path is a 404.
        """
        router = Router({"": {"/api/": API}})
        found, _, _ = route(router, b"/other")
        request = HostRequest(b"/other")
        found.render(request)
        self.assertEqual(request.responseCode, 404)


class HostTests(SynchronousTestCase):
    """
    Host matching: exact beats wildcard beats default; case and trailing
    dot are ignored.
    """

    CASES = [
        (b"shop.example.com", "shop"),
        (b"SHOP.Example.COM", "shop"),
        (b"shop.example.com.", "shop"),
        (b"a.shop.example.com", "root"),
        (b"x.example.org", "org"),
        (b"a.b.example.org", "org"),
        (b"example.org", "root"),
        (b"x.sub.example.org", "sub.org"),
        (b"sub.example.org", "org"),
        (b"other.net", "root"),
        (b"badexample.org", "root"),
    ]

    def test_table(self) -> None:
        """
        Each Host reaches the expected table.
        """
        router = make_router()
        for host, name in self.CASES:
            found, _, _ = route(router, b"/", host)
            self.assertEqual(getattr(found, "name", found), name, f"for {host!r}")


class RawPathRedirectTests(SynchronousTestCase):
    """
    Redirects keep the path's encoding as the client sent it.
    """

    CASES = [
        (b"/old/a%2Fb", b"/new/a%2Fb"),
        (b"/old/%2e%2e/x", b"/new/%2e%2e/x"),
        (b"/old/caf%C3%A9?q=%2F", b"/new/caf%C3%A9?q=%2F"),
        (b"/old/a/b/", b"/new/a/b/"),
        (b"/old/", b"/new/"),
    ]

    def test_redirect_table(self) -> None:
        """
        C{/old/ -> /new/}: an encoded slash or dot stays encoded, so the
        client is sent exactly where it asked, one prefix over.
        """
        router = Router({"": {"/old/": Redirect("/new/", 301)}})
        for path, location in self.CASES:
            request = HostRequest(path)
            getChildForRequest(router, request).render(request)
            self.assertEqual(
                request.responseHeaders.getRawHeaders(b"location"),
                [location],
                f"for {path!r}",
            )

    def test_add_slash_keeps_encoding(self) -> None:
        """
        A bare prefix sent encoded is redirected with the same encoding.
        """
        request = HostRequest(b"/wi%6Bi?x=1")
        found = getChildForRequest(make_router(), request)
        self.assertIsInstance(found, AddSlash)
        found.render(request)
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"location"), [b"/wi%6Bi/?x=1"]
        )
