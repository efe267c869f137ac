"""
End-to-end tests of WebSockets through a proxy route: a real C{twistd
txrouter} between clients of the C{websockets} package and its server
(L{tests/apps/wsupstream.py}), every process real, on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import TestCase
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.support import Txrouter, free_port, wait_until
from tests.upstreams import _self_signed

pytestmark = pytest.mark.e2e

_UPSTREAM = Path(__file__).parent / "apps" / "wsupstream.py"
_MIB = 1 << 20


class Upstream:
    """
    A L{wsupstream} process on a free port.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, str(_UPSTREAM), str(self.port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            self.process.kill()
            raise AssertionError(f"the WebSocket upstream did not start: {line!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def rss(pid: int) -> int:
    """
    The resident memory of process C{pid}, in bytes.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def handshake(port: int, path: str) -> socket.socket:
    """
    A raw socket whose WebSocket handshake for C{path} was accepted (101).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Connection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(1)
        if not data:
            raise AssertionError(f"closed during the handshake: {head!r}")
        head += data
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def opened(case: TestCase, url: str, **options: Any) -> ClientConnection:
    """
    A client connection to C{url}, closed when C{case} ends.
    """
    stack = ExitStack()
    case.addCleanup(stack.close)
    return stack.enter_context(connect(url, max_size=None, open_timeout=10, **options))


class TunnelTests(TestCase):
    """
    One router with proxy routes to one WebSocket server.
    """

    upstream: Upstream
    router: Txrouter

    @classmethod
    def setUpClass(cls) -> None:
        cls.upstream = Upstream()
        up = f"http://127.0.0.1:{cls.upstream.port}/"
        cls.router = Txrouter(
            "listen: tcp:{port}:interface=127.0.0.1\n"
            "limits: {send_timeout: 3}\n"
            "routes:\n"
            f"  /ws/: {{proxy: '{up}'}}\n"
            f"  /few/: {{proxy: '{up}', max_tunnels: 2}}\n"
            f"  /plain/: {{proxy: '{up}', upgrade: []}}\n"
        )
        try:
            cls.router.start()
        except BaseException:
            cls.upstream.stop()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            cls.router.stop()
        finally:
            cls.upstream.stop()

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.router.port}{path}"

    def connect(self, path: str, **options: Any) -> ClientConnection:
        return opened(self, self.url(path), **options)

    def test_messages_of_16_mib(self) -> None:
        """
        Text and binary messages of 16 MiB go through whole, each way.
        """
        client = self.connect("/ws/echo")
        text = "é" * (8 * _MIB)  # 16 MiB of UTF-8
        client.send(text)
        self.assertEqual(client.recv(timeout=60), text)
        data = os.urandom(16 * _MIB)
        client.send(data)
        self.assertEqual(client.recv(timeout=60), data)

    def test_ping_pong(self) -> None:
        """
        A ping reaches the server and its pong comes back.
        """
        client = self.connect("/ws/echo")
        self.assertTrue(client.ping(b"are you there").wait(10))

    def test_close_code_from_server(self) -> None:
        """
        The close code and reason the server sends reach the client.
        """
        client = self.connect("/ws/close/4001")
        with self.assertRaises(ConnectionClosed) as raised:
            client.recv(timeout=10)
        received = raised.exception.rcvd
        assert received is not None
        self.assertEqual((received.code, received.reason), (4001, "bye"))

    def test_close_code_from_client(self) -> None:
        """
        The close code the client sends reaches the server.
        """
        client = self.connect("/ws/echo")
        client.close(4002, "done")

        def recorded() -> bool:
            closes = json.loads(self.connect("/ws/closes").recv(timeout=10))
            return 4002 in closes

        wait_until(recorded, "the server to see close code 4002")

    def test_two_clients(self) -> None:
        """
        Two clients of one room see each other's messages.
        """
        alice = self.connect("/ws/room")
        bob = self.connect("/ws/room")
        alice.send("alice is here")
        self.assertEqual(alice.recv(timeout=10), "alice is here")
        self.assertEqual(bob.recv(timeout=10), "alice is here")
        bob.send("hello alice")
        self.assertEqual(alice.recv(timeout=10), "hello alice")
        self.assertEqual(bob.recv(timeout=10), "hello alice")
        alice.send("hello bob")
        self.assertEqual(bob.recv(timeout=10), "hello bob")

    def test_forwarding_headers(self) -> None:
        """
        The handshake reaches the server with the forwarding headers and
        the client's Host, and none of the client's own forwarding claims.
        """
        client = self.connect(
            "/ws/headers", additional_headers={"X-Forwarded-For": "6.6.6.6"}
        )
        headers = json.loads(client.recv(timeout=10))
        self.assertEqual(headers["x-forwarded-for"], ["127.0.0.1"])
        self.assertEqual(headers["x-forwarded-proto"], ["http"])
        self.assertEqual(headers["x-forwarded-prefix"], ["/ws"])
        self.assertEqual(headers["host"], [f"127.0.0.1:{self.router.port}"])
        self.assertEqual(headers["upgrade"], ["websocket"])

    def test_route_that_does_not_tunnel(self) -> None:
        """
        A route with C{upgrade: []} serves the handshake as a plain request:
        the server, seeing no upgrade, refuses it, and the client hears so.
        """
        with self.assertRaises(InvalidStatus) as raised:
            opened(self, self.url("/plain/echo"))
        self.assertEqual(raised.exception.response.status_code, 426)

    def test_max_tunnels(self) -> None:
        """
        Beyond the route's C{max_tunnels}, a handshake gets 503; once a
        tunnel closes, the next is taken.
        """
        first = self.connect("/few/echo")
        self.connect("/few/echo")
        with self.assertRaises(InvalidStatus) as raised:
            opened(self, self.url("/few/echo"))
        self.assertEqual(raised.exception.response.status_code, 503)
        first.close()

        def taken() -> bool:
            try:
                with connect(self.url("/few/echo"), open_timeout=10):
                    pass
            except InvalidStatus:
                return False
            return True

        wait_until(taken, "a third tunnel to be taken")

    def test_many_tunnels(self) -> None:
        """
        500 tunnels open at once each carry their messages; the router's
        memory grows by a bounded amount per tunnel.
        """
        assert self.router.pid is not None
        before = rss(self.router.pid)
        count = 500

        async def run() -> int:
            clients = await asyncio.gather(
                *(connect_async(self.url("/ws/echo")) for _ in range(count))
            )
            try:
                for i, client in enumerate(clients):
                    await client.send(f"tunnel {i}")
                answers = [await client.recv() for client in clients]
                grown = rss(self.router.pid or 0) - before
                self.assertEqual(answers, [f"tunnel {i}" for i in range(count)])
                return grown
            finally:
                await asyncio.gather(*(client.close() for client in clients))

        grown = asyncio.run(run())
        # About 30 KiB per tunnel is seen here (two connections, their
        # buffers and Python objects); a leak of each message or a
        # stream held whole would be far more.
        self.assertLess(grown, count * 100 * 1024, f"grew by {grown} bytes")

    def test_client_that_stops_reading(self) -> None:
        """
        While a client reads nothing, the router stops reading the server
        (its memory does not grow with the stream), and after
        C{send_timeout} it closes the client.
        """
        assert self.router.pid is not None
        before = rss(self.router.pid)
        sock = handshake(self.router.port, "/ws/flood/512")
        self.addCleanup(sock.close)
        # Until send_timeout (3 s) drops the client, the server pushes
        # 512 MiB as fast as the router takes them: the router's memory is
        # sampled at each look until then.
        peak = before

        def dropped() -> bool:
            nonlocal peak
            assert self.router.pid is not None
            peak = max(peak, rss(self.router.pid))
            return "Closing a client that took nothing" in self.router.log()

        wait_until(dropped, "send_timeout to close the client")
        self.assertLess(peak - before, 32 * _MIB, f"grew by {peak - before} bytes")
        received = 0
        sock.settimeout(30)
        while True:
            try:
                data = sock.recv(_MIB)
            except ConnectionResetError:
                break
            if not data:
                break
            received += len(data)
        # What the kernel's buffers and one transport buffer held.
        self.assertLess(received, 64 * _MIB)


class UpstreamEndTests(TestCase):
    """
    A router whose WebSocket server dies, or which is stopped itself.
    """

    def start(self, extra: str = "") -> tuple[Upstream, Txrouter]:
        upstream = Upstream()
        self.addCleanup(upstream.stop)
        router = Txrouter(
            "listen: tcp:{port}:interface=127.0.0.1\n"
            f"{extra}"
            "routes:\n"
            f"  /ws/: {{proxy: 'http://127.0.0.1:{upstream.port}/'}}\n"
        )
        router.start()
        self.addCleanup(router.stop)
        return upstream, router

    def test_upstream_dies(self) -> None:
        """
        A server killed mid-conversation closes the client's connection.
        """
        upstream, router = self.start()
        client = opened(self, f"ws://127.0.0.1:{router.port}/ws/echo")
        client.send("before")
        self.assertEqual(client.recv(timeout=10), "before")
        upstream.process.send_signal(signal.SIGKILL)
        with self.assertRaises(ConnectionClosed):
            client.recv(timeout=10)

    def test_sigterm_drains_tunnels(self) -> None:
        """
        On SIGTERM, open tunnels get the drain window, are counted in the
        drain's log line, and are closed when it ends.
        """
        _, router = self.start("drain_timeout: 2\n")
        client = opened(self, f"ws://127.0.0.1:{router.port}/ws/echo")
        router.terminate()
        wait_until(lambda: "1 tunnel(s)" in router.log(), "the drain's log line")
        # Still carried during the drain window.
        client.send("during the drain")
        self.assertEqual(client.recv(timeout=10), "during the drain")
        with self.assertRaises(ConnectionClosed):
            client.recv(timeout=20)
        wait_until(lambda: not router.alive(), "the router to exit")
        self.assertIn("closing 1 tunnel(s)", router.log())

    def test_reload_closes_tunnels_of_changed_routes(self) -> None:
        """
        A reload leaves the tunnels of a route that says the same open, and
        closes those of a changed route once the drain window is over.
        """
        upstream, router = self.start("drain_timeout: 1\n")
        up = f"http://127.0.0.1:{upstream.port}/"
        router.config.write_text(
            router.config.read_text() + f"  /kept/: {{proxy: '{up}'}}\n"
        )
        os.kill(router.pid or 0, signal.SIGHUP)
        wait_until(lambda: "/kept/" in router.log(), "the first reload")
        kept = opened(self, f"ws://127.0.0.1:{router.port}/kept/echo")
        changed = opened(self, f"ws://127.0.0.1:{router.port}/ws/echo")
        text = router.config.read_text()
        router.config.write_text(
            text.replace(
                f"  /ws/: {{proxy: '{up}'}}",
                f"  /ws/: {{proxy: '{up}', max_tunnels: 9}}",
            )
        )
        os.kill(router.pid or 0, signal.SIGHUP)
        with self.assertRaises(ConnectionClosed):
            changed.recv(timeout=20)
        self.assertIn("Closing 1 tunnel(s) of a retired route", router.log())
        kept.send("still here")
        self.assertEqual(kept.recv(timeout=10), "still here")

    def test_over_tls(self) -> None:
        """
        A client on a TLS listener (wss://) gets its tunnel too, with its
        16 MiB messages and its close code, and the server hears it came
        over https.
        """
        upstream = Upstream()
        self.addCleanup(upstream.stop)
        scratch = Path(tempfile.mkdtemp(prefix="txrouter-wss-"))
        self.addCleanup(shutil.rmtree, scratch, True)
        certificate, key = _self_signed(scratch)
        port = free_port()
        router = Txrouter(
            f"listen: ssl:{port}:interface=127.0.0.1:privateKey={key}"
            f":certKey={certificate}\n"
            "routes:\n"
            f"  /ws/: {{proxy: 'http://127.0.0.1:{upstream.port}/'}}\n"
        )
        router.port = port
        router.start()
        self.addCleanup(router.stop)
        context = ssl.create_default_context(cafile=certificate)
        url = f"wss://127.0.0.1:{port}/ws"
        client = opened(self, f"{url}/headers", ssl=context)
        headers = json.loads(client.recv(timeout=10))
        self.assertEqual(headers["x-forwarded-proto"], ["https"])
        data = os.urandom(16 * _MIB)
        client.send(data)
        self.assertEqual(client.recv(timeout=60), data)
        closing = opened(self, f"{url}/close/4003", ssl=context)
        with self.assertRaises(ConnectionClosed) as raised:
            closing.recv(timeout=10)
        assert raised.exception.rcvd is not None
        self.assertEqual(raised.exception.rcvd.code, 4003)
