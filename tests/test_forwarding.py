"""
Unit tests of L{txrouter.forwarding}: the upstream path kept inside its
base, the headers sent upstream and relayed downstream, and the trusted
proxy list. Pure functions, table-driven.
"""

from __future__ import annotations

import pytest
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from txrouter import forwarding as forwarding_module
from txrouter.forwarding import (
    Forwarding,
    TrustedProxies,
    UnsafePath,
    downstream_headers,
    upstream_path,
)

pytestmark = pytest.mark.unit


def upstream_headers(incoming: Headers, fwd: Forwarding, host: bytes) -> Headers:
    """
    L{txrouter.forwarding.upstream_headers}, its C{(name, value)} pairs
    gathered in a L{Headers} for lookups (order and repeats kept).
    """
    out = Headers()
    for name, value in forwarding_module.upstream_headers(incoming, fwd, host):
        out.addRawHeader(name, value)
    return out


def forwarded_elements(value: bytes) -> list[dict[bytes, bytes]]:
    """
    Parse an RFC 7239 C{Forwarded} value into its elements, each a mapping
    of lower-cased parameter name to (unquoted) value. Commas and semicolons
    inside a quoted-string, and backslash-escaped quotes, are honoured.
    """
    elements: list[dict[bytes, bytes]] = [{}]
    pair, quoted, escaped = b"", False, False

    def end_pair() -> None:
        name, _, raw = pair.strip().partition(b"=")
        if name:
            elements[-1][name.lower()] = raw

    for byte in value:
        char = bytes([byte])
        if escaped:
            pair, escaped = pair + char, False
        elif quoted and char == b"\\":
            escaped = True
        elif char == b'"':
            quoted = not quoted
        elif not quoted and char in b";,":
            end_pair()
            pair = b""
            if char == b",":
                elements.append({})
        else:
            pair += char
    end_pair()
    return elements


def forwarding(
    client: str | None = "203.0.113.7",
    scheme: bytes = b"https",
    host: bytes = b"example.com",
    prefix: bytes = b"/api",
    trusted: bool = False,
) -> Forwarding:
    """
    A L{Forwarding} with defaults for the fields a test does not care about.
    """
    return Forwarding(client, scheme, host, prefix, trusted)


def headers(*pairs: tuple[bytes, bytes]) -> Headers:
    """
    Headers from (name, value) pairs, a repeated name giving repeated lines.
    """
    result = Headers()
    for name, value in pairs:
        result.addRawHeader(name, value)
    return result


class UpstreamPathTests(SynchronousTestCase):
    """
    L{upstream_path} joins the base and the raw segments after the prefix,
    resolving dot-segments but never above the base.
    """

    CASES = [
        # rest segments, query, expected path (base b"/v1/")
        ([], b"", b"/v1/"),
        ([b""], b"", b"/v1/"),
        ([b"a"], b"", b"/v1/a"),
        ([b"a", b"b"], b"", b"/v1/a/b"),
        ([b"a", b""], b"", b"/v1/a/"),
        ([b"a", b"b", b""], b"", b"/v1/a/b/"),
        ([b"a"], b"x=1&y=2", b"/v1/a?x=1&y=2"),
        ([b""], b"q", b"/v1/?q"),
        ([b"a", b"..", b"b"], b"", b"/v1/b"),
        ([b"a", b"b", b".."], b"", b"/v1/a/"),
        ([b".."], b"", b"/v1/"),
        ([b"..", b"..", b"etc", b"passwd"], b"", b"/v1/etc/passwd"),
        ([b"a", b"..", b"..", b"..", b"b"], b"", b"/v1/b"),
        ([b"%2e%2e", b"x"], b"", b"/v1/x"),
        ([b"%2E%2e", b"x"], b"", b"/v1/x"),
        ([b".%2e", b"x"], b"", b"/v1/x"),
        ([b"a", b"%2e%2e"], b"", b"/v1/"),
        ([b".", b"a"], b"", b"/v1/a"),
        ([b"a", b"."], b"", b"/v1/a/"),
        ([b"a", b"%2e"], b"", b"/v1/a/"),
        ([b"a", b"", b".."], b"", b"/v1/a/"),
        ([b"..."], b"", b"/v1/..."),
        ([b"a..b"], b"", b"/v1/a..b"),
        ([b"a%20b"], b"", b"/v1/a%20b"),
        ([b"a%2Fb"], b"", b"/v1/a%2Fb"),
        ([b"caf%C3%A9"], b"", b"/v1/caf%C3%A9"),
        ([b"%252e%252e", b"x"], b"", b"/v1/%252e%252e/x"),
        ([b".."], b"next=../../x", b"/v1/?next=../../x"),
    ]

    def test_paths(self) -> None:
        """
        Each (segments, query) maps to the expected path under C{/v1/}.
        """
        for rest, query, expected in self.CASES:
            self.assertEqual(
                upstream_path(b"/v1/", rest, query), expected, f"for {rest!r} {query!r}"
            )

    ROOT_CASES = [
        ([], b"", b"/"),
        ([b""], b"", b"/"),
        ([b"x"], b"", b"/x"),
        ([b"..", b"x"], b"", b"/x"),
        ([b"a", b""], b"q=1", b"/a/?q=1"),
        ([b"%2e%2e", b"%2e%2e"], b"", b"/"),
    ]

    def test_root_base(self) -> None:
        """
        Under base C{/} the same rules hold and nothing climbs above C{/}.
        """
        for rest, query, expected in self.ROOT_CASES:
            self.assertEqual(
                upstream_path(b"/", rest, query), expected, f"for {rest!r} {query!r}"
            )

    UNSAFE = [
        b"..%2f",
        b"..%2F",
        b"%2e%2e%2f",
        b"%2E%2E%2F",
        b"..%5c",
        b"..%5C",
        b"..\\",
        b".%2f",
        b"..%2f..",
        b"a%2f..",
        b"%2f..",
        b"%5c..",
    ]

    def test_hidden_separator_next_to_dots(self) -> None:
        """
        A segment that hides a separator next to a dot-segment is refused.
        """
        for segment in self.UNSAFE:
            for rest in ([segment, b"etc"], [b"a", segment], [segment]):
                try:
                    path = upstream_path(b"/v1/", rest, b"")
                except UnsafePath:
                    continue
                self.fail(f"{rest!r} was not refused: gave {path!r}")

    def test_unsafe_is_value_error(self) -> None:
        """
        L{UnsafePath} is a C{ValueError}, so generic handlers still see it.
        """
        self.assertTrue(issubclass(UnsafePath, ValueError))


