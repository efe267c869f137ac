"""
Tests of TLS listeners, HTTPS redirects and HSTS as a routes file says
them (L{txrouter.listeners}, L{txrouter.hsts}), and of what the router
does with them per request, in memory.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from tests.certs import Authority
from tests.test_config import problems_of, write_routes
from tests.test_proxy import TLSFakeTransport
from txrouter.config import load_config
from txrouter.limits import Limits
from txrouter.router import Router
from txrouter.site import RouterSite

pytestmark = pytest.mark.unit

PEER = IPv4Address("TCP", "192.0.2.9", 40000)


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"hello"


class ConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="txrouter-listen-"))
        self.addCleanup(shutil.rmtree, self.folder, True)
        (self.folder / "pub").mkdir()
        self.authority = Authority(self.folder)

    def load(self, listen: str, extra: str = "") -> Any:
        path = write_routes(
            self.folder, f"listen:\n{listen}routes: {{/: {{static: pub}}}}\n{extra}"
        )
        return load_config(path)

    def problems(self, listen: str, extra: str = "") -> list[str]:
        path = write_routes(
            self.folder, f"listen:\n{listen}routes: {{/: {{static: pub}}}}\n{extra}"
        )
        return [f"{p.line}: {p.where}: {p.message}" for p in problems_of(self, path)]

    def test_tls_listener(self) -> None:
        """
        A mapping entry with C{tls:}: its endpoint, and its certificates
        read from a file, a pair and a folder, the default named.
        """
        one = self.authority.issue(["one.test"])
        crt, key = self.authority.issue_pair(["two.test"])
        folder = self.folder / "more"
        folder.mkdir()
        self.authority.issue(["three.test"], to=folder / "three.pem")
        config = self.load(
            "  - tcp:8080\n"
            "  - endpoint: tcp:8443\n"
            "    tls:\n"
            f"      certificates: [{one.name}, "
            f"{{cert: {crt.name}, key: {key.name}}}, more]\n"
            "      default: two.test\n"
        )
        self.assertEqual(config.listen, ("tcp:8080", "tcp:8443"))
        plain, secure = config.listeners
        self.assertIsNone(plain.tls)
        assert secure.tls is not None
        names = [c.names for c in secure.tls.certificates]
        self.assertEqual(names, [("one.test",), ("two.test",), ("three.test",)])
        self.assertEqual(secure.tls.default, 1)

    def test_http2(self) -> None:
        """
        A TLS listener offers HTTP/2 unless it says C{http2: false}; its
        port's factory offers over ALPN what it says, and follows a
        reload; a plain listener offers nothing.
        """
        pem = self.authority.issue(["one.test"])
        config = self.load(
            f"  - {{endpoint: 'tcp:8443', tls: {{certificates: {pem.name}}}}}\n"
            f"  - {{endpoint: 'tcp:8444', tls: {{certificates: {pem.name}, "
            "http2: false}}\n"
        )
        offered, refused = config.listeners
        assert offered.tls is not None and refused.tls is not None
        self.assertEqual((offered.tls.http2, refused.tls.http2), (True, False))
        site = RouterSite(_Hello(), MemoryReactorClock(), None, Limits())
        factory = site.listener("tcp:8443", tls=True, http2=True)
        self.assertEqual(factory.acceptableProtocols(), [b"h2", b"http/1.1"])
        factory.http2 = False
        self.assertEqual(factory.acceptableProtocols(), [b"http/1.1"])
        [problem] = self.problems(
            f"  - {{endpoint: 'tcp:8443', tls: {{certificates: {pem.name}, "
            "http2: maybe}}\n"
        )
        self.assertTrue(problem.startswith("2: listen[0].tls.http2: "), problem)

    def test_https_redirect(self) -> None:
        """
        C{https_redirect: true} is port 443; a number is that port.
        """
        config = self.load(
            "  - {endpoint: 'tcp:8080', https_redirect: true}\n"
            "  - {endpoint: 'tcp:8081', https_redirect: 8443}\n"
        )
        self.assertEqual([s.https_redirect for s in config.listeners], [443, 8443])

    def test_problems(self) -> None:
        """
        Each mistake is named with its line and place, and what was expected.
        """
        pem = self.authority.issue(["one.test"])
        cases = {
            "  - {endpoint: 'tcp:8443', tls: {certificates: nothing.pem}}\n": (
                "2: listen[0].tls.certificates: ",
                "nothing.pem: cannot read it",
            ),
            f"  - {{endpoint: 'ssl:8443', tls: {{certificates: {pem.name}}}}}\n": (
                "2: listen[0].endpoint: ",
                "ssl: already adds TLS",
            ),
            f"  - {{endpoint: 'tcp:8443', tls: {{certificates: {pem.name}}}, "
            "https_redirect: true}\n": (
                "2: listen[0].https_redirect: ",
                "redirect from a plain one",
            ),
            f"  - {{endpoint: 'tcp:8443', tls: {{certificates: {pem.name}, "
            "default: x.test}}\n": (
                "2: listen[0].tls.default: ",
                "they are for: one.test",
            ),
            "  - {endpoint: 'tcp:80', https_redirect: 0}\n": (
                "2: listen[0].https_redirect: ",
                "expected true (to port 443) or the HTTPS port",
            ),
            "  - {endpoint: 'tcp:80', tsl: {}}\n": ("2: listen[0].tsl: ", "unknown"),
            "  - {tls: {certificates: a.pem}}\n": (
                "2: listen[0].endpoint: ",
                "expected",
            ),
        }
        for listen, (where, what) in cases.items():
            [problem] = self.problems(listen)
            self.assertTrue(problem.startswith(where), problem)
            self.assertIn(what, problem)

    def test_hsts(self) -> None:
        """
        C{hsts:} at the top (the default host) and per host: true is a
        year; the parts make the header's value.
        """
        config = self.load(
            "  - tcp:8080\n",
            "hsts: true\n"
            "hosts:\n"
            "  Example.TEST:\n"
            "    hsts: {max_age: 63072000, include_subdomains: true, preload: true}\n"
            "    routes: {/: {static: pub}}\n"
            "  other.test: {routes: {/: {static: pub}}}\n",
        )
        self.assertEqual(
            config.hsts,
            {
                "": b"max-age=31536000",
                "example.test": b"max-age=63072000; includeSubDomains; preload",
            },
        )

    def test_hsts_preload_needs_more(self) -> None:
        """
        C{preload} without C{include_subdomains} and a year is refused: the
        preload lists would not take the host.
        """
        [problem] = self.problems("  - tcp:8080\n", "hsts: {preload: true}\n")
        self.assertIn("hsts.preload: the preload lists take a host only", problem)


def _site(
    https_redirect: int | None = None, hsts: dict[str, bytes] | None = None
) -> tuple[RouterSite, Any]:
    reactor = MemoryReactorClock()
    router = Router({"": {"/": _Hello()}}, hsts=hsts)
    site = RouterSite(router, reactor, None, Limits())
    listener = site.listener("tcp:80", https_redirect=https_redirect)
    return site, listener


def _request(listener: Any, data: bytes, secure: bool = False) -> bytes:
    protocol = listener.buildProtocol(PEER)
    transport = (
        TLSFakeTransport(MemoryReactorClock(), PEER)
        if secure
        else StringTransport(peerAddress=PEER)
    )
    transport.protocol = protocol
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    return transport.value()  # type: ignore[no-any-return]


class RedirectTests(SynchronousTestCase):
    def test_get(self) -> None:
        """
        A GET on a redirecting listener gets a 301 to the same host, path
        and query over HTTPS (the port left out when it is 443).
        """
        _, listener = _site(https_redirect=443)
        answer = _request(
            listener, b"GET /a/b?c=1 HTTP/1.1\r\nHost: example.test:80\r\n\r\n"
        )
        self.assertTrue(
            answer.startswith(b"HTTP/1.1 301 Moved Permanently\r\n"), answer
        )
        self.assertIn(b"\r\nLocation: https://example.test/a/b?c=1\r\n", answer)

    def test_post_and_port(self) -> None:
        """
        A POST gets a 308 (it must stay a POST); another HTTPS port is named.
        """
        _, listener = _site(https_redirect=8443)
        answer = _request(
            listener,
            b"POST /form HTTP/1.1\r\nHost: example.test\r\nContent-Length: 2\r\n\r\nab",
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 308 "), answer)
        self.assertIn(b"\r\nLocation: https://example.test:8443/form\r\n", answer)

    def test_acme_challenge(self) -> None:
        """
        ACME's HTTP-01 challenges are answered where they are asked.
        """
        _, listener = _site(https_redirect=443)
        answer = _request(
            listener,
            b"GET /.well-known/acme-challenge/token HTTP/1.1\r\n"
            b"Host: example.test\r\n\r\n",
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK"), answer)

    def test_not_redirecting(self) -> None:
        """
        A listener without C{https_redirect} serves the request.
        """
        _, listener = _site()
        answer = _request(listener, b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK"), answer)


class HSTSTests(SynchronousTestCase):
    def test_over_tls_only(self) -> None:
        """
        The host's HSTS header is sent over TLS, never over plain HTTP.
        """
        _, listener = _site(hsts={"": b"max-age=31536000"})
        request = b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n"
        self.assertIn(
            b"\r\nStrict-Transport-Security: max-age=31536000\r\n",
            _request(listener, request, secure=True),
        )
        self.assertNotIn(b"Strict-Transport-Security", _request(listener, request))


class ReloadTests(SynchronousTestCase):
    def test_tls_toggle_refused(self) -> None:
        """
        A reload cannot add TLS to, or remove it from, a port it keeps open.
        """
        from txrouter.reloader import _cannot_change_in_place

        folder = Path(tempfile.mkdtemp(prefix="txrouter-listen-"))
        self.addCleanup(shutil.rmtree, folder, True)
        (folder / "pub").mkdir()
        pem = Authority(folder).issue(["a.test"])
        plain = load_config(
            write_routes(folder, "listen: tcp:8443\nroutes: {/: {static: pub}}\n")
        )
        secure = load_config(
            write_routes(
                folder,
                "listen: [{endpoint: 'tcp:8443', "
                f"tls: {{certificates: {pem.name}}}}}]\n"
                "routes: {/: {static: pub}}\n",
            )
        )
        for old, new in ((plain, secure), (secure, plain)):
            [problem] = _cannot_change_in_place(old, new)
            self.assertIn("listen: tcp:8443: TLS is added to or removed", problem)
        self.assertEqual(_cannot_change_in_place(secure, secure), [])
