"""
End to end: C{proxy:} routes of a real, daemonized C{twistd txrouter},
driven over HTTP against real upstreams on 127.0.0.1: a recording stdlib
server (TCP and UNIX socket, L{tests.upstreams.RecordingUpstream}) and nginx.
"""

from __future__ import annotations

import http.client
import json
import posixpath
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support import Txrouter, free_port, settled, wait_until
from tests.upstreams import Nginx, RecordingUpstream, big_body, sha256

pytestmark = pytest.mark.e2e

FIVE_MIB = 5 * 1024 * 1024


@dataclass
class Answer:
    """
    A response as the client got it: every header line, duplicates kept.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def values(self, name: str) -> list[str]:
        """
        Every value of header C{name} (any case), in order.
        """
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def names(self) -> set[str]:
        """
        The lower-case names of all response headers.
        """
        return {n.lower() for n, _ in self.headers}

    def json(self) -> Any:
        return json.loads(self.body)


def fetch(
    port: int,
    method: str,
    target: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: Sequence[tuple[str, str]] = (),
    connection: http.client.HTTPConnection | None = None,
    timeout: float = 30.0,
) -> Answer:
    """
    One request sent exactly as given (raw target, header lines in order,
    duplicates kept) on C{connection} or on a new connection that is closed
    afterwards.

    A body that is not C{bytes} is sent with chunked framing.
    """
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        names = {n.lower() for n, _ in headers}
        conn.putrequest(
            method, target, skip_host="host" in names, skip_accept_encoding=True
        )
        for name, value in headers:
            conn.putheader(name, value)
        chunked = body is not None and not isinstance(body, bytes)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        elif body is not None and "content-length" not in names:
            conn.putheader("Content-Length", str(len(body)))  # type: ignore[arg-type]
        conn.endheaders(body, encode_chunked=chunked)  # type: ignore[arg-type]
        response = conn.getresponse()
        data = response.read()
        return Answer(response.status, response.getheaders(), data)
    finally:
        if connection is None:
            conn.close()


def exchange_raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """
    Send raw bytes, then read until the server closes (or C{timeout}
    passes without a byte).
    """
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        try:
            while chunk := s.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return received


def resolves_under(target: str, base: str) -> bool:
    """
    Whether C{target}'s path, decoded and with dot-segments resolved the
    way a file server would, stays inside C{base} (C{/v1/}).
    """
    if not target.startswith(base):
        return False
    path = unquote(urlsplit(target).path).replace("\\", "/")
    resolved = posixpath.normpath(path)
    return resolved + "/" == base or resolved.startswith(base)


def _start_all(starters: Sequence[Any]) -> None:
    """
    Start each server in turn; if one fails, stop those already started.
    """
    started = []
    try:
        for server in starters:
            started.append(server.start())
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise


def stop_all(server: Txrouter, *upstreams: Any) -> None:
    """
    Stop the router, then every upstream, even if one of them fails.
    """
    try:
        server.stop()
    finally:
        for upstream in upstreams:
            upstream.stop()


def serve(routes: str, *upstreams: Any) -> Txrouter:
    """
    Start a router for C{routes}; if it cannot start, stop it and the
    C{upstreams} already running before failing.
    """
    server = Txrouter(routes)
    try:
        server.start()
    except BaseException:
        stop_all(server, *upstreams)
        raise
    return server


class ProxyTests(SynchronousTestCase):
    """
    One daemon with several proxy routes to recording upstreams (two over
    TCP, one over a UNIX socket, one over TLS), a refused port and a
    failover list.
    """

    upstream: ClassVar[RecordingUpstream]
    second: ClassVar[RecordingUpstream]
    unix: ClassVar[RecordingUpstream]
    secure: ClassVar[RecordingUpstream]
    server: ClassVar[Txrouter]

    @classmethod
    def setUpClass(cls) -> None:
        cls.upstream = RecordingUpstream()
        cls.second = RecordingUpstream()
        cls.unix = RecordingUpstream(unix=True)
        cls.secure = RecordingUpstream(tls=True)
        _start_all([cls.upstream, cls.second, cls.unix, cls.secure])
        up = cls.upstream.url
        refused = f"http://127.0.0.1:{free_port()}/"
        routes = f"""