class UpstreamHeadersTests(SynchronousTestCase):
    """
    L{upstream_headers} drops hop-by-hop and framing headers, keeps the
    rest (repeated ones repeated), and sets the forwarding headers itself.
    """

    HOP_BY_HOP = [
        (b"Connection", b"keep-alive"),
        (b"Keep-Alive", b"timeout=5"),
        (b"TE", b"trailers"),
        (b"Trailer", b"X-Checksum"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"websocket"),
        (b"Proxy-Connection", b"keep-alive"),
    ]

    def test_hop_by_hop_removed(self) -> None:
        """
        Each hop-by-hop header is left out.
        """
        for name, value in self.HOP_BY_HOP:
            out = upstream_headers(
                headers((name, value), (b"Accept", b"*/*")), forwarding(), b"up"
            )
            self.assertFalse(out.hasHeader(name), f"for {name!r}")
            self.assertEqual(out.getRawHeaders(b"accept"), [b"*/*"], f"for {name!r}")

    def test_connection_tokens_removed(self) -> None:
        """
        Headers named in C{Connection}, in any case, are left out.
        """
        incoming = headers(
            (b"Connection", b"close, X-Private"),
            (b"Connection", b"x-OTHER"),
            (b"X-Private", b"secret"),
            (b"X-Other", b"1"),
            (b"X-Kept", b"2"),
        )
        out = upstream_headers(incoming, forwarding(), b"up")
        for name in (b"connection", b"x-private", b"x-other"):
            self.assertFalse(out.hasHeader(name), name)
        self.assertEqual(out.getRawHeaders(b"x-kept"), [b"2"])

    def test_framing_and_host_replaced(self) -> None:
        """
        C{Content-Length} and C{Expect} are dropped and C{Host} is the given
        one, never the client's.
        """
        incoming = headers(
            (b"Content-Length", b"5"),
            (b"Expect", b"100-continue"),
            (b"Host", b"client.example"),
        )
        out = upstream_headers(incoming, forwarding(), b"upstream:8080")
        self.assertFalse(out.hasHeader(b"content-length"))
        self.assertFalse(out.hasHeader(b"expect"))
        self.assertEqual(out.getRawHeaders(b"host"), [b"upstream:8080"])

    def test_duplicates_kept(self) -> None:
        """
        Two C{Cookie} lines stay two lines, in order; other headers pass.
        """
        incoming = headers(
            (b"Cookie", b"a=1"),
            (b"Cookie", b"b=2"),
            (b"Authorization", b"Bearer t"),
            (b"Accept-Encoding", b"gzip"),
        )
        out = upstream_headers(incoming, forwarding(), b"up")
        self.assertEqual(out.getRawHeaders(b"cookie"), [b"a=1", b"b=2"])
        self.assertEqual(out.getRawHeaders(b"authorization"), [b"Bearer t"])
        self.assertEqual(out.getRawHeaders(b"accept-encoding"), [b"gzip"])

    SPOOFED = headers(
        (b"X-Forwarded-For", b"6.6.6.6"),
        (b"X-Forwarded-For", b"7.7.7.7"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"evil.example"),
        (b"X-Forwarded-Prefix", b"/evil"),
        (b"Forwarded", b"for=6.6.6.6;proto=https"),
    )

    def test_untrusted_peer_replaced(self) -> None:
        """
        From an untrusted peer, client-sent forwarding headers are dropped
        and the router's own are set.
        """
        out = upstream_headers(
            self.SPOOFED, forwarding(scheme=b"http", trusted=False), b"up"
        )
        self.assertEqual(
            dict(
                (name.lower(), values)
                for name, values in out.getAllRawHeaders()
                if name.lower() != b"host"
            ),
            {
                b"x-forwarded-for": [b"203.0.113.7"],
                b"x-forwarded-proto": [b"http"],
                b"x-forwarded-host": [b"example.com"],
                b"x-forwarded-prefix": [b"/api"],
                b"forwarded": [b'for=203.0.113.7;proto=http;host="example.com"'],
            },
        )

    def test_trusted_peer_extended(self) -> None:
        """
        From a trusted peer the C{X-Forwarded-For} chain and C{Forwarded}
        list are extended, and its proto, host and prefix are kept.
        """
        incoming = headers(
            (b"X-Forwarded-For", b"6.6.6.6"),
            (b"X-Forwarded-Proto", b"https"),
            (b"X-Forwarded-Host", b"public.example"),
            (b"X-Forwarded-Prefix", b"/outer/"),
            (b"Forwarded", b"for=6.6.6.6;proto=https"),
        )
        fwd = forwarding(client="10.0.0.1", scheme=b"http", trusted=True)
        out = upstream_headers(incoming, fwd, b"up")
        self.assertEqual(out.getRawHeaders(b"x-forwarded-for"), [b"6.6.6.6, 10.0.0.1"])
        self.assertEqual(out.getRawHeaders(b"x-forwarded-proto"), [b"https"])
        self.assertEqual(out.getRawHeaders(b"x-forwarded-host"), [b"public.example"])
        self.assertEqual(out.getRawHeaders(b"x-forwarded-prefix"), [b"/outer/api"])
        self.assertEqual(
            out.getRawHeaders(b"forwarded"),
            [
                b"for=6.6.6.6;proto=https",
                b'for=10.0.0.1;proto=http;host="example.com"',
            ],
        )

    def test_trusted_peer_without_headers(self) -> None:
        """
        A trusted peer that sent no forwarding headers gets the router's own.
        """
        fwd = forwarding(client="10.0.0.1", scheme=b"http", trusted=True)
        out = upstream_headers(Headers(), fwd, b"up")
        self.assertEqual(out.getRawHeaders(b"x-forwarded-for"), [b"10.0.0.1"])
        self.assertEqual(out.getRawHeaders(b"x-forwarded-proto"), [b"http"])
        self.assertEqual(out.getRawHeaders(b"x-forwarded-host"), [b"example.com"])
        self.assertEqual(out.getRawHeaders(b"x-forwarded-prefix"), [b"/api"])

    CLIENTS = [
        # client address, X-Forwarded-For, Forwarded "for" node
        ("203.0.113.7", [b"203.0.113.7"], b"for=203.0.113.7"),
        ("::1", [b"::1"], b'for="[::1]"'),
        ("2001:db8::5", [b"2001:db8::5"], b'for="[2001:db8::5]"'),
        (None, None, b"for=unknown"),
    ]

    def test_client_address_forms(self) -> None:
        """
        IPv4 is bare, IPv6 is bracketed and quoted in C{Forwarded}, and a
        UNIX-socket client gives no C{X-Forwarded-For} and C{for=unknown}.
        """
        for client, xff, node in self.CLIENTS:
            out = upstream_headers(Headers(), forwarding(client=client), b"up")
            self.assertEqual(
                (
                    out.getRawHeaders(b"x-forwarded-for"),
                    out.getRawHeaders(b"forwarded"),
                ),
                (xff, [node + b';proto=https;host="example.com"']),
                f"for {client!r}",
            )

    def test_no_prefix_at_root(self) -> None:
        """
        A route at C{/} (empty prefix) sends no C{X-Forwarded-Prefix}.
        """
        out = upstream_headers(Headers(), forwarding(prefix=b""), b"up")
        self.assertFalse(out.hasHeader(b"x-forwarded-prefix"))

    def test_forwarded_host_cannot_inject_elements(self) -> None:
        """
        A C{Host} holding quotes and commas stays inside one C{Forwarded}
        element, so a client cannot add a C{for=} of its choosing.
        """
        evil = b'a", for=1.2.3.4;host="b'
        out = upstream_headers(Headers(), forwarding(host=evil), b"up")
        [value] = out.getRawHeaders(b"forwarded")
        elements = forwarded_elements(value)
        self.assertEqual(len(elements), 1, value)
        self.assertEqual(elements[0][b"for"], b"203.0.113.7")
        self.assertEqual(elements[0][b"host"], evil)

    def test_forwarded_parser(self) -> None:
        """
        The test's own C{Forwarded} parser honours quoting and escapes.
        """
        self.assertEqual(
            forwarded_elements(b'for=1.2.3.4;host="a\\"b,c", for="[::1]"'),
            [{b"for": b"1.2.3.4", b"host": b'a"b,c'}, {b"for": b"[::1]"}],
        )


