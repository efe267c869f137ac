"""
Differential tests: the proxy engine's response parser
(L{txrouter.http1client}) against llhttp (C{httptools}), the parser of
Node.js. Whatever llhttp refuses, ours refuses too (ours may refuse more:
it never undoes codings but chunked, say); and both accept the valid
responses.
"""

from __future__ import annotations

import httptools
import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_http1client import GET, Recorder, Transport
from txrouter.http1client import ConnectionPool, HTTP1Connection

pytestmark = pytest.mark.unit

VALID = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX-A: b\tc\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 3\r\n\r\nnot",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX: caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n",
]

HANDWRITTEN_BAD = [
    b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\nY: b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX Y: b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX\x00: b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n: b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTQ/1.1 200 OK\r\n\r\n",
]


def llhttp_refuses(raw: bytes) -> bool:
    parser = httptools.HttpResponseParser(object())
    try:
        parser.feed_data(raw)
    except httptools.HttpParserError:
        return True
    return False


def ours_refuses(raw: bytes) -> bool:
    """
    Whether our connection reports the response as failed (a 502).
    """
    connection = HTTP1Connection(ConnectionPool(MemoryReactorClock()), "k")
    connection.makeConnection(Transport())
    receiver = Recorder()
    connection.send(GET, None, 0, receiver, False)
    connection.dataReceived(raw)
    connection.connectionLost()
    return bool(receiver.failures())


def byte_variants() -> list[bytes]:
    """
    Every byte value put in a header name, in a header value and in the
    reason phrase of an otherwise valid response.
    """
    out = []
    for value in range(256):
        b = bytes([value])
        out.append(b"HTTP/1.1 200 OK\r\nX-" + b + b"y: v\r\nContent-Length: 0\r\n\r\n")
        out.append(b"HTTP/1.1 200 OK\r\nX: a" + b + b"b\r\nContent-Length: 0\r\n\r\n")
        out.append(b"HTTP/1.1 200 O" + b + b"K\r\nContent-Length: 0\r\n\r\n")
    return out


class DifferentialTests(SynchronousTestCase):
    """
    Ours is at least as strict as llhttp.
    """

    def test_valid_accepted_by_both(self) -> None:
        """
        Valid responses are accepted by both parsers.
        """
        for raw in VALID:
            self.assertFalse(llhttp_refuses(raw), raw)
            self.assertFalse(ours_refuses(raw), raw)

    def test_handwritten_refused_by_both(self) -> None:
        """
        Each malformed response of the list is refused by llhttp and by ours.
        """
        for raw in HANDWRITTEN_BAD:
            self.assertTrue(llhttp_refuses(raw), raw)
            self.assertTrue(ours_refuses(raw), raw)

    def test_every_byte(self) -> None:
        """
        For every byte in a name, a value and the reason: where llhttp
        refuses, ours refuses too.
        """
        lenient = [
            raw
            for raw in byte_variants()
            if llhttp_refuses(raw) and not ours_refuses(raw)
        ]
        self.assertEqual(lenient, [])

    def test_stricter_than_llhttp(self) -> None:
        """
        What llhttp lets through and ours refuses: a version other than
        HTTP/1.0 or 1.1, a transfer coding it could not undo, a NUL in the
        reason phrase.
        """
        for raw in (
            b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        ):
            self.assertFalse(llhttp_refuses(raw), raw)
            self.assertTrue(ours_refuses(raw), raw)
