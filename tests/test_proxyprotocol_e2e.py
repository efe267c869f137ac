"""
End to end: a real, daemonized C{twistd txrouter} behind a real HAProxy
(C{mode tcp}, PROXY protocol v2 and v1, one frontend passing TLS through):
the apps (in the router, in a worker), a proxied upstream and the access
log see the client's address as HAProxy reports it; a peer that is not in
C{trusted_proxies} is closed at once, with a log line.

HAProxy names every client 192.0.2.7 (C{tcp-request connection set-src}),
a documentation address no connection here comes from: an app that sees
it got it from the PROXY header, not from the TCP peer (127.0.0.1).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import Authority
from tests.support import (
    APPS,
    Txrouter,
    free_port,
    kill_workers,
    listening,
    program,
    request,
    wait_until,
)
from tests.upstreams import RecordingUpstream

pytestmark = pytest.mark.e2e

#: The client address HAProxy puts in its PROXY headers.
CLIENT = "192.0.2.7"


class HAProxy:
    """
    A real HAProxy in the foreground (C{-db}), in TCP mode, with one
    frontend on a free 127.0.0.1 port per backend given.
    """

    def __init__(self, folder: Path, backends: list[tuple[int, str]]) -> None:
        """
        @param backends: the router's port and the C{server} options
            (C{send-proxy-v2}, C{send-proxy}) of each frontend.
        """
        self.ports = [free_port() for _ in backends]
        sections = [
            "global\n    maxconn 200\n",
            "defaults\n    mode tcp\n    timeout connect 5s\n"
            "    timeout client 30s\n    timeout server 30s\n",
        ]
        for number, ((target, options), port) in enumerate(
            zip(backends, self.ports, strict=True)
        ):
            sections.append(
                f"frontend fe{number}\n    bind 127.0.0.1:{port}\n"
                f"    tcp-request connection set-src ipv4({CLIENT})\n"
                f"    default_backend be{number}\n"
                f"backend be{number}\n"
                f"    server router 127.0.0.1:{target} {options}\n"
            )
        self.config = folder / "haproxy.cfg"
        self.config.write_text("".join(sections))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> HAProxy:
        self._process = subprocess.Popen(
            [_haproxy(), "-db", "-f", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        process = self._process
        for port in self.ports:

            def up(port: int = port) -> bool:
                if process.poll() is not None:
                    errors = process.stderr.read() if process.stderr else b""
                    raise AssertionError(f"haproxy exited: {errors.decode()}")
                return listening(port)

            wait_until(up, f"haproxy on port {port}")
        return self

    def stop(self) -> None:
        """
        SIGTERM HAProxy by its PID and wait for it (SIGKILL after 10 s).
        """
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def _haproxy() -> str:
    return program("haproxy", "haproxy", "/usr/sbin")


_ROUTES = """\
listen:
  - tcp:{port}:interface=127.0.0.1
  - haproxy:tcp:{plain}:interface=127.0.0.1
  - endpoint: haproxy:tcp:{tls}:interface=127.0.0.1
    tls:
      certificates: [certs/]
trusted_proxies: [127.0.0.1]
access_log: access.log
routes:
  /app/: {{wsgi: "whoami:application", path: {apps}}}
  /worker/: {{wsgi: "whoami:application", path: {apps}, workers: 1}}
  /up/: {{proxy: "{upstream}/"}}
