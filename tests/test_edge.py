"""
Unit tests of L{txrouter.edge} and of the checks L{txrouter.site.RouterRequest}
makes with it: table-driven on the pure functions, then with raw request
bytes through a real C{HTTPChannel} of a L{RouterSite} to a WSGI app that
reports its environ.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from tests.test_wsgi import FakePool, ImmediateReactor
from txrouter.edge import BadRequest, check_headers, request_target
from txrouter.router import Router
from txrouter.site import RouterSite
from txrouter.wsgi import WSGIResource

pytestmark = pytest.mark.unit


class RequestTargetTests(SynchronousTestCase):
    """
    L{request_target}: origin-form passes, absolute-form becomes origin-form
    and names the host, other forms are refused.
    """

    ACCEPTED = [
        (b"GET", b"/", b"/", None),
        (b"GET", b"/a/b?c=d", b"/a/b?c=d", None),
        (b"GET", b"/a#frag", b"/a", None),
        (b"GET", b"/a?q=1#frag?x", b"/a?q=1", None),
        (b"GET", b"http://example.com/a?b", b"/a?b", b"example.com"),
        (b"GET", b"HTTP://Example.com:8080/a", b"/a", b"Example.com:8080"),
        (b"GET", b"https://example.com", b"/", b"example.com"),
        (b"GET", b"http://example.com?x=1", b"/?x=1", b"example.com"),
        (b"GET", b"http://[::1]:80/", b"/", b"[::1]:80"),
        (b"OPTIONS", b"*", b"*", None),
    ]

    REFUSED = [
        (b"GET", b"!"),
        (b"GET", b"foo/bar"),
        (b"CONNECT", b"host:443"),
        (b"CONNECT", b"/a"),
        (b"CONNECT", b"http://example.com/"),
        (b"GET", b"*"),
        (b"GET", b"http://user@example.com/"),
        (b"GET", b"http:///path"),
        (b"GET", b"http://exa mple.com/"),
        (b"GET", b"ftp://example.com/"),
        (b"GET", b""),
    ]

    def test_accepted(self) -> None:
        """
        Origin-form and absolute-form targets give the path to route and,
        for absolute-form, the host; a fragment is dropped.
        """
        for method, target, path, host in self.ACCEPTED:
            self.assertEqual(request_target(method, target), (path, host), target)

    def test_refused(self) -> None:
        """
        Targets in any other form, or absolute-form with a bad host, are
        refused.
        """
        for method, target in self.REFUSED:
            with self.assertRaises(BadRequest, msg=repr(target)):
                request_target(method, target)


def headers(*pairs: tuple[bytes, bytes]) -> Headers:
    result = Headers()
    for name, value in pairs:
        result.addRawHeader(name, value)
    return result


class CheckHeadersTests(SynchronousTestCase):
    """
    L{check_headers}: one valid Host, and no header name with C{_}.
    """

    def test_underscores_dropped(self) -> None:
        """
        Names with C{_} are dropped, the others kept as they are.
        """
        found = headers(
            (b"Host", b"example.com"),
            (b"X_Forwarded_Proto", b"https"),
            (b"X-Forwarded-Proto", b"http"),
            (b"x_real_ip", b"6.6.6.6"),
        )
        check_headers(found, b"HTTP/1.1", None)
        self.assertEqual(
            sorted(name.lower() for name, _ in found.getAllRawHeaders()),
            [b"host", b"x-forwarded-proto"],
        )
        self.assertEqual(found.getRawHeaders(b"x-forwarded-proto"), [b"http"])

    def test_host_rules(self) -> None:
        """
        HTTP/1.1 needs exactly one valid Host; HTTP/1.0 may have none.
        """
        ok = [
            (b"HTTP/1.1", [b"example.com"]),
            (b"HTTP/1.1", [b"example.com:8080"]),
            (b"HTTP/1.1", [b"[::1]:8080"]),
            (b"HTTP/1.1", [b"127.0.0.1"]),
            (b"HTTP/1.0", None),
        ]
        bad = [
            (b"HTTP/1.1", None),
            (b"HTTP/1.1", [b"a.example", b"b.example"]),
            (b"HTTP/1.1", [b"exa mple.com"]),
            (b"HTTP/1.1", [b"a/b"]),
            (b"HTTP/1.1", [b""]),
            (b"HTTP/1.1", [b"a.example:80:80"]),
        ]
        for version, hosts in ok:
            found = headers(*[(b"Host", h) for h in hosts or []])
            check_headers(found, version, None)
        for version, hosts in bad:
            found = headers(*[(b"Host", h) for h in hosts or []])
            with self.assertRaises(BadRequest, msg=repr(hosts)):
                check_headers(found, version, None)

    def test_absolute_form_host_wins(self) -> None:
        """
        The host of an absolute-form target replaces the Host header.
        """
        found = headers((b"Host", b"other.example"))
        check_headers(found, b"HTTP/1.1", b"example.com")
        self.assertEqual(found.getRawHeaders(b"host"), [b"example.com"])

    def test_absolute_form_host_still_checked(self) -> None:
        """
        With an absolute-form target, Host must still be there once (on
        HTTP/1.1) and valid (RFC 9112 section 3.2).
        """
        for hosts in ([], [b"a.example", b"b.example"], [b"exa mple/org"]):
            found = headers(*[(b"Host", h) for h in hosts])
            with self.assertRaises(BadRequest, msg=repr(hosts)):
                check_headers(found, b"HTTP/1.1", b"example.com")
        check_headers(headers(), b"HTTP/1.0", b"example.com")


def environ_app(seen: list[dict[str, Any]]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(dict(environ))
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    return app


def exchange(raw: bytes) -> tuple[bytes, list[dict[str, Any]], StringTransport]:
    """
    Send C{raw} to a site routing C{/app/} to an environ-recording app.

    @return: what the client got, the environs the app saw, the transport.
    """
    seen: list[dict[str, Any]] = []
    reactor = ImmediateReactor()
    resource = WSGIResource(reactor, FakePool(), environ_app(seen))
    site = RouterSite(Router({"": {"/app/": resource}}), MemoryReactorClock(), None)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    channel.makeConnection(transport)
    channel.dataReceived(raw)
    return transport.value(), seen, transport


class EdgeThroughChannelTests(SynchronousTestCase):
    """
    Raw requests through a real channel: what is refused never reaches the
    app, and what passes reaches it normalized.
    """

    def test_refused_and_closed(self) -> None:
        """
        Each refused request gets a 400 with the reason, the connection is
        closed, and the app sees nothing.
        """
        for raw in [
            b"GET foo/bar HTTP/1.1\r\nHost: a.example\r\n\r\n",
            b"CONNECT host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n",
            b"GET ! HTTP/1.1\r\nHost: a.example\r\n\r\n",
            b"GET /app/ HTTP/1.1\r\n\r\n",
            b"GET /app/ HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
            b"GET /app/ HTTP/1.1\r\nHost: a b\r\n\r\n",
        ]:
            answer, seen, transport = exchange(raw)
            self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), (raw, answer))
            self.assertIn(b"Connection: close", answer)
            self.assertTrue(transport.disconnecting, raw)
            self.assertEqual(seen, [], raw)

    def test_absolute_form(self) -> None:
        """
        An absolute-form target is routed by its path, whole, and its host
        is the one the app sees.
        """
        answer, seen, _ = exchange(
            b"GET http://example.com/app/x?y=1 HTTP/1.1\r\nHost: other.example\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        [environ] = seen
        self.assertEqual(
            (environ["SCRIPT_NAME"], environ["PATH_INFO"], environ["QUERY_STRING"]),
            ("/app", "/x", "y=1"),
        )
        self.assertEqual(environ["HTTP_HOST"], "example.com")

    def test_fragment_dropped(self) -> None:
        """
        A fragment sent in the target is in neither the path nor the query.
        """
        _, seen, _ = exchange(b"GET /app/x?y=1#top HTTP/1.1\r\nHost: a.example\r\n\r\n")
        [environ] = seen
        self.assertEqual((environ["PATH_INFO"], environ["QUERY_STRING"]), ("/x", "y=1"))

    def test_no_underscore_header_reaches_app(self) -> None:
        """
        C{X_Forwarded_Proto} cannot pose as C{X-Forwarded-Proto}.
        """
        _, seen, _ = exchange(
            b"GET /app/ HTTP/1.1\r\nHost: a.example\r\nX_Forwarded_Proto: https\r\n\r\n"
        )
        [environ] = seen
        self.assertNotIn("HTTP_X_FORWARDED_PROTO", environ)

    def test_http10_without_host(self) -> None:
        """
        An HTTP/1.0 request without Host is served, with the address it
        came to as its Host (the same for an app in a worker).
        """
        answer, seen, _ = exchange(b"GET /app/ HTTP/1.0\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.0 200 "), answer)
        self.assertEqual(seen[0]["HTTP_HOST"], "127.0.0.1")

    def test_keep_alive_after_good_request(self) -> None:
        """
        A valid request leaves the connection open for the next one.
        """
        answer, seen, transport = exchange(
            b"GET /app/ HTTP/1.1\r\nHost: a.example\r\n\r\n"
            b"GET /app/b HTTP/1.1\r\nHost: a.example\r\n\r\n"
        )
        self.assertEqual(answer.count(b"HTTP/1.1 200 "), 2)
        self.assertEqual(len(seen), 2)
        self.assertFalse(transport.disconnecting)
