"""
Tests of L{txrouter.staticfiles.StaticFiles} behind a L{Router}, through the
whole HTTP stack in memory: raw request bytes go into a real C{Site}'s
protocol over a C{StringTransport}, and the bytes that come out are parsed
back into responses. No sockets, no reactor, no sleeps.

C{static.File} sends bodies with a pull producer, which C{HTTPChannel} wraps
in C{_PullToPush}: that adapter is driven by the global cooperator, that is
by the global reactor. Each test swaps it for a cooperator scheduled on its
own L{Clock}, and L{_StaticRouteTestCase.send} runs that clock until no
producer is left, so a whole response is written before it is parsed.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from twisted.internet import _producer_helpers
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock, Cooperator
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import datetimeToString
from twisted.web.server import Site

from txrouter.router import Router
from txrouter.staticfiles import StaticFiles

pytestmark = pytest.mark.unit

# 2020-01-01T00:00:00.25Z: a fixed past mtime with a fraction of a second,
# which Last-Modified (whole seconds) must round down.
_MTIME = 1_577_836_800.25

_TEXT = bytes(random.Random(1).choices(b"abcdefghijklmnopqrstuvwxyz \n", k=1024))
_BINARY = random.Random(2).randbytes(100 * 1024)
_INDEX = b"<!DOCTYPE html><title>site</title>\n"
_OUTSIDE = b"OUTSIDE THE ROOT: must never be served\n"

# Bound on what a multipart/byteranges answer may add around the file's own
# bytes: a part header (~100 bytes) for each of at most 16 parts, rounded up.
_MULTIPART_OVERHEAD = 16 * 200

# Enough producer steps for the largest body here (100 KiB in 64 KiB reads),
# with a wide margin; more means a producer that never finishes.
_MAX_TICKS = 1000


class Response(NamedTuple):
    """
    One parsed HTTP response.

    @ivar status: the status code.
    @ivar headers: lower-case header name to the list of its values.
    @ivar body: the body, de-chunked; empty for C{HEAD}, 204 and 304.
    """

    status: int
    headers: dict[str, list[str]]
    body: bytes


def _dechunk(data: bytes, pos: int) -> tuple[bytes, int]:
    """
    Decode a chunked body starting at C{pos}; return it and where it ended.
    """
    body = b""
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            if data[pos : pos + 2] != b"\r\n":
                raise AssertionError(f"trailers or junk after last chunk: {data!r}")
            return body, pos + 2
        body += data[pos : pos + size]
        if data[pos + size : pos + size + 2] != b"\r\n":
            raise AssertionError(f"chunk not followed by CRLF: {data!r}")
        pos += size + 2


def _parse_responses(data: bytes, methods: list[bytes]) -> list[Response]:
    """
    Split what the server wrote into one L{Response} per request.

    Bodies are framed as a client frames them (RFC 9112 section 6.3): none
    for C{HEAD}, 204 and 304; chunked; else C{Content-Length}. Anything
    left over, or a response too many or too few, is an error: so a body
    longer than its C{Content-Length} fails the test.
    """
    responses = []
    pos = 0
    for method in methods:
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            raise AssertionError(
                f"no complete response to {method!r} in {data[pos:]!r}"
            )
        status_line, *lines = data[pos:end].split(b"\r\n")
        version, code, _ = status_line.split(b" ", 2)
        if version != b"HTTP/1.1":
            raise AssertionError(f"bad status line {status_line!r}")
        headers: dict[str, list[str]] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers.setdefault(name.decode("ascii").lower(), []).append(
                value.strip().decode("latin-1")
            )
        status = int(code)
        pos = end + 4
        if method == b"HEAD" or status in (204, 304):
            body = b""
        elif headers.get("transfer-encoding") == ["chunked"]:
            body, pos = _dechunk(data, pos)
        else:
            length = int(headers["content-length"][0])
            body = data[pos : pos + length]
            if len(body) != length:
                raise AssertionError(f"body shorter than Content-Length: {data!r}")
            pos += length
        responses.append(Response(status, headers, body))
    if pos != len(data):
        raise AssertionError(f"unexpected bytes after the responses: {data[pos:]!r}")
    return responses


def _byteranges(response: Response) -> list[tuple[str, str, bytes]]:
    """
    Split a C{multipart/byteranges} body into (Content-Type, Content-Range,
    payload) for each part.
    """
    media_type, _, boundary = response.headers["content-type"][0].partition(
        "; boundary="
    )
    if media_type != "multipart/byteranges" or not boundary:
        raise AssertionError(f"not multipart/byteranges: {response.headers!r}")
    delimiter = b"\r\n--" + boundary.strip('"').encode("ascii")
    preamble, *chunks, epilogue = response.body.split(delimiter)
    if preamble != b"" or epilogue != b"--\r\n":
        raise AssertionError(f"badly framed multipart body: {response.body!r}")
    parts = []
    for chunk in chunks:
        head, _, payload = chunk.partition(b"\r\n\r\n")
        fields = dict(
            line.decode("ascii").lower().split(": ", 1)
            for line in head.split(b"\r\n")[1:]
        )
        parts.append((fields["content-type"], fields["content-range"], payload))
    return parts


def _make_tree(base: Path) -> Path:
    """
    Make the static route's root under C{base}, and a sibling folder with
    a file that must never be served; return the root.
    """
    root = base / "root"
    outside = base / "outside"
    root.mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_bytes(_OUTSIDE)
    (root / "hello.txt").write_bytes(_TEXT)
    os.utime(root / "hello.txt", (_MTIME, _MTIME))
    (root / "big.bin").write_bytes(_BINARY)
    (root / "style.css").write_bytes(b"body { color: red }\n")
    (root / "app.js").write_bytes(b"console.log(1);\n")
    (root / "data.json").write_bytes(b'{"a": 1}\n')
    (root / "image.svg").write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>\n")
    (root / "page.html").write_bytes(_INDEX)
    (root / "blob.unknownext").write_bytes(b"\x00\x01\x02")
    (root / "a.gz").write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    (root / "café.txt").write_bytes("café au lait\n".encode())
    (root / "empty.txt").write_bytes(b"")
    (root / ".secret").write_bytes(b"password=hunter2\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(b"[core]\n")
    (root / "site").mkdir()
    (root / "site" / "index.html").write_bytes(_INDEX)
    (root / "plain").mkdir()
    (root / "plain" / "inner.txt").write_bytes(b"listed?\n")
    (root / "inside-link.txt").symlink_to("hello.txt")
    (root / "outside-link.txt").symlink_to(outside / "secret.txt")
    (root / "outside-dir").symlink_to(outside)
    (root / "loop").symlink_to("loop")
    return root


class _StaticRouteTestCase(SynchronousTestCase):
    """
    Base: a file tree, and a way to send raw requests to a C{Site} whose
    root is C{Router({"": {"/files/": StaticFiles.for_root(root, cache)}})}.
    """

    def setUp(self) -> None:
        # Absolute, so that the symlinks to the outside folder resolve.
        self.root = _make_tree(Path(self.mktemp()).absolute())
        self._ticks = Clock()
        cooperator = Cooperator(
            terminationPredicateFactory=lambda: lambda: True,  # one step a tick
            scheduler=lambda step: self._ticks.callLater(0, step),
        )
        self.patch(_producer_helpers, "cooperate", cooperator.cooperate)

    def send(self, *requests: bytes, cache: int | None = 3600) -> list[Response]:
        """
        Send raw requests, pipelined on one new connection, and return the
        parsed responses once every body has been written.

        @param requests: each a complete raw HTTP/1.1 request.
        @param cache: the route's C{cache:} setting.
        """
        router = Router({"": {"/files/": StaticFiles.for_root(self.root, cache)}})
        site = Site(router, reactor=Clock())
        protocol = site.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"".join(requests))
        for _ in range(_MAX_TICKS):
            if not self._ticks.getDelayedCalls():
                break
            self._ticks.advance(0)
        else:
            self.fail(f"a producer is still running after {_MAX_TICKS} steps")
        protocol.connectionLost(Failure(ConnectionDone()))
        methods = [request.split(b" ", 1)[0] for request in requests]
        return _parse_responses(transport.value(), methods)

    def get(
        self,
        path: str,
        headers: dict[str, str] | None = None,
        method: str = "GET",
        cache: int | None = 3600,
    ) -> Response:
        """
        Send one request for C{path} (already percent-encoded) and return
        its response.
        """
        raw = _raw_request(path, headers, method)
        [response] = self.send(raw, cache=cache)
        return response


def _raw_request(
    path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> bytes:
    """
    A raw HTTP/1.1 request with a C{Host} and C{headers}.
    """
    lines = [f"{method} {path} HTTP/1.1", "Host: example.com"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if method == "POST":
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class ContentTests(_StaticRouteTestCase):
    """
    A 200 answer: body, type, length and the headers every file gets.
    """

    def test_text_file(self) -> None:
        """
        A text file is served whole, as text/plain, with its exact length.
        """
        response = self.get("/files/hello.txt")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["content-type"], ["text/plain"])
        self.assertEqual(response.headers["content-length"], ["1024"])
        self.assertEqual(response.body, _TEXT)

    def test_large_binary_file(self) -> None:
        """
        A 100 KiB file, sent in several producer reads, arrives byte for byte.
        """
        response = self.get("/files/big.bin")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["content-length"], [str(len(_BINARY))])
        self.assertEqual(response.body, _BINARY)

    def test_content_types(self) -> None:
        """
        Web file types get their registered types; an unknown one is bytes.
        """
        expected = {
            "hello.txt": "text/plain",
            "page.html": "text/html",
            "style.css": "text/css",
            "app.js": "text/javascript",
            "data.json": "application/json",
            "image.svg": "image/svg+xml",
            "blob.unknownext": "application/octet-stream",
            "a.gz": "application/gzip",
        }
        actual = {
            name: self.get(f"/files/{name}").headers["content-type"][0]
            for name in expected
        }
        self.assertEqual(actual, expected)

    def test_gzip_file_served_as_is(self) -> None:
        """
        A .gz file is application/gzip with no Content-Encoding, so a client
        does not unpack it.
        """
        response = self.get("/files/a.gz")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["content-type"], ["application/gzip"])
        self.assertNotIn("content-encoding", response.headers)
        self.assertEqual(response.body, (self.root / "a.gz").read_bytes())

    def test_nosniff(self) -> None:
        """
        Every file carries X-Content-Type-Options: nosniff.
        """
        response = self.get("/files/blob.unknownext")
        self.assertEqual(response.headers["x-content-type-options"], ["nosniff"])

    def test_cache_control_when_cache_set(self) -> None:
        """
        A route with cache: 3600 sends Cache-Control: max-age=3600.
        """
        response = self.get("/files/hello.txt", cache=3600)
        self.assertEqual(response.headers["cache-control"], ["max-age=3600"])

    def test_no_cache_control_without_cache(self) -> None:
        """
        A route without cache: sends no Cache-Control at all.
        """
        response = self.get("/files/hello.txt", cache=None)
        self.assertEqual(response.status, 200)
        self.assertNotIn("cache-control", response.headers)

    def test_accept_ranges(self) -> None:
        """
        A file advertises Accept-Ranges: bytes.
        """
        response = self.get("/files/hello.txt")
        self.assertEqual(response.headers["accept-ranges"], ["bytes"])

    def test_last_modified(self) -> None:
        """
        Last-Modified is the file's mtime, rounded down to the second.
        """
        response = self.get("/files/hello.txt")
        self.assertEqual(
            response.headers["last-modified"],
            [datetimeToString(int(_MTIME)).decode("ascii")],
        )

    def test_head(self) -> None:
        """
        HEAD gets the GET headers, Content-Length included, and no body.
        """
        get = self.get("/files/hello.txt")
        head = self.get("/files/hello.txt", method="HEAD")
        self.assertEqual(head.status, 200)
        self.assertEqual(head.headers["content-length"], ["1024"])
        for name in ("content-type", "etag", "last-modified", "cache-control"):
            self.assertEqual(head.headers[name], get.headers[name], name)
        self.assertEqual(head.body, b"")

    def test_empty_file(self) -> None:
        """
        An empty file is a 200 with Content-Length: 0.
        """
        response = self.get("/files/empty.txt")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["content-length"], ["0"])
        self.assertEqual(response.body, b"")

    def test_non_ascii_name(self) -> None:
        """
        A file named café.txt is served for its UTF-8 percent-encoded path.
        """
        response = self.get("/files/caf%C3%A9.txt")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, "café au lait\n".encode())

    def test_symlink_inside_root(self) -> None:
        """
        A symlink to a file inside the root serves that file.
        """
        response = self.get("/files/inside-link.txt")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, _TEXT)


class ConditionalTests(_StaticRouteTestCase):
    """
    ETag, Last-Modified, and 304 by RFC 9110's rules.
    """

    def etag(self) -> str:
        """
        The ETag that hello.txt is served with.
        """
        [etag] = self.get("/files/hello.txt").headers["etag"]
        return etag

    def assertNotModified(self, response: Response) -> None:
        """
        C{response} is a 304 with no body.
        """
        self.assertEqual(response.status, 304)
        self.assertEqual(response.body, b"")

    def test_etag_strong_and_stable(self) -> None:
        """
        The ETag is a strong quoted tag, the same for every GET and HEAD.
        """
        first = self.etag()
        self.assertTrue(
            first.startswith('"') and first.endswith('"') and len(first) > 2, first
        )
        self.assertEqual(self.etag(), first)
        head = self.get("/files/hello.txt", method="HEAD")
        self.assertEqual(head.headers["etag"], [first])

    def test_etag_differs_between_files(self) -> None:
        """
        Two files of different content and size have different ETags.
        """
        self.assertNotEqual(
            self.get("/files/hello.txt").headers["etag"],
            self.get("/files/big.bin").headers["etag"],
        )

    def test_if_none_match(self) -> None:
        """
        If-None-Match with the current ETag gives 304 and no body.
        """
        etag = self.etag()
        self.assertNotModified(self.get("/files/hello.txt", {"If-None-Match": etag}))

    def test_not_modified_keeps_validators(self) -> None:
        """
        A 304 still carries ETag and Cache-Control (RFC 9110 section 15.4.5).
        """
        etag = self.etag()
        response = self.get("/files/hello.txt", {"If-None-Match": etag})
        self.assertEqual(response.headers["etag"], [etag])
        self.assertEqual(response.headers["cache-control"], ["max-age=3600"])

    def test_if_none_match_weak(self) -> None:
        """
        If-None-Match uses weak comparison: W/ plus our tag gives 304.
        """
        etag = self.etag()
        self.assertNotModified(
            self.get("/files/hello.txt", {"If-None-Match": "W/" + etag})
        )

    def test_if_none_match_list(self) -> None:
        """
        Our tag anywhere in an If-None-Match list gives 304.
        """
        etag = self.etag()
        response = self.get("/files/hello.txt", {"If-None-Match": f'"x", {etag}'})
        self.assertNotModified(response)

    def test_if_none_match_split_over_two_lines(self) -> None:
        """
        An If-None-Match list sent as two header lines is one list (RFC
        9110 section 5.3): our tag in the first line still gives 304.
        """
        etag = self.etag()
        raw = _raw_request("/files/hello.txt").replace(
            b"\r\n\r\n",
            f'\r\nIf-None-Match: {etag}\r\nIf-None-Match: "x"\r\n\r\n'.encode(),
        )
        [response] = self.send(raw)
        self.assertNotModified(response)

    def test_if_none_match_star(self) -> None:
        """
        If-None-Match: * matches any existing file: 304.
        """
        self.assertNotModified(self.get("/files/hello.txt", {"If-None-Match": "*"}))

    def test_if_none_match_wins_over_if_modified_since(self) -> None:
        """
        A non-matching If-None-Match gives 200 even with a future
        If-Modified-Since, which must then be ignored.
        """
        future = datetimeToString(time.time() + 86400).decode("ascii")
        response = self.get(
            "/files/hello.txt",
            {"If-None-Match": '"other"', "If-Modified-Since": future},
        )
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, _TEXT)

    def test_if_modified_since_equal(self) -> None:
        """
        If-Modified-Since equal to Last-Modified gives 304.
        """
        [last_modified] = self.get("/files/hello.txt").headers["last-modified"]
        self.assertNotModified(
            self.get("/files/hello.txt", {"If-Modified-Since": last_modified})
        )

    def test_if_modified_since_older(self) -> None:
        """
        If-Modified-Since an hour before the file's mtime gives 200.
        """
        older = datetimeToString(_MTIME - 3600).decode("ascii")
        response = self.get("/files/hello.txt", {"If-Modified-Since": older})
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, _TEXT)

    def test_if_modified_since_garbage(self) -> None:
        """
        An If-Modified-Since that is not a date is ignored: 200.
        """
        for value in ("garbage", "Mon, 99 Foo 2020 99:99:99 GMT", "0", ","):
            response = self.get("/files/hello.txt", {"If-Modified-Since": value})
            self.assertEqual((value, response.status), (value, 200))
            self.assertEqual(response.body, _TEXT)


class RangeTests(_StaticRouteTestCase):
    """
    Byte ranges: single, multiple, unsatisfiable, malformed and abusive.
    """

    def get_range(self, spec: str, path: str = "/files/hello.txt") -> Response:
        """
        GET C{path} with C{Range: spec}.
        """
        return self.get(path, {"Range": spec})

    def assertPartial(self, response: Response, first: int, last: int) -> None:
        """
        C{response} is a single-part 206 of hello.txt's bytes first..last.
        """
        self.assertEqual(response.status, 206)
        self.assertEqual(
            response.headers["content-range"], [f"bytes {first}-{last}/1024"]
        )
        self.assertEqual(response.headers["content-length"], [str(last - first + 1)])
        self.assertEqual(response.headers["content-type"], ["text/plain"])
        self.assertEqual(response.body, _TEXT[first : last + 1])

    def assertWhole(self, response: Response) -> None:
        """
        C{response} is a plain 200 with all of hello.txt.
        """
        self.assertEqual(response.status, 200)
        self.assertNotIn("content-range", response.headers)
        self.assertEqual(response.body, _TEXT)

    def test_first_bytes(self) -> None:
        """
        bytes=0-99 gives 206 with exactly the first 100 bytes.
        """
        self.assertPartial(self.get_range("bytes=0-99"), 0, 99)

    def test_suffix(self) -> None:
        """
        bytes=-10 gives the last 10 bytes.
        """
        self.assertPartial(self.get_range("bytes=-10"), 1014, 1023)

    def test_open_ended(self) -> None:
        """
        bytes=1000- gives everything from byte 1000.
        """
        self.assertPartial(self.get_range("bytes=1000-"), 1000, 1023)

    def test_last_beyond_end_is_clipped(self) -> None:
        """
        bytes=1000-5000 is clipped to the file's last byte.
        """
        self.assertPartial(self.get_range("bytes=1000-5000"), 1000, 1023)

    def test_range_across_read_boundary(self) -> None:
        """
        A range of the 100 KiB file across the 64 KiB read size is exact.
        """
        response = self.get_range("bytes=65000-66999", "/files/big.bin")
        self.assertEqual(response.status, 206)
        self.assertEqual(
            response.headers["content-range"], [f"bytes 65000-66999/{len(_BINARY)}"]
        )
        self.assertEqual(response.body, _BINARY[65000:67000])

    def test_unsatisfiable(self) -> None:
        """
        bytes=5000-6000 on a 1024-byte file is 416 with Content-Range */1024.
        """
        response = self.get_range("bytes=5000-6000")
        self.assertEqual(response.status, 416)
        self.assertEqual(response.headers["content-range"], ["bytes */1024"])
        self.assertEqual(response.body, b"")

    def test_unsatisfiable_open_ended(self) -> None:
        """
        bytes=5000- (first byte past the end, no last) is 416 like
        bytes=5000-6000: it is valid but unsatisfiable, not malformed.
        """
        response = self.get_range("bytes=5000-")
        self.assertEqual(response.status, 416)
        self.assertEqual(response.headers["content-range"], ["bytes */1024"])
        self.assertEqual(response.body, b"")

    def test_empty_list_elements(self) -> None:
        """
        Empty elements of the range list are skipped, as RFC 9110 allows.
        """
        response = self.get_range("bytes=0-9,, ,")
        self.assertEqual(response.status, 206)
        self.assertEqual(response.headers["content-range"], ["bytes 0-9/1024"])

    def test_malformed(self) -> None:
        """
        A malformed Range is ignored: 200 with the whole file.
        """
        for spec in ("bytes=abc", "bytes=", "bytes=-", "bytes=5-1", "items=0-1"):
            response = self.get_range(spec)
            self.assertEqual((spec, response.status), (spec, 200))
            self.assertWhole(response)

    def test_huge_number(self) -> None:
        """
        A Range whose number has more digits than int() accepts (4300) is
        answered like any range covering the whole file (200), not with 500.
        """
        self.assertWhole(self.get_range("bytes=0-" + "9" * 5000))

    def test_two_disjoint_ranges(self) -> None:
        """
        Two disjoint ranges give a 206 multipart/byteranges with both parts.
        """
        response = self.get_range("bytes=0-9,100-109")
        self.assertEqual(response.status, 206)
        self.assertEqual(
            _byteranges(response),
            [
                ("text/plain", "bytes 0-9/1024", _TEXT[0:10]),
                ("text/plain", "bytes 100-109/1024", _TEXT[100:110]),
            ],
        )

    def assertNotAmplified(self, response: Response) -> None:
        """
        C{response} carries no more of the file than the file holds, and
        little around it: a 200 with the file, or a bounded 206.
        """
        if response.status == 200:
            self.assertEqual(response.body, _TEXT)
            return
        self.assertEqual(response.status, 206)
        if "content-range" in response.headers:
            payload = len(response.body)
        else:
            payload = sum(len(part) for _, _, part in _byteranges(response))
        self.assertLessEqual(payload, len(_TEXT))
        self.assertLessEqual(len(response.body), len(_TEXT) + _MULTIPART_OVERHEAD)

    def test_overlapping_ranges(self) -> None:
        """
        Overlapping ranges never send more bytes than the file holds.
        """
        self.assertNotAmplified(self.get_range("bytes=0-500,100-600,0-1023"))
        self.assertNotAmplified(self.get_range("bytes=0-500,100-600"))

    def test_many_small_ranges(self) -> None:
        """
        Many one-byte ranges (up to 200) are never answered with a part each
        beyond a small bound: the answer stays near the file's size.
        """
        for count in (16, 17, 64, 65, 200):
            spec = "bytes=" + ",".join(f"{2 * n}-{2 * n}" for n in range(count))
            self.assertNotAmplified(self.get_range(spec))

    def test_if_range_matching_etag(self) -> None:
        """
        If-Range with the current ETag lets the Range apply: 206.
        """
        [etag] = self.get("/files/hello.txt").headers["etag"]
        response = self.get(
            "/files/hello.txt", {"Range": "bytes=0-99", "If-Range": etag}
        )
        self.assertPartial(response, 0, 99)

    def test_if_range_other_etag(self) -> None:
        """
        If-Range with another ETag means the file changed: 200 whole.
        """
        response = self.get(
            "/files/hello.txt", {"Range": "bytes=0-99", "If-Range": '"other"'}
        )
        self.assertWhole(response)

    def test_if_range_weak_etag(self) -> None:
        """
        If-Range needs a strong match: W/ plus our tag gives 200 whole.
        """
        [etag] = self.get("/files/hello.txt").headers["etag"]
        response = self.get(
            "/files/hello.txt", {"Range": "bytes=0-99", "If-Range": "W/" + etag}
        )
        self.assertWhole(response)

    def test_if_range_last_modified(self) -> None:
        """
        If-Range with the Last-Modified date gives 206; an older date, 200.
        """
        [last_modified] = self.get("/files/hello.txt").headers["last-modified"]
        matching = self.get(
            "/files/hello.txt", {"Range": "bytes=0-99", "If-Range": last_modified}
        )
        self.assertPartial(matching, 0, 99)
        older = datetimeToString(_MTIME - 3600).decode("ascii")
        self.assertWhole(
            self.get("/files/hello.txt", {"Range": "bytes=0-99", "If-Range": older})
        )

    def test_range_on_empty_file(self) -> None:
        """
        A Range on an empty file is ignored: 200 with Content-Length: 0.
        """
        response = self.get_range("bytes=0-99", "/files/empty.txt")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["content-length"], ["0"])
        self.assertEqual(response.body, b"")


class PathSafetyTests(_StaticRouteTestCase):
    """
    Nothing outside the root, no hidden files, no listings, no 500s.
    """

    def test_no_directory_listing(self) -> None:
        """
        A folder without index.html is a 404 that names none of its files.
        """
        response = self.get("/files/plain/")
        self.assertEqual(response.status, 404)
        self.assertNotIn(b"inner.txt", response.body)

    def test_no_listing_of_root(self) -> None:
        """
        The route's root, which has no index.html, is not listed either.
        """
        response = self.get("/files/")
        self.assertEqual(response.status, 404)
        self.assertNotIn(b"hello.txt", response.body)

    def test_directory_index(self) -> None:
        """
        A folder with index.html serves it, as text/html.
        """
        response = self.get("/files/site/")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["content-type"], ["text/html"])
        self.assertEqual(response.body, _INDEX)

    def test_directory_without_slash_redirects(self) -> None:
        """
        A folder asked for without its trailing slash redirects to add it.
        """
        response = self.get("/files/site")
        self.assertIn(response.status, (301, 302, 307, 308))
        self.assertEqual(response.headers["location"], ["/files/site/"])
        with_query = self.get("/files/site?page=2")
        self.assertEqual(with_query.headers["location"], ["/files/site/?page=2"])

    def test_dotfile(self) -> None:
        """
        A dotfile is a 404, not its content.
        """
        response = self.get("/files/.secret")
        self.assertEqual(response.status, 404)
        self.assertNotIn(b"hunter2", response.body)

    def test_dot_directory(self) -> None:
        """
        Nothing inside a dot-folder is served: .git/config and .git/ are 404.
        """
        self.assertEqual(self.get("/files/.git/config").status, 404)
        self.assertEqual(self.get("/files/.git/").status, 404)

    def test_parent_segments(self) -> None:
        """
        .. in any encoding is a 4xx, and the file outside is never sent.
        """
        paths = [
            "/files/../outside/secret.txt",
            "/files/%2e%2e/outside/secret.txt",
            "/files/%2E%2E%2Foutside%2Fsecret.txt",
            "/files/..%2foutside%2fsecret.txt",
            "/files/%2e%2e%5coutside%5csecret.txt",
            "/files/..%5coutside%5csecret.txt",
            "/files/site/%2e%2e/%2e%2e/outside/secret.txt",
            "/files/site/%2e%2e/%2e%2e/etc/passwd",
            "/files/site/" + "%2e%2e/" * 20 + "etc/passwd",
            "/files/%2e%2e",
            "/files/%2e",
            "/files/%c0%ae%c0%ae/outside/secret.txt",
        ]
        for path in paths:
            response = self.get(path)
            self.assertTrue(400 <= response.status < 500, (path, response.status))
            self.assertNotIn(_OUTSIDE, response.body, path)
            self.assertNotIn(b"root:", response.body, path)

    def test_encoded_slash_is_not_a_separator(self) -> None:
        """
        %2F inside a segment does not reach a file in a sub-folder.
        """
        self.assertEqual(self.get("/files/site%2Findex.html").status, 404)

    def test_nul_byte(self) -> None:
        """
        A NUL byte in the path is a 400, never a 500.
        """
        for path in ("/files/%00", "/files/hello.txt%00.html", "/files/site/%00"):
            self.assertEqual((path, self.get(path).status), (path, 400))

    def test_invalid_utf8(self) -> None:
        """
        A path segment that is not UTF-8 is a 400.
        """
        for path in ("/files/%ff", "/files/caf%E9.txt", "/files/site/%C3"):
            self.assertEqual((path, self.get(path).status), (path, 400))

    def test_symlink_outside_root(self) -> None:
        """
        A symlink inside the root to a file outside it is a 404.
        """
        self.assertEqual((self.root / "outside-link.txt").read_bytes(), _OUTSIDE)
        response = self.get("/files/outside-link.txt")
        self.assertEqual(response.status, 404)
        self.assertNotIn(_OUTSIDE, response.body)

    def test_symlinked_directory_outside_root(self) -> None:
        """
        A symlink to a folder outside the root serves nothing from it.
        """
        self.assertEqual((self.root / "outside-dir/secret.txt").read_bytes(), _OUTSIDE)
        for path in ("/files/outside-dir/secret.txt", "/files/outside-dir/"):
            response = self.get(path)
            self.assertEqual((path, response.status), (path, 404))
            self.assertNotIn(_OUTSIDE, response.body)

    def test_file_is_not_a_folder(self) -> None:
        """
        A path that goes on below a file is a 404.
        """
        self.assertEqual(self.get("/files/hello.txt/x").status, 404)
        self.assertEqual(self.get("/files/hello.txt/").status, 404)

    def test_symlink_loop(self) -> None:
        """
        A symlink that points to itself is a 404, not a 500.
        """
        self.assertEqual(self.get("/files/loop").status, 404)

    def test_fifo_not_opened(self) -> None:
        """
        A named pipe inside the root is a 404: opening it would block the
        server.
        """
        os.mkfifo(self.root / "pipe")
        self.assertEqual(self.get("/files/pipe").status, 404)

    def test_query_string_ignored(self) -> None:
        """
        A query string does not change which file is served.
        """
        response = self.get("/files/hello.txt?v=3")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, _TEXT)

    def test_missing_file(self) -> None:
        """
        A file that does not exist is a 404.
        """
        self.assertEqual(self.get("/files/nope.txt").status, 404)


class ConnectionTests(_StaticRouteTestCase):
    """
    Methods, and a persistent connection across errors.
    """

    def test_post_not_allowed(self) -> None:
        """
        POST to a file is 405 Method Not Allowed.
        """
        response = self.get("/files/hello.txt", method="POST")
        self.assertEqual(response.status, 405)

    def test_pipelined_after_errors(self) -> None:
        """
        After a 400, a 404 and a 416 on one connection, the next pipelined
        request is still answered in full.
        """
        responses = self.send(
            _raw_request("/files/%00"),
            _raw_request("/files/.secret"),
            _raw_request("/files/hello.txt", {"Range": "bytes=5000-6000"}),
            _raw_request("/files/hello.txt"),
        )
        self.assertEqual([r.status for r in responses], [400, 404, 416, 200])
        self.assertEqual(responses[-1].body, _TEXT)

    def test_pipelined_after_head_and_range(self) -> None:
        """
        HEAD, a multipart range and a 304 leave the connection in step.
        """
        [etag] = self.get("/files/hello.txt").headers["etag"]
        responses = self.send(
            _raw_request("/files/big.bin", method="HEAD"),
            _raw_request("/files/hello.txt", {"Range": "bytes=0-0,9-9"}),
            _raw_request("/files/hello.txt", {"If-None-Match": etag}),
            _raw_request("/files/big.bin"),
        )
        self.assertEqual([r.status for r in responses], [200, 206, 304, 200])
        self.assertEqual(responses[-1].body, _BINARY)
