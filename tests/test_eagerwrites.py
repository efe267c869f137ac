"""
Eager writes (L{txrouter.privatetwisted.eager_writes},
L{txrouter.privatetwisted.eager_connection}): over real loopback TCP on
the reactor, what a connection is given in one pass goes out in one
C{send()} without registering with epoll; what the socket does not take
waits for epoll as in Twisted; closes and aborts behave as Twisted's.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from txrouter.privatetwisted import eager_connection, eager_writes

pytestmark = pytest.mark.unit


class _Collecting(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.made: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.reason: Failure | None = None

    def connectionMade(self) -> None:
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.reason = reason
        self.lost.callback(None)


class EagerWritesTests(TestCase):
    def setUp(self) -> None:
        self.accepted: list[_Collecting] = []

        def build(addr: Any) -> _Collecting:
            protocol = _Collecting()
            self.accepted.append(protocol)
            return protocol

        factory = Factory()
        factory.buildProtocol = build  # type: ignore[method-assign]
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(self.port.stopListening)
        self.assertTrue(eager_writes(self.port))
        self.watched: list[Any] = []
        real = reactor.addWriter  # type: ignore[attr-defined]

        def add_writer(writer: Any) -> None:
            self.watched.append(writer)
            real(writer)

        self.patch(reactor, "addWriter", add_writer)

    @inlineCallbacks
    def connect(self) -> Any:
        client = _Collecting()
        factory = ClientFactory()
        factory.buildProtocol = lambda addr: client  # type: ignore[method-assign]
        reactor.connectTCP("127.0.0.1", self.port.getHost().port, factory)  # type: ignore[attr-defined]
        yield client.made
        while not self.accepted:
            yield deferLater(reactor, 0.01, lambda: None)
        return client, self.accepted[-1]

    @inlineCallbacks
    def test_one_send(self) -> Any:
        """
        Writes in one pass go out in one send(), and the socket is never
        watched for writing; a close after them delivers them first.
        """
        client, server = yield self.connect()
        transport = server.transport
        sends: list[bytes] = []
        real = transport.writeSomeData
        transport.writeSomeData = lambda data: sends.append(bytes(data)) or real(data)
        transport.write(b"a")
        transport.write(b"b")
        transport.writeSequence([b"c", b"d"])
        transport.loseConnection()
        yield client.lost
        self.assertEqual(client.data, b"abcd")
        self.assertEqual(sends, [b"abcd"])
        self.assertNotIn(transport, self.watched)

    @inlineCallbacks
    def test_socket_full(self) -> Any:
        """
        What the socket does not take waits for epoll, and all of it
        arrives once the client reads again.
        """
        client, server = yield self.connect()
        client.transport.pauseProducing()
        payload = b"x" * (16 * 1024 * 1024)
        server.transport.write(payload)
        yield deferLater(reactor, 0.05, lambda: None)
        self.assertIn(server.transport, self.watched)
        client.transport.resumeProducing()
        while len(client.data) < len(payload):
            yield deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(client.data, payload)
        self.assertFalse(server.transport._watched)
        server.transport.loseConnection()
        yield client.lost

    @inlineCallbacks
    def test_abort(self) -> Any:
        """
        An abort after a write sends nothing of it, and the client sees
        the connection lost.
        """
        client, server = yield self.connect()
        server.transport.write(b"never")
        server.transport.abortConnection()
        yield client.lost
        yield server.lost
        self.assertEqual(client.data, b"")

    @inlineCallbacks
    def test_connection(self) -> Any:
        """
        A connection this process made sends eagerly too, once made so.
        """
        client, server = yield self.connect()
        self.assertTrue(eager_connection(client.transport))
        self.assertFalse(eager_connection(client.transport))  # already
        del self.watched[:]  # a connect in progress is watched for writing
        client.transport.write(b"hello ")
        client.transport.write(b"upstream")
        while server.data != b"hello upstream":
            yield deferLater(reactor, 0.01, lambda: None)
        self.assertNotIn(client.transport, self.watched)
        client.transport.loseConnection()
        yield server.lost


class EagerUNIXTests(TestCase):
    @inlineCallbacks
    def test_unix(self) -> Any:
        """
        Over a UNIX socket, both ends send eagerly, and a file descriptor
        passed goes with the bytes written after it.
        """
        accepted: list[_Collecting] = []

        @implementer(IFileDescriptorReceiver)
        class Receiving(_Collecting):
            def __init__(self) -> None:
                super().__init__()
                self.descriptors: list[int] = []

            def fileDescriptorReceived(self, descriptor: int) -> None:
                self.descriptors.append(descriptor)

        def build(addr: Any) -> _Collecting:
            protocol = Receiving()
            accepted.append(protocol)
            return protocol

        factory = Factory()
        factory.buildProtocol = build  # type: ignore[method-assign]
        path = self.mktemp()
        port = reactor.listenUNIX(path, factory)  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        self.assertTrue(eager_writes(port))
        client = _Collecting()
        connecting = ClientFactory()
        connecting.buildProtocol = lambda addr: client  # type: ignore[method-assign]
        reactor.connectUNIX(path, connecting)  # type: ignore[attr-defined]
        yield client.made
        self.assertTrue(eager_connection(client.transport))
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.addCleanup(os.close, write)
        client.transport.sendFileDescriptor(read)
        client.transport.write(b"with a descriptor")
        while not accepted or accepted[0].data != b"with a descriptor":
            yield deferLater(reactor, 0.01, lambda: None)
        server = accepted[0]
        [received] = server.descriptors  # type: ignore[attr-defined]
        self.addCleanup(os.close, received)
        os.write(write, b"!")
        self.assertEqual(os.read(received, 1), b"!")
        server.transport.write(b"answer")
        server.transport.loseConnection()
        yield client.lost
        self.assertEqual(client.data, b"answer")