"""


class BehindHAProxyTests(SynchronousTestCase):
    """
    One router with a plain and a TLS C{haproxy:} listener, HAProxy in
    front of each (PROXY v2 for the plain one, v1 for TLS).
    """

    folder: ClassVar[Path]
    router: ClassVar[Txrouter]
    haproxy: ClassVar[HAProxy]
    upstream: ClassVar[RecordingUpstream]
    authority: ClassVar[Authority]
    workers: ClassVar[set[int]]
    plain: ClassVar[int]

    @classmethod
    def setUpClass(cls) -> None:
        _haproxy()  # before anything starts
        cls.folder = Path(tempfile.mkdtemp(prefix="txrouter-haproxy-"))
        cls.workers = set()
        with contextlib.ExitStack() as undo:
            undo.callback(shutil.rmtree, cls.folder, True)
            cls.upstream = RecordingUpstream().start()
            undo.callback(cls.upstream.stop)
            cls.authority = Authority(cls.folder)
            plain, tls = free_port(), free_port()
            cls.plain = plain
            router = cls.router = Txrouter("")
            certs = router.dir / "certs"
            certs.mkdir()
            cls.authority.issue(["a.test", "127.0.0.1"], to=certs / "a.pem")
            router.config.write_text(
                _ROUTES.format(
                    port=router.port,
                    plain=plain,
                    tls=tls,
                    apps=APPS,
                    upstream=cls.upstream.url,
                )
            )
            router.start()
            undo.callback(router.stop)
            cls.haproxy = HAProxy(
                cls.folder, [(plain, "send-proxy-v2"), (tls, "send-proxy")]
            ).start()
            undo.callback(cls.haproxy.stop)
            wait_until(lambda: cls.get("/worker/")[0] == 200, "the worker", timeout=60)
            cls.workers.add(cls.get("/worker/")[1]["pid"])
            undo.pop_all()

    @classmethod
    def tearDownClass(cls) -> None:
        with contextlib.ExitStack() as steps:
            steps.callback(shutil.rmtree, cls.folder, True)
            steps.callback(cls.upstream.stop)
            steps.callback(kill_workers, cls.workers)
            steps.callback(cls.router.stop)
            steps.callback(cls.haproxy.stop)

    @classmethod
    def get(cls, path: str) -> tuple[int, Any]:
        """
        GET C{path} through HAProxy's plain frontend; the JSON it answers.
        """
        status, _, body = request(cls.haproxy.ports[0], "GET", path)
        return status, json.loads(body) if status == 200 else body

    def test_in_process_app(self) -> None:
        """
        An app in the router process gets HAProxy's client as
        C{REMOTE_ADDR}.
        """
        status, facts = self.get("/app/")
        self.assertEqual(status, 200)
        self.assertEqual(facts["remote_addr"], CLIENT)
        self.assertEqual(facts["pid"], self.router.pid)
        self.assertEqual(facts["scheme"], "http")

    def test_worker(self) -> None:
        """
        An app in a worker process gets HAProxy's client as C{REMOTE_ADDR}.
        """
        status, facts = self.get("/worker/")
        self.assertEqual(status, 200)
        self.assertEqual(facts["remote_addr"], CLIENT)
        self.assertNotEqual(facts["pid"], self.router.pid)

    def test_upstream(self) -> None:
        """
        A proxied upstream gets HAProxy's client in C{X-Forwarded-For}
        (and in C{Forwarded}), not HAProxy's own address.
        """
        status, _, _ = request(self.haproxy.ports[0], "GET", "/up/echo?tag=haproxy-xff")
        self.assertEqual(status, 200)
        [seen] = self.upstream.seen(tag="haproxy-xff")
        headers = {k.lower(): v for k, v in seen.headers}
        self.assertEqual(headers["x-forwarded-for"], CLIENT)
        self.assertIn(f"for={CLIENT}", headers.get("forwarded", ""))

    def test_access_log(self) -> None:
        """
        The access log names HAProxy's client.
        """
        log = self.router.dir / "access.log"

        def logged() -> list[str]:
            try:
                text = log.read_text()
            except FileNotFoundError:
                return []
            return [line for line in text.splitlines() if "/app/?log-me" in line]

        self.assertEqual(self.get("/app/?log-me")[0], 200)
        wait_until(logged, "the access log line")
        # The combined format quotes the client's address, as Twisted's does.
        self.assertEqual(logged()[0].split()[0].strip('"'), CLIENT, logged())

    def test_tls_passed_through(self) -> None:
        """
        TLS passed through HAProxy (TCP mode, PROXY v1 header before the
        handshake) reaches the router's TLS listener: the certificate is
        the router's, the app sees HTTPS and HAProxy's client.
        """
        context = ssl.create_default_context(cafile=str(self.authority.path))
        with (
            socket.create_connection(
                ("127.0.0.1", self.haproxy.ports[1]), timeout=10
            ) as raw,
            context.wrap_socket(raw, server_hostname="a.test") as tls,
        ):
            tls.sendall(
                b"GET /app/ HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
            )
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        facts = json.loads(body)
        self.assertEqual(facts["remote_addr"], CLIENT)
        self.assertEqual(facts["scheme"], "https")

    def test_trusted_peer_with_no_header(self) -> None:
        """
        A trusted peer's connection that does not start with a PROXY header
        is closed: a request sent straight to the listener gets no answer.
        """
        with socket.create_connection(("127.0.0.1", self.plain), timeout=10) as raw:
            raw.sendall(b"GET /app/ HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(_until_closed(raw), b"")


def _until_closed(connection: socket.socket) -> bytes:
    """
    What the server sends on C{connection} until it closes it (a reset
    counts as a close); fails if it stays open for the socket's timeout.
    """
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


class UntrustedPeerTests(SynchronousTestCase):
    """
    A router whose C{trusted_proxies} do not include 127.0.0.1.
    """

    def setUp(self) -> None:
        self.proxied = free_port()
        router = self.router = Txrouter(
            "listen:\n"
            "  - tcp:{port}:interface=127.0.0.1\n"
            f"  - haproxy:tcp:{self.proxied}:interface=127.0.0.1\n"
            "trusted_proxies: [192.0.2.0/24]\n"
            f"routes: {{/: {{wsgi: 'whoami:application', path: {APPS}}}}}\n"
        )
        self.addCleanup(shutil.rmtree, router.dir, True)
        router.start()
        self.addCleanup(router.stop)

    def test_closed_at_once(self) -> None:
        """
        A connection from a peer not in C{trusted_proxies} is closed before
        anything is read, even with a well-formed PROXY header claiming a
        trusted address; the log names the peer and the listener.
        """
        with socket.create_connection(("127.0.0.1", self.proxied), timeout=10) as raw:
            with contextlib.suppress(OSError):
                raw.sendall(
                    b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 80\r\n"
                    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                )
            self.assertEqual(_until_closed(raw), b"")
        wait_until(
            lambda: "which is not in trusted_proxies" in self.router.log(),
            "the log line",
        )
        [line] = [
            line
            for line in self.router.log().splitlines()
            if "which is not in trusted_proxies" in line
        ]
        self.assertIn("from 127.0.0.1,", line)
        self.assertIn(f"haproxy:tcp:{self.proxied}:interface=127.0.0.1", line)
        self.assertTrue(self.router.alive())
