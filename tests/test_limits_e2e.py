"""
End to end: the edge's limits and deadlines against real sockets, on a
daemonized router with short deadlines: slowloris, a slow body, a client
that stops reading, and a connection flood, while another client is
served as usual; and C{max_connections} counted per listener.
"""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support import Txrouter, free_port, request, stop_daemon, wait_until

pytestmark = pytest.mark.e2e


def _read_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


class LimitsTests(SynchronousTestCase):
    """
    A router with 1 s deadlines and room for 20 connections.
    """

    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="txrouter-limits-"))
        (self.folder / "small.txt").write_bytes(b"small\n")
        (self.folder / "big.bin").write_bytes(b"\0" * (64 * 1024 * 1024))
        self.server = Txrouter(
            f"""
listen: tcp:{{port}}:interface=127.0.0.1
limits:
  head_timeout: 1
  body_timeout: 1
  send_timeout: 2
  max_connections: 20
routes:
  /files/: {{static: {self.folder}}}
"""
        )
        self.addCleanup(stop_daemon, self.server, (), self.folder)
        self.server.start()

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
        self.addCleanup(sock.close)
        return sock

    def served(self) -> bool:
        status, _, body = request(self.server.port, "GET", "/files/small.txt")
        return (status, body) == (200, b"small\n")

    def test_slowloris(self) -> None:
        """
        A head sent a byte at a time gets a 408 and is closed after
        C{head_timeout}; others are served meanwhile.
        """
        sock = self.connect()
        started = time.monotonic()
        head = b"GET /files/small.txt HTTP/1.1\r\nHost: a\r\n\r\n"
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)  # the slowloris pace itself, not a wait
                self.assertTrue(self.served())
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_all(sock)
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer)
        self.assertLess(time.monotonic() - started, 5)

    def test_slow_body(self) -> None:
        """
        A body that stops gets a 408 after C{body_timeout}.
        """
        sock = self.connect()
        sock.sendall(
            b"POST /files/small.txt HTTP/1.1\r\nHost: a\r\n"
            b"Content-Length: 100\r\n\r\nonly some"
        )
        answer = _read_all(sock)
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer)

    def test_client_not_reading(self) -> None:
        """
        A client that asks for 64 MiB and reads nothing is dropped after
        C{send_timeout}, and the router goes on serving.
        """
        sock = self.connect()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /files/big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        wait_until(
            lambda: "Closing a client that took nothing for 2" in self.server.log(),
            "the router to drop the client",
            timeout=15,
        )
        self.assertTrue(self.served())
        got = _read_all(sock, timeout=5)
        self.assertLess(len(got), 64 * 1024 * 1024)

    def test_connection_flood(self) -> None:
        """
        Past C{max_connections}, new connections are closed at once; the
        open ones are served, and room comes back when they close.
        """
        held = [self.connect() for _ in range(20)]
        wait_until(lambda: "Starting factory" in self.server.log(), "the site")
        extra = self.connect()
        self.assertEqual(_read_all(extra, timeout=5), b"")
        held[0].sendall(
            b"GET /files/small.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        self.assertIn(b"small", _read_all(held[0]))
        for sock in held:
            sock.close()
        wait_until(self.served, "room for a new connection", timeout=10)
        self.assertIn("connection(s) refused so far", self.server.log())


class PerListenerLimitTests(SynchronousTestCase):
    """
    A router on two ports, with room for 5 connections on each.
    """

    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="txrouter-limits-"))
        (self.folder / "small.txt").write_bytes(b"small\n")
        self.other = free_port()
        self.server = Txrouter(
            f"""
listen:
  - tcp:{{port}}:interface=127.0.0.1
  - tcp:{self.other}:interface=127.0.0.1
limits:
  max_connections: 5
routes:
  /files/: {{static: {self.folder}}}
"""
        )
        self.addCleanup(stop_daemon, self.server, (), self.folder)
        self.server.start()
        wait_until(lambda: "Starting factory" in self.server.log(), "the site")

    def connect(self, port: int) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(sock.close)
        return sock

    def served(self, port: int) -> bool:
        status, _, body = request(port, "GET", "/files/small.txt")
        return (status, body) == (200, b"small\n")

    def test_full_listener_leaves_the_other_room(self) -> None:
        """
        With one listener's C{max_connections} open, a new connection to it
        is closed at once, while the other listener takes its own
        C{max_connections} and serves; when the first one's connections
        close, it serves again.
        """
        first = self.server.port
        held = [self.connect(first) for _ in range(5)]
        self.assertEqual(_read_all(self.connect(first), timeout=5), b"")
        on_other = [self.connect(self.other) for _ in range(4)]
        self.assertTrue(self.served(self.other))  # its fifth
        on_other[0].sendall(
            b"GET /files/small.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        self.assertIn(b"small", _read_all(on_other[0]))
        held[0].sendall(
            b"GET /files/small.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        self.assertIn(b"small", _read_all(held[0]))
        for sock in held:
            sock.close()
        wait_until(lambda: self.served(first), "room on the first listener", 10)
        log = self.server.log()
        self.assertIn(
            f"tcp:{first}:interface=127.0.0.1 (127.0.0.1:{first}): 1 connection(s) "
            "refused so far",
            log,
        )
        self.assertNotIn(f"tcp:{self.other}:interface=127.0.0.1 (", log)