class DownstreamHeadersTests(SynchronousTestCase):
    """
    L{downstream_headers} copies an upstream response's headers to the
    client's, minus hop-by-hop headers and our own C{Server} and C{Date}.
    """

    def test_copy(self) -> None:
        """
        Hop-by-hop and C{Connection}-listed headers are dropped, C{Server}
        and C{Date} stay ours, and two C{Set-Cookie} lines stay two.
        """
        incoming = [
            (b"Connection", b"close, X-Upstream-Only"),
            (b"X-Upstream-Only", b"1"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Trailer", b"X-Sum"),
            (b"Upgrade", b"h2c"),
            (b"Proxy-Connection", b"close"),
            (b"TE", b"trailers"),
            (b"Server", b"nginx"),
            (b"Date", b"Thu, 01 Jan 1970 00:00:00 GMT"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
            (b"Content-Type", b"text/html"),
            (b"Cache-Control", b"no-store"),
        ]
        outgoing = headers(
            (b"Server", b"txrouter"),
            (b"Date", b"Mon, 30 Nov 2026 12:00:00 GMT"),
        )
        downstream_headers(incoming, outgoing)
        self.assertEqual(
            {name.lower(): values for name, values in outgoing.getAllRawHeaders()},
            {
                b"server": [b"txrouter"],
                b"date": [b"Mon, 30 Nov 2026 12:00:00 GMT"],
                b"set-cookie": [b"a=1", b"b=2"],
                b"content-type": [b"text/html"],
                b"cache-control": [b"no-store"],
            },
        )

    def test_length_of_chunked_response_dropped(self) -> None:
        """
        A Content-Length beside Transfer-Encoding is not copied (chunked
        wins, RFC 9112 6.3); alone it is.
        """
        outgoing = Headers()
        downstream_headers(
            [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3")], outgoing
        )
        self.assertFalse(outgoing.hasHeader(b"content-length"))
        outgoing = Headers()
        downstream_headers([(b"Content-Length", b"3")], outgoing)
        self.assertEqual(outgoing.getRawHeaders(b"content-length"), [b"3"])

    def test_no_server_of_ours(self) -> None:
        """
        The upstream's C{Server} is not copied even when we set none.
        """
        outgoing = Headers()
        downstream_headers([(b"Server", b"nginx")], outgoing)
        self.assertFalse(outgoing.hasHeader(b"server"))


class TrustedProxiesTests(SynchronousTestCase):
    """
    L{TrustedProxies} holds the peers whose forwarding headers we extend.
    """

    CASES = [
        # networks, peer address, trusted?
        (["10.0.0.0/8"], "10.1.2.3", True),
        (["10.0.0.0/8"], "11.0.0.1", False),
        (["10.0.0.1/8"], "10.9.9.9", True),
        (["192.0.2.7"], "192.0.2.7", True),
        (["192.0.2.7"], "192.0.2.8", False),
        (["192.0.2.0/24", "198.51.100.0/24"], "198.51.100.9", True),
        (["2001:db8::/32"], "2001:db8::1", True),
        (["2001:db8::/32"], "2001:db9::1", False),
        (["::1"], "::1", True),
        (["::1"], "127.0.0.1", False),
        (["10.0.0.0/8"], "2001:db8::1", False),
        (["10.0.0.0/8"], "localhost", False),
        (["10.0.0.0/8"], "", False),
        (["10.0.0.0/8"], "/run/router.sock", False),
        (["10.0.0.0/8"], "10.0.0.1, 6.6.6.6", False),
        ([], "10.0.0.1", False),
        ([], "::1", False),
    ]

    def test_membership(self) -> None:
        """
        CIDRs and single addresses (IPv4 and IPv6) match; non-IP strings and
        an empty list trust nobody.
        """
        for networks, address, expected in self.CASES:
            self.assertIs(
                address in TrustedProxies(networks),
                expected,
                f"for {address!r} in {networks!r}",
            )

    def test_bad_network(self) -> None:
        """
        A string that is not a network is an error at construction.
        """
        self.assertRaises(ValueError, TrustedProxies, ["10.0.0.0/33"])
