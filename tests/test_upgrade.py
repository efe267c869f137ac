"""
Unit tests of the private-Twisted shims an upgrade needs
(L{txrouter.privatetwisted}) and of the new router's side of the hand-over
(L{txrouter.upgrade}): they fail loudly if Twisted changes what the shims
rely on. Ports are real ones on 127.0.0.1 and in temporary folders; no
C{twistd} process is started.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import socket
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import UnsupportedAddressFamily
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.scripts._twistd_unix import ServerOptions, UnixApplicationRunner
from twisted.trial.unittest import SynchronousTestCase, TestCase

from txrouter.heap import freeze_startup_heap
from txrouter.privatetwisted import (
    forget_pidfile,
    hand_over_port,
    remember_twistd_options,
    twistd_options,
)
from txrouter.tap import Options
from txrouter.upgrade import AdoptedEndpoint, inherited_endpoint, inherited_sockets

pytestmark = pytest.mark.unit

ROUTES = """
    listen: tcp:8080:interface=127.0.0.1
    routes:
      /: {static: pub}
"""

#: A PROXY protocol (version 1) header, as a load balancer sends it.
PROXY_HEADER = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\n"


def scratch(case: SynchronousTestCase) -> Path:
    """
    A new folder under the temporary folder, removed after the test; short
    enough for a UNIX socket's path.
    """
    root = Path(tempfile.mkdtemp(prefix="txu-")).resolve()
    case.addCleanup(shutil.rmtree, root, ignore_errors=True)
    return root


def closed(fd: int) -> bool:
    """
    Whether C{fd} is no open file descriptor.
    """
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


class TwistdOptionsTests(SynchronousTestCase):
    """
    L{twistd_options} gives the C{ServerOptions} of the C{twistd txrouter}
    running this process, that L{remember_twistd_options} was given the
    sub-command's options of, and L{forget_pidfile} blanks its pidfile.
    """

    def setUp(self) -> None:
        self.root = scratch(self)
        (self.root / "pub").mkdir()
        self.routes = self.root / "routes.yaml"
        self.routes.write_text(textwrap.dedent(ROUTES).lstrip("\n"))
        self.pidfile = self.root / "twistd.pid"
        # Options of a test must not be found by the next one.
        self.addCleanup(gc.collect)

    def parsed(self) -> ServerOptions:
        """
        twistd's options for C{twistd --nodaemon --pidfile P txrouter
        --config F}, parsed as twistd parses them, and remembered as
        L{txrouter.tap.makeService} remembers them.
        """
        options = ServerOptions()
        options.parseOptions(
            [
                "--nodaemon",
                "--pidfile",
                str(self.pidfile),
                "txrouter",
                "--config",
                str(self.routes),
            ]
        )
        remember_twistd_options(options.subOptions)
        return options

    def test_plain_process(self) -> None:
        """
        In a process not run by twistd there are none.
        """
        gc.collect()
        self.assertIsNone(twistd_options())
        forget_pidfile()  # and forgetting the pidfile does nothing

    def test_found(self) -> None:
        """
        The remembered options of C{twistd ... txrouter} are found, and
        L{forget_pidfile} blanks their C{pidfile}.
        """
        options = self.parsed()
        self.assertEqual(options.subCommand, "txrouter")
        self.assertEqual(options.subOptions["config"], self.routes)
        self.assertIs(twistd_options(), options)
        self.assertEqual(options["pidfile"], str(self.pidfile))
        forget_pidfile()
        self.assertEqual(options["pidfile"], "")

    def test_found_in_frozen_heap(self) -> None:
        """
        They are found after the startup heap is frozen too (a scan of the
        collector's objects would miss them).
        """
        options = self.parsed()
        self.addCleanup(gc.unfreeze)
        freeze_startup_heap()
        self.assertIs(twistd_options(), options)

    def test_only_while_kept(self) -> None:
        """
        Once twistd lets its options go, they are no longer found.
        """
        self.parsed()
        gc.collect()
        self.assertIsNone(twistd_options())

    def test_not_parsed_by_twistd(self) -> None:
        """
        Sub-command options that no twistd parsed leave nothing to find.
        """
        options = Options()
        options.parseOptions(["--config", str(self.routes)])
        remember_twistd_options(options)
        gc.collect()
        self.assertIsNone(twistd_options())

    def run_reactorless(self, while_running: Callable[[], None]) -> None:
        """
        Run twistd's own L{UnixApplicationRunner.postApplication} on parsed
        options, with the application start and the reactor run replaced by
        C{while_running}: what twistd does with the pidfile when the reactor
        stops.
        """

        class Runner(UnixApplicationRunner):
            def startApplication(self, application: Any) -> None:
                pass

            def startReactor(self, reactor: Any, out: Any, err: Any) -> None:
                while_running()

        runner = Runner(self.parsed())
        runner.application = None
        runner.oldstdout, runner.oldstderr = sys.stdout, sys.stderr
        self.pidfile.write_text(f"{os.getpid()}\n")
        runner.postApplication()

    def test_twistd_removes_pidfile(self) -> None:
        """
        twistd removes the pidfile its options name once the reactor stops
        (what L{forget_pidfile} is for).
        """
        self.run_reactorless(lambda: None)
        self.assertFalse(self.pidfile.exists())

    def test_forgotten_pidfile_kept(self) -> None:
        """
        After L{forget_pidfile} while the reactor runs, twistd leaves the
        pidfile (now the new router's) alone when it stops.
        """
        self.run_reactorless(forget_pidfile)
        self.assertTrue(self.pidfile.exists())


class Accepting(Protocol):
    """
    Fires C{factory.connected} with the peer address and the first data.
    """

    factory: AcceptingFactory

    def dataReceived(self, data: bytes) -> None:
        if not self.factory.connected.called:
            self.factory.connected.callback((self.transport.getPeer(), data))


class AcceptingFactory(Factory):
    protocol = Accepting

    def __init__(self) -> None:
        self.connected: Deferred[tuple[Any, bytes]] = Deferred()


def accepts(listening: socket.socket, address: Any, family: int) -> bool:
    """
    Whether a client can connect to C{address} and C{listening} accepts it.
    """
    listening.settimeout(5)
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        try:
            client.connect(address)
            connection, _ = listening.accept()
        except OSError:
            return False
        connection.close()
    return True


class HandOverPortTests(TestCase):
    """
    L{hand_over_port} makes a real listening port, when it stops, leave its
    socket to another holder: not shut down, and (UNIX) its file kept.
    """

    def setUp(self) -> None:
        self.root = scratch(self)

    def listen_tcp(self) -> Any:
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(lambda: port.connected and port.stopListening())
        return port

    def listen_unix(self) -> tuple[Any, Path]:
        path = self.root / "web.sock"
        port = reactor.listenUNIX(str(path), Factory())
        self.addCleanup(lambda: port.connected and port.stopListening())
        return port, path

    def other_holder(self, port: Any) -> socket.socket:
        """
        A duplicate of C{port}'s socket, as the new router holds it.
        """
        held = socket.socket(fileno=os.dup(port.fileno()))
        self.addCleanup(held.close)
        return held

    @inlineCallbacks
    def test_tcp(self) -> Any:
        """
        A TCP port handed over stops listening, and the other holder's copy
        still accepts connections.
        """
        port = self.listen_tcp()
        address = ("127.0.0.1", port.getHost().port)
        held = self.other_holder(port)
        hand_over_port(port)
        yield port.stopListening()
        self.assertTrue(
            accepts(held, address, socket.AF_INET),
            "tcp.Port shut the shared socket down: Twisted changed "
            "_shouldShutdown (txrouter/privatetwisted.py)",
        )

    @inlineCallbacks
    def test_tcp_without(self) -> Any:
        """
        Without L{hand_over_port}, stopping shuts the socket down for every
        holder: what the shim prevents.
        """
        port = self.listen_tcp()
        address = ("127.0.0.1", port.getHost().port)
        held = self.other_holder(port)
        yield port.stopListening()
        self.assertFalse(accepts(held, address, socket.AF_INET))

    @inlineCallbacks
    def test_unix(self) -> Any:
        """
        A UNIX port handed over keeps its socket file, and the other
        holder's copy still accepts connections there.
        """
        port, path = self.listen_unix()
        held = self.other_holder(port)
        hand_over_port(port)
        yield port.stopListening()
        self.assertTrue(
            path.is_socket(),
            "unix.Port removed its socket file: Twisted changed _bindPath "
            "(txrouter/privatetwisted.py)",
        )
        self.assertTrue(accepts(held, str(path), socket.AF_UNIX))

    @inlineCallbacks
    def test_unix_without(self) -> Any:
        """
        Without L{hand_over_port}, stopping a UNIX port removes its socket
        file: what the shim prevents.
        """
        port, path = self.listen_unix()
        self.other_holder(port)
        self.assertTrue(path.is_socket())
        yield port.stopListening()
        self.assertFalse(path.exists())


class InheritedSocketsTests(SynchronousTestCase):
    """
    L{inherited_sockets} reads the sockets handed over once, and hides them
    from the processes started after.
    """

    def setUp(self) -> None:
        saved = os.environ.pop("TXROUTER_INHERITED", None)
        self.addCleanup(self.restore, saved)

    def restore(self, saved: str | None) -> None:
        os.environ.pop("TXROUTER_INHERITED", None)
        if saved is not None:
            os.environ["TXROUTER_INHERITED"] = saved

    def test_read_and_removed(self) -> None:
        """
        The endpoint strings and descriptors are read, and the variable is
        removed so that a second read (or a worker) sees none.
        """
        handed = {"tcp:8080:interface=127.0.0.1": 3, "unix:/run/a.sock": 4}
        os.environ["TXROUTER_INHERITED"] = json.dumps(handed)
        self.assertEqual(inherited_sockets(), handed)
        self.assertNotIn("TXROUTER_INHERITED", os.environ)
        self.assertEqual(inherited_sockets(), {})

    def test_none(self) -> None:
        """
        With no variable, or an empty one, nothing was handed over.
        """
        self.assertEqual(inherited_sockets(), {})
        os.environ["TXROUTER_INHERITED"] = ""
        self.assertEqual(inherited_sockets(), {})
        self.assertNotIn("TXROUTER_INHERITED", os.environ)


class InheritedEndpointTests(SynchronousTestCase):
    """
    L{inherited_endpoint} listens on the socket handed over, inside as many
    C{haproxy:} wrappers as the endpoint string has.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactor()

    def handed_fd(self, family: int = socket.AF_INET) -> int:
        """
        A descriptor of a real socket, that the endpoint is to close.
        """
        with socket.socket(family, socket.SOCK_STREAM) as made:
            fd = os.dup(made.fileno())
        self.addCleanup(lambda: closed(fd) or os.close(fd))
        return fd

    def test_plain(self) -> None:
        """
        A C{tcp:} string adopts the descriptor with the factory as it is,
        and closes the descriptor it was given (the port holds a duplicate).
        """
        fd = self.handed_fd()
        endpoint = inherited_endpoint(self.reactor, "tcp:8080", fd)
        self.assertTrue(IStreamServerEndpoint.providedBy(endpoint))
        self.assertIsInstance(endpoint, AdoptedEndpoint)
        factory = Factory()
        self.successResultOf(endpoint.listen(factory))
        self.assertEqual(self.reactor.adoptedPorts, [(fd, socket.AF_INET, factory)])
        self.assertTrue(closed(fd))

    def test_tcp6(self) -> None:
        """
        A C{tcp6:} string adopts an IPv6 socket.
        """
        fd = self.handed_fd(socket.AF_INET6)
        endpoint = inherited_endpoint(self.reactor, "tcp6:8080:interface=\\:\\:1", fd)
        self.successResultOf(endpoint.listen(Factory()))
        [(_, family, _)] = self.reactor.adoptedPorts
        self.assertEqual(family, socket.AF_INET6)

    def test_haproxy(self) -> None:
        """
        A C{haproxy:tcp:} string adopts the descriptor with the factory
        wrapped to read the PROXY header.
        """
        fd = self.handed_fd()
        endpoint = inherited_endpoint(self.reactor, "haproxy:tcp:8080", fd)
        self.assertNotIsInstance(endpoint, AdoptedEndpoint)
        factory = Factory()
        self.successResultOf(endpoint.listen(factory))
        [(adopted, family, wrapper)] = self.reactor.adoptedPorts
        self.assertEqual((adopted, family), (fd, socket.AF_INET))
        # What the wrapper does is shown on the real reactor below.
        self.assertIsNot(wrapper, factory)
        self.assertIs(wrapper.wrappedFactory, factory)
        self.assertTrue(closed(fd))

    def test_not_adoptable(self) -> None:
        """
        An endpoint type whose socket cannot be adopted has no inherited
        endpoint.
        """
        with self.assertRaises(KeyError):
            inherited_endpoint(self.reactor, "ssl:443", self.handed_fd())

    def test_memory_reactor_unix(self) -> None:
        """
        The in-memory reactor adopts no UNIX socket (so the UNIX tests below
        use the real one).
        """
        fd = self.handed_fd(socket.AF_UNIX)
        endpoint = inherited_endpoint(self.reactor, "unix:/run/a.sock", fd)
        with self.assertRaises(UnsupportedAddressFamily):
            endpoint.listen(Factory())


class AdoptedEndpointTests(TestCase):
    """
    On the real reactor, an adopted socket serves connections, through the
    PROXY protocol when the string says C{haproxy:}.
    """

    def setUp(self) -> None:
        self.root = scratch(self)

    def listening(self, family: int, address: Any) -> tuple[int, Any]:
        """
        A listening, non-blocking socket (as an old router's is) of
        C{family} bound to C{address}.

        @return: a descriptor of it to hand over, and its address.
        """
        made = socket.socket(family, socket.SOCK_STREAM)
        made.bind(address)
        made.listen(5)
        made.setblocking(False)
        fd = os.dup(made.fileno())
        where = made.getsockname()
        made.close()
        self.addCleanup(lambda: closed(fd) or os.close(fd))
        return fd, where

    @inlineCallbacks
    def serve(
        self, description: str, fd: int, family: int, address: Any, data: bytes
    ) -> Any:
        """
        Listen on the handed-over C{fd} as C{description}, connect a client
        to C{address} and send C{data}.

        @return: what the server's protocol saw: the peer and the data.
        """
        factory = AcceptingFactory()
        port = yield inherited_endpoint(reactor, description, fd).listen(factory)
        self.addCleanup(port.stopListening)
        self.assertTrue(closed(fd))
        client = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.settimeout(5)
        client.connect(address)
        client.sendall(data)
        seen = yield factory.connected
        return seen

    @inlineCallbacks
    def test_tcp(self) -> Any:
        """
        An adopted TCP socket accepts connections.
        """
        fd, address = self.listening(socket.AF_INET, ("127.0.0.1", 0))
        description = f"tcp:{address[1]}:interface=127.0.0.1"
        peer, data = yield self.serve(
            description, fd, socket.AF_INET, address, b"hello"
        )
        self.assertEqual(data, b"hello")
        self.assertEqual(peer.host, "127.0.0.1")

    @inlineCallbacks
    def test_haproxy_unix(self) -> Any:
        """
        An adopted UNIX socket, as C{haproxy:unix:}, accepts connections and
        reports the client named by the PROXY header.
        """
        path = str(self.root / "web.sock")
        fd, _ = self.listening(socket.AF_UNIX, path)
        peer, data = yield self.serve(
            f"haproxy:unix:{path}",
            fd,
            socket.AF_UNIX,
            path,
            PROXY_HEADER + b"hello",
        )
        self.assertEqual(data, b"hello")
        self.assertEqual(peer, IPv4Address("TCP", "192.0.2.7", 5555))
