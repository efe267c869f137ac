"""
Unit tests of L{txrouter.workerrequest}: a body the router passes to a
worker as a file descriptor, read from that file.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from txrouter.privatetwisted import http_channel_of, http_protocol_factory
from txrouter.site import RouterSite
from txrouter.workerrequest import PassedBody, WorkerChannel, worker_request_factory

pytestmark = pytest.mark.unit

TOKEN = b"s3cret"


class Echo(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.content.seek(0)
        body = request.content.read()
        length = request.getHeader(b"content-length")
        return b"%s %d %s" % (length, len(body), body[:20])


def spooled(data: bytes) -> int:
    """
    A descriptor of a deleted file holding C{data}, its offset at the end
    (as the router's spool is left).
    """
    with tempfile.TemporaryFile() as spool:
        spool.write(data)
        spool.flush()
        return os.dup(spool.fileno())


class PassedBodyTests(SynchronousTestCase):
    """
    L{PassedBody} reads its own stretch of the file, from a position of its
    own.
    """

    def test_read_and_seek(self) -> None:
        descriptor = spooled(b"0123456789")
        body = io.BufferedReader(PassedBody(descriptor, 8))
        self.assertEqual(body.read(3), b"012")
        self.assertEqual(body.read(), b"34567")  # the length, not the file
        body.seek(0)
        self.assertEqual(body.readline(), b"01234567")
        body.close()
        self.assertRaises(OSError, os.fstat, descriptor)


class WorkerChannelTests(SynchronousTestCase):
    """
    A worker's channel takes the descriptors its router passes, and the
    request that says it has one reads its body from it.
    """

    def setUp(self) -> None:
        site = RouterSite(Echo(), MemoryReactorClock(), None)
        site.requestFactory = worker_request_factory(TOKEN)
        site.protocol = http_protocol_factory(WorkerChannel)  # type: ignore[method-assign]
        self.protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.channel = http_channel_of(self.protocol)

    def send(self, *headers: bytes) -> bytes:
        lines = [b"POST /x HTTP/1.1", b"Host: a", b"X-Txrouter-Token: " + TOKEN]
        self.protocol.dataReceived(b"\r\n".join([*lines, *headers]) + b"\r\n\r\n")
        return self.transport.value()  # type: ignore[no-any-return]

    def test_body_from_the_file(self) -> None:
        """
        The application reads the whole body from the file, with its
        length as C{Content-Length}; the file is closed with the request.
        """
        descriptor = spooled(b"hello, passed world")
        self.protocol.fileDescriptorReceived(descriptor)
        answer = self.send(b"X-Txrouter-Body-Length: 19")
        self.assertTrue(answer.endswith(b"\r\n\r\n19 19 hello, passed world"), answer)
        self.assertRaises(OSError, os.fstat, descriptor)

    def test_no_file_came(self) -> None:
        """
        A request that says a file came when none did is a 400.
        """
        answer = self.send(b"X-Txrouter-Body-Length: 19")
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer)

    def test_closed_with_the_connection(self) -> None:
        """
        Descriptors no request took are closed when the connection ends.
        """
        descriptor = spooled(b"x")
        self.protocol.fileDescriptorReceived(descriptor)
        self.protocol.connectionLost(None)
        self.assertRaises(OSError, os.fstat, descriptor)
        self.assertEqual(list(self.channel.passed), [])