listen: tcp:{{port}}:interface=127.0.0.1
routes:
  /api/: {{proxy: "{up}/v1/"}}
  /nohost/: {{proxy: "{up}/v1/", preserve_host: false}}
  /short/: {{proxy: "{up}/v1/", timeout: 1}}
  /closing/: {{proxy: "{up}/closing/"}}
  /refused/: {{proxy: "{refused}", connect_timeout: 30}}
  /failover/: {{proxy: ["{refused}", "{up}/fo/"]}}
  /lb/: {{proxy: ["{up}/lb-a/", "{cls.second.url}/lb-b/"]}}
  /sock/: {{proxy: "{cls.unix.url}"}}
  /tls/: {{proxy: "{cls.secure.url}/"}}
  /tlsoff/: {{proxy: "{cls.secure.url}/", tls_verify: false}}
"""
        cls.server = serve(routes, cls.upstream, cls.second, cls.unix, cls.secure)

    @classmethod
    def tearDownClass(cls) -> None:
        stop_all(cls.server, cls.upstream, cls.second, cls.unix, cls.secure)

    def fetch(self, method: str, target: str, **kwargs: Any) -> Answer:
        return fetch(self.server.port, method, target, **kwargs)

    def only(self, tag: str, upstream: RecordingUpstream | None = None) -> Any:
        """
        The one request tagged C{tag} that reached the upstream.
        """
        seen = (upstream or self.upstream).seen(tag)
        self.assertEqual(len(seen), 1, seen)
        return seen[0]

    def assertServing(self) -> None:
        """
        The daemon still proxies a plain request.
        """
        self.assertEqual(self.fetch("GET", "/api/status/200").status, 200)

    # Path mapping

    def test_path_and_query_appended(self) -> None:
        """
        The path after the prefix is appended to the upstream's base path,
        and the query string is kept as sent.
        """
        answer = self.fetch("GET", "/api/x/y?q=1&r=2&tag=path")
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(self.only("path").target, "/v1/x/y?q=1&r=2&tag=path")

    def test_bare_prefix_redirects(self) -> None:
        """
        The prefix without its slash gets a 301 to the slashed form, and
        nothing is sent upstream.
        """
        before = len(self.upstream.seen())
        answer = self.fetch("GET", "/api")
        self.assertEqual(answer.status, 301)
        self.assertEqual(answer.values("location"), ["/api/"])
        self.assertEqual(len(self.upstream.seen()), before)

    def test_dot_segments_stay_under_base(self) -> None:
        """
        No spelling of dot-segments (plain, percent-encoded, with an encoded
        slash or backslash) takes the upstream path above C{/v1/}: the
        router either refuses with 400 or sends a path that resolves
        inside the base.
        """
        paths = [
            "/api/a/../b",
            "/api/../../etc/passwd",
            "/api/%2e%2e/%2e%2e/x",
            "/api/.%2E/%2e./x",
            "/api/..%2fx",
            "/api/a/..%2f..%2f..%2fetc",
            "/api/..%5c..%5cx",
            "/api/a/./b/../../../../x",
            "/api/..",
        ]
        for i, path in enumerate(paths):
            tag = f"dot{i}"
            answer = self.fetch("GET", f"{path}?tag={tag}")
            self.assertIn(answer.status, (200, 400), (path, answer))
            seen = self.upstream.seen(tag)
            self.assertEqual(len(seen), 1 if answer.status == 200 else 0, path)
            for request in seen:
                self.assertTrue(
                    resolves_under(request.target, "/v1/"),
                    f"{path} reached the upstream as {request.target}",
                )
        self.assertEqual(self.only("dot0").path, "/v1/b")

    def test_encoded_characters_passed_as_sent(self) -> None:
        """
        Percent-encoded characters, C{%2F} included, reach the upstream
        exactly as the client sent them.
        """
        target = "/api/a%20b/c%2Fd/%25e?x=%26y&tag=enc"
        self.assertEqual(self.fetch("GET", target).status, 200)
        self.assertEqual(self.only("enc").target, "/v1/a%20b/c%2Fd/%25e?x=%26y&tag=enc")

    # Request: method, body, headers

    def test_method_body_and_headers_forwarded(self) -> None:
        """
        Each method arrives upstream with its body, Content-Type and an
        end-to-end header.
        """
        for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            tag = f"method-{method}"
            payload = f"payload for {method}".encode()
            answer = self.fetch(
                method,
                f"/api/echo?tag={tag}",
                body=payload,
                headers=[("Content-Type", "text/x-test"), ("X-Test", method)],
            )
            self.assertEqual(answer.status, 200, method)
            seen = self.only(tag)
            self.assertEqual(seen.method, method)
            self.assertEqual(seen.body, payload)
            self.assertEqual(seen.values("content-type"), ["text/x-test"])
            self.assertEqual(seen.values("x-test"), [method])
            self.assertEqual(seen.values("content-length"), [str(len(payload))])

    def test_get_without_body(self) -> None:
        """
        A GET without a body is forwarded with no body framing at all.
        """
        self.assertEqual(self.fetch("GET", "/api/echo?tag=nobody").status, 200)
        seen = self.only("nobody")
        self.assertEqual(seen.framing, "none")
        self.assertEqual(seen.body, b"")

    def test_chunked_request_reframed(self) -> None:
        """
        A body the client sent chunked arrives upstream whole, with
        Content-Length and without Transfer-Encoding.
        """
        parts = [b"hello ", b"chunked ", b"world"]
        answer = self.fetch("POST", "/api/echo?tag=chunked", body=iter(parts))
        self.assertEqual(answer.status, 200)
        seen = self.only("chunked")
        self.assertEqual(seen.body, b"hello chunked world")
        self.assertEqual(seen.framing, "length")
        self.assertEqual(seen.values("content-length"), ["19"])
        self.assertNotIn("transfer-encoding", seen.names())

    def test_empty_post(self) -> None:
        """
        A POST with an empty body arrives with C{Content-Length: 0}.
        """
        answer = self.fetch("POST", "/api/echo?tag=empty", body=b"")
        self.assertEqual(answer.status, 200)
        seen = self.only("empty")
        self.assertEqual(seen.method, "POST")
        self.assertEqual(seen.values("content-length"), ["0"])
        self.assertEqual(seen.body, b"")

    def test_duplicate_request_headers_kept(self) -> None:
        """
        Two C{Cookie} lines from the client arrive as two lines, or as one
        correctly joined value.
        """
        self.fetch(
            "GET",
            "/api/echo?tag=cookies",
            headers=[("Cookie", "a=1"), ("Cookie", "b=2")],
        )
        cookies = self.only("cookies").values("cookie")
        self.assertIn(cookies, (["a=1", "b=2"], ["a=1; b=2"]))

    def test_hop_by_hop_request_headers_removed(self) -> None:
        """
        C{Connection} and the headers it names, C{Keep-Alive}, C{TE},
        C{Upgrade} and C{Proxy-Connection} stay between client and router;
        other headers go on.
        """
        answer = self.fetch(
            "GET",
            "/api/echo?tag=hop-request",
            headers=[
                ("Connection", "close, X-Custom-Hop"),
                ("X-Custom-Hop", "secret"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Upgrade", "websocket"),
                ("Proxy-Connection", "keep-alive"),
                ("X-Kept", "yes"),
            ],
        )
        self.assertEqual(answer.status, 200)
        seen = self.only("hop-request")
        for name in ("x-custom-hop", "keep-alive", "te", "upgrade", "proxy-connection"):
            self.assertNotIn(name, seen.names())
        for value in seen.values("connection"):
            self.assertNotIn("x-custom-hop", value.lower())
        self.assertEqual(seen.values("x-kept"), ["yes"])

    def test_host_preserved(self) -> None:
        """
        The client's C{Host} is passed on unchanged.
        """
        self.fetch(
            "GET", "/api/echo?tag=host", headers=[("Host", "front.example:8443")]
        )
        self.assertEqual(self.only("host").values("host"), ["front.example:8443"])

    def test_host_not_preserved(self) -> None:
        """
        With C{preserve_host: false} the upstream gets its own host:port.
        """
        self.fetch(
            "GET", "/nohost/echo?tag=nohost", headers=[("Host", "front.example")]
        )
        seen = self.only("nohost")
        self.assertEqual(seen.values("host"), [f"127.0.0.1:{self.upstream.port}"])
        self.assertEqual(seen.values("x-forwarded-host"), ["front.example"])

    # Forwarding headers

    def test_forwarding_headers_are_the_routers(self) -> None:
        """
        From an untrusted peer, client-sent forwarding headers are dropped
        and replaced by the router's own: the real address, scheme, host and
        route prefix, and an RFC 7239 C{Forwarded} element.
        """
        self.fetch(
            "GET",
            "/api/echo?tag=fwd",
            headers=[
                ("Host", "front.example"),
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "evil.example"),
                ("X-Forwarded-Prefix", "/evil"),
                ("Forwarded", "for=6.6.6.6;proto=https"),
            ],
        )
        seen = self.only("fwd")
        self.assertEqual(seen.values("x-forwarded-for"), ["127.0.0.1"])
        self.assertEqual(seen.values("x-forwarded-proto"), ["http"])
        self.assertEqual(seen.values("x-forwarded-host"), ["front.example"])
        self.assertEqual(seen.values("x-forwarded-prefix"), ["/api"])
        self.assertEqual(
            seen.values("forwarded"), ['for=127.0.0.1;proto=http;host="front.example"']
        )

    # Response

    def test_set_cookie_lines_kept(self) -> None:
        """
        Two C{Set-Cookie} lines from the upstream reach the client as two.
        """
        answer = self.fetch("GET", "/api/echo")
        self.assertEqual(answer.values("set-cookie"), ["a=1; Path=/", "b=2; Path=/"])

    def test_hop_by_hop_response_headers_removed(self) -> None:
        """
        The upstream's C{Connection: close, X-Hop}, C{X-Hop}, C{Keep-Alive}
        and C{Proxy-Connection} do not reach the client (whose connection
        stays open); end-to-end headers do.
        """
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        self.addCleanup(conn.close)
        answer = fetch(self.server.port, "GET", "/api/echo", connection=conn)
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.values("x-end-to-end"), ["kept"])
        self.assertNotIn("x-hop", answer.names())
        self.assertNotIn("keep-alive", answer.names())
        self.assertNotIn("proxy-connection", answer.names())
        for value in answer.values("connection"):
            self.assertNotIn("x-hop", value.lower())
            self.assertNotIn("close", value.lower())
        again = fetch(self.server.port, "GET", "/api/status/200", connection=conn)
        self.assertEqual(again.status, 200)

    def test_upstream_close_option_honoured(self) -> None:
        """
        After a response with C{Connection: close, X-Hop} the router does not
        send another request on that upstream connection (RFC 9112 section
        9.6), so the next request, a POST that cannot be retried, still gets
        its answer.
        """
        first = self.fetch("GET", "/closing/linger-close?tag=close1")
        self.assertEqual((first.status, first.body), (200, b"bye\n"))
        second = self.fetch(
            "POST", "/closing/status/200?tag=close2", body=b"once", timeout=10
        )
        self.assertEqual(second.status, 200, second.body)
        used = {self.only(tag).connection for tag in ("close1", "close2")}
        self.assertEqual(len(used), 2)

    def test_status_codes_passed_through(self) -> None:
        """
        201, 204, 304, 404 and 500 reach the client as they are, one after
        another on one keep-alive connection (so bodiless answers are
        framed right).
        """
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        self.addCleanup(conn.close)
        for code in (201, 204, 304, 404, 500, 200):
            answer = fetch(
                self.server.port, "GET", f"/api/status/{code}", connection=conn
            )
            self.assertEqual(answer.status, code)
            expected = b"" if code in (204, 304) else b"status %d\n" % code
            self.assertEqual(answer.body, expected, code)
            self.assertEqual(answer.values("etag"), ['"v1"'])

    def test_no_content_without_length(self) -> None:
        """
        A 204 reaches the client without C{Content-Length}, as the upstream
        sent it (RFC 9110 section 8.6: a server MUST NOT send one).
        """
        answer = self.fetch("GET", "/api/status/204")
        self.assertEqual(answer.status, 204)
        self.assertEqual(answer.values("content-length"), [])

    def test_not_modified_keeps_length(self) -> None:
        """
        A 304 carries the upstream's own C{Content-Length} (the length of the
        200 it stands for) or none, never a made-up 0 (RFC 9110 section 8.6).
        """
        answer = self.fetch("GET", "/api/status/304")
        self.assertEqual(answer.status, 304)
        self.assertIn(answer.values("content-length"), ([], ["13"]))

    def test_head(self) -> None:
        """
        HEAD gets the upstream's status and Content-Length and no body, and
        the connection stays usable.
        """
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        self.addCleanup(conn.close)
        head = fetch(
            self.server.port, "HEAD", "/api/big?n=1234&tag=head", connection=conn
        )
        self.assertEqual(head.status, 200)
        self.assertEqual(head.body, b"")
        self.assertEqual(head.values("content-length"), ["1234"])
        self.assertEqual(self.only("head").method, "HEAD")
        get = fetch(self.server.port, "GET", "/api/big?n=1234", connection=conn)
        self.assertEqual(get.body, big_body(1234))

    # Connections, streaming, big bodies

    def test_upstream_connections_reused(self) -> None:
        """
        Twenty sequential requests (each on a new client connection) reach
        the upstream on at most three connections.
        """
        for _ in range(20):
            self.assertEqual(self.fetch("GET", "/api/status/200?tag=ka").status, 200)
        seen = self.upstream.seen("ka")
        self.assertEqual(len(seen), 20)
        ports = {r.client_port for r in seen}
        self.assertLessEqual(len(ports), 3, ports)

    def test_response_streamed(self) -> None:
        """
        The first chunk of a response reaches the client while the upstream
        still holds back the rest.
        """
        gate = self.upstream.stream_gate
        gate.clear()
        self.addCleanup(gate.set)
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/api/stream")
        response = conn.getresponse()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.readline(), b"first chunk\n")
        self.assertFalse(gate.is_set())
        gate.set()
        self.assertEqual(response.read(), b"second chunk\n")

    def test_stalled_body_aborts_client(self) -> None:
        """
        A body that stops for the route's C{timeout} (1 s on /short/) ends
        the client's connection after what had arrived, instead of leaving
        the client waiting for bytes that will not come.
        """
        gate = self.upstream.stream_gate
        gate.clear()
        self.addCleanup(gate.set)
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/short/stream")
        response = conn.getresponse()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.readline(), b"first chunk\n")
        started = time.monotonic()
        # Aborted: a reset, or a close, depending on what was buffered.
        with self.assertRaises((ConnectionResetError, http.client.IncompleteRead)):
            response.read()
        self.assertLess(time.monotonic() - started, 5)
        self.assertServing()

    def test_slow_client_pauses_upstream(self) -> None:
        """
        A client that stops reading pauses the upstream: of a 256 MiB answer
        only a bounded part leaves the upstream; when the client then goes
        away, the router drops the upstream connection.
        """
        total = 256 * 1024 * 1024
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.settimeout(10)
            s.connect(("127.0.0.1", self.server.port))
            s.sendall(
                b"GET /api/flood?n=%d&tag=flood HTTP/1.1\r\nHost: x\r\n\r\n" % total
            )
            self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 200"))
            sent = settled(lambda: self.upstream.sent.get("flood", 0))
            self.assertLess(sent, 64 * 1024 * 1024, "the router buffered the answer")
        wait_until(
            lambda: [r for r in self.upstream.dropped if "tag=flood" in r.target],
            "the upstream connection to be dropped",
            10,
        )
        self.assertServing()

    def test_big_request_body(self) -> None:
        """
        A 5 MiB POST reaches the upstream whole, with its length framed.
        """
        body = big_body(FIVE_MIB + 7)
        answer = self.fetch("POST", "/api/echo?tag=bigpost", body=body)
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json()["length"], len(body))
        self.assertEqual(answer.json()["sha256"], sha256(body))
        self.assertEqual(
            self.only("bigpost").values("content-length"), [str(len(body))]
        )

    def test_big_response_body(self) -> None:
        """
        A 5 MiB response reaches the client whole.
        """
        answer = self.fetch("GET", f"/api/big?n={FIVE_MIB}")
        self.assertEqual(answer.status, 200)
        self.assertEqual(len(answer.body), FIVE_MIB)
        self.assertEqual(sha256(answer.body), sha256(big_body(FIVE_MIB)))

    # Failures

    def test_refused_upstream(self) -> None:
        """
        A refused upstream gets a short plain 502 at once, well before
        C{connect_timeout} (30 s here); the server keeps serving.
        """
        started = time.monotonic()
        answer = self.fetch("GET", "/refused/anything")
        elapsed = time.monotonic() - started
        self.assertEqual(answer.status, 502)
        self.assertIn("text/plain", " ".join(answer.values("content-type")))
        self.assertLess(elapsed, 10, "a refused connection waited for the timeout")
        self.assertServing()

    def test_timeout(self) -> None:
        """
        An upstream that never answers gets a 504 after the route's
        C{timeout}, its connection is dropped, and meanwhile other requests
        are served.
        """
        outcome: list[Answer] = []
        client = threading.Thread(
            target=lambda: outcome.append(self.fetch("GET", "/short/hang?tag=hang"))
        )
        client.start()
        self.addCleanup(client.join, 30)
        wait_until(lambda: self.upstream.seen("hang"), "the hanging request", 10)
        self.assertServing()
        client.join(20)
        self.assertEqual([a.status for a in outcome], [504])
        wait_until(
            lambda: [s for s in self.upstream.dropped if "tag=hang" in s.target],
            "the router to drop the timed-out upstream connection",
            10,
        )
        self.assertServing()

    def test_truncated_response(self) -> None:
        """
        An upstream that breaks off mid-body makes the client's read fail:
        never a complete-looking response, never a wait.
        """
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        self.addCleanup(conn.close)
        try:
            conn.request("GET", "/api/truncate")
            response = conn.getresponse()
            status = response.status
            body = response.read()
        except (http.client.IncompleteRead, ConnectionError):
            pass
        else:
            self.assertGreaterEqual(
                status, 500, f"a truncated body looked complete: {status} {body!r}"
            )
        self.assertServing()

    def test_garbage_response(self) -> None:
        """
        An upstream that answers with something that is not HTTP gets a 502.
        """
        answer = self.fetch("GET", "/api/garbage")
        self.assertEqual(answer.status, 502)
        self.assertServing()

    # Several upstreams

    def test_failover(self) -> None:
        """
        With a refused upstream first in the list, every request succeeds on
        the next one.
        """
        statuses = [
            self.fetch("GET", "/failover/status/200?tag=fo").status for _ in range(10)
        ]
        self.assertEqual(statuses, [200] * 10)
        seen = self.upstream.seen("fo")
        self.assertEqual(len(seen), 10)
        self.assertTrue(all(r.path == "/fo/status/200" for r in seen))

    def test_spread_over_upstreams(self) -> None:
        """
        Requests to a route with two good upstreams reach both.
        """
        for _ in range(10):
            self.assertEqual(self.fetch("GET", "/lb/status/200?tag=lb").status, 200)
        first = self.upstream.seen("lb")
        second = self.second.seen("lb")
        self.assertEqual(len(first) + len(second), 10)
        self.assertTrue(first and second, (len(first), len(second)))
        self.assertTrue(all(r.path.startswith("/lb-a/") for r in first))
        self.assertTrue(all(r.path.startswith("/lb-b/") for r in second))

    # Smuggling and disconnects

    def test_request_smuggling(self) -> None:
        """
        A request with ambiguous framing cannot get a second, hidden request
        to the upstream: it is refused, or forwarded alone with its body
        re-framed by length, and the connection is not read further.
        """
        hidden = b"GET /api/admin?tag=smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        cases = [
            (b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
            (b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", b"0\r\n\r\n"),
            (b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
            (b"Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
            (b"Content-Length: 0\r\nContent-Length: %d\r\n" % len(hidden), b""),
        ]
        for i, (framing, body) in enumerate(cases):
            tag = f"smuggle{i}"
            reply = exchange_raw(
                self.server.port,
                b"POST /api/echo?tag=%s HTTP/1.1\r\nHost: x\r\n%s\r\n%s%s"
                % (tag.encode(), framing, body, hidden),
            )
            self.assertTrue(reply.startswith((b"HTTP/1.1 400", b"HTTP/1.1 200")), reply)
            for seen in self.upstream.seen(tag):
                self.assertEqual(seen.framing, "length")
                self.assertEqual(seen.body, b"")
        self.assertEqual(self.upstream.seen("smuggled"), [])
        self.assertServing()

    def test_client_disconnect_cancels_upstream(self) -> None:
        """
        A client that goes away mid-request makes the router drop the
        upstream connection at once, long before the upstream answers.
        """
        with socket.create_connection(("127.0.0.1", self.server.port), 10) as s:
            s.sendall(b"GET /api/slow?s=20&tag=gone HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_until(lambda: self.upstream.seen("gone"), "the slow request", 10)
            # Not a timing assertion: only lets the upstream's handler enter
            # its slow answer before the client leaves.
            time.sleep(0.2)
        wait_until(
            lambda: [r for r in self.upstream.dropped if "tag=gone" in r.target],
            "the upstream connection to be dropped",
            8,
        )
        self.assertServing()

    def test_tls_verified_by_default(self) -> None:
        """
        An C{https://} upstream whose certificate nobody trusts gets a 502:
        certificates are verified unless the route says C{tls_verify: false}.
        """
        answer = self.fetch("GET", "/tls/echo?tag=tls-verified")
        self.assertEqual(answer.status, 502, answer.body)
        self.assertEqual(self.secure.seen("tls-verified"), [])

    def test_tls_verify_off(self) -> None:
        """
        With C{tls_verify: false} the same upstream is reached over TLS.
        """
        answer = self.fetch("GET", "/tlsoff/echo?tag=tls-off")
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(self.only("tls-off", self.secure).target, "/echo?tag=tls-off")

    def test_unix_upstream(self) -> None:
        """
        A C{unix:} upstream gets requests with the path after the prefix,
        bodies included.
        """
        answer = self.fetch("POST", "/sock/echo/x?tag=unix", body=b"over a socket")
        self.assertEqual(answer.status, 200, answer.body)
        seen = self.only("unix", self.unix)
        self.assertEqual(seen.target, "/echo/x?tag=unix")
        self.assertEqual(seen.body, b"over a socket")
        self.assertEqual(self.fetch("GET", "/sock/status/404").status, 404)


class TrustedProxyTests(SynchronousTestCase):
    """
    A daemon whose C{trusted_proxies} holds the test client's address.
    """

    upstream: ClassVar[RecordingUpstream]
    server: ClassVar[Txrouter]

    @classmethod
    def setUpClass(cls) -> None:
        cls.upstream = RecordingUpstream().start()
        routes = f"""
listen: tcp:{{port}}:interface=127.0.0.1
trusted_proxies: [127.0.0.1]
routes:
  /api/: {{proxy: "{cls.upstream.url}/v1/"}}
"""
        cls.server = serve(routes, cls.upstream)

    @classmethod
    def tearDownClass(cls) -> None:
        stop_all(cls.server, cls.upstream)

    def forwarded_for(self, tag: str, *values: str) -> list[str]:
        fetch(
            self.server.port,
            "GET",
            f"/api/echo?tag={tag}",
            headers=[("X-Forwarded-For", v) for v in values],
        )
        [seen] = self.upstream.seen(tag)
        return seen.values("x-forwarded-for")

    def test_chain_extended(self) -> None:
        """
        From a trusted peer, a client-sent C{X-Forwarded-For} is extended
        with the peer's address.
        """
        self.assertEqual(self.forwarded_for("one", "6.6.6.6"), ["6.6.6.6, 127.0.0.1"])

    def test_several_lines_extended(self) -> None:
        """
        Several C{X-Forwarded-For} lines are joined in order before the
        peer's address.
        """
        self.assertEqual(
            self.forwarded_for("two", "1.1.1.1", "2.2.2.2, 3.3.3.3"),
            ["1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1"],
        )


class NginxInteropTests(SynchronousTestCase):
    """
    A daemon proxying to a real nginx started on a free port.
    """

    nginx: ClassVar[Nginx]
    server: ClassVar[Txrouter]

    @classmethod
    def setUpClass(cls) -> None:
        cls.nginx = Nginx(free_port()).start()
        routes = f"""
listen: tcp:{{port}}:interface=127.0.0.1
routes:
  /ng/: {{proxy: "{cls.nginx.url}/"}}
"""
        cls.server = serve(routes, cls.nginx)

    @classmethod
    def tearDownClass(cls) -> None:
        stop_all(cls.server, cls.nginx)

    def fetch(self, method: str, target: str, **kwargs: Any) -> Answer:
        return fetch(self.server.port, method, target, **kwargs)

    def test_hello_keep_alive(self) -> None:
        """
        nginx's answer comes through, and ten requests reach nginx on at
        most three connections (its own connection numbers).
        """
        answer = self.fetch("GET", "/ng/hello")
        self.assertEqual((answer.status, answer.body), (200, b"hello from nginx\n"))
        numbers = {self.fetch("GET", "/ng/connection").body for _ in range(10)}
        self.assertLessEqual(len(numbers), 3, numbers)

    def test_forwarding_headers(self) -> None:
        """
        nginx sees the client's address, the scheme and the client's Host.
        """
        answer = self.fetch("GET", "/ng/echo-headers")
        self.assertEqual(
            answer.body.decode(), f"127.0.0.1|http|127.0.0.1:{self.server.port}\n"
        )

    def test_big_download(self) -> None:
        """
        nginx's 5 MiB static file reaches the client whole.
        """
        answer = self.fetch("GET", "/ng/big.bin")
        self.assertEqual(answer.status, 200)
        self.assertEqual(len(answer.body), Nginx.BIG)
        self.assertEqual(sha256(answer.body), sha256(big_body(Nginx.BIG)))

    def test_big_upload(self) -> None:
        """
        A 5 MiB PUT reaches nginx whole (WebDAV stores it) and comes back
        whole.
        """
        body = big_body(FIVE_MIB + 3)
        put = self.fetch("PUT", "/ng/dav/upload.bin", body=body)
        self.assertIn(put.status, (201, 204), put.body)
        stored = (self.nginx.dir / "www" / "dav" / "upload.bin").read_bytes()
        self.assertEqual(sha256(stored), sha256(body))
        got = self.fetch("GET", "/ng/dav/upload.bin")
        self.assertEqual(sha256(got.body), sha256(body))
