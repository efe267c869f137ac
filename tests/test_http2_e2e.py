"""
End to end: HTTP/2 over ALPN on a real, daemonized C{twistd txrouter}'s
TLS listener, with real clients: curl (C{--http2}), h2load (Debian's
C{nghttp2-client}) and, for what the limits and guards do on the wire, a
client on the C{h2} package over Python's C{ssl}.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, RstStreamFrame
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import Authority
from tests.support import APPS, Txrouter, free_port, program, request, wait_until

pytestmark = pytest.mark.e2e

_ROUTES = """\
listen:
  - tcp:{{port}}:interface=127.0.0.1
  - endpoint: tcp:{tls_port}:interface=127.0.0.1
    tls: {{certificates: [certs/]}}
  - endpoint: tcp:{h1_port}:interface=127.0.0.1
    tls: {{certificates: [certs/], http2: false}}
limits:
  body_timeout: 1
  send_timeout: 1
  keepalive_timeout: 2
  max_header: 1K
  max_streams: 8
routes:
  /: {{static: pub}}
  /app/: {{wsgi: "probe:application", path: {apps}, max_body: 256K}}
  /worker/: {{wsgi: "probe:application", path: {apps}, workers: 1}}
"""

_NAME = "h2.test"


class H2Client:
    """
    A blocking HTTP/2 client over TLS (ALPN C{h2}) on the C{h2} package,
    which keeps every event it reads.
    """

    def __init__(
        self, port: int, ca: Path, settings: dict[int, int] | None = None
    ) -> None:
        context = ssl.create_default_context(cafile=str(ca))
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname=_NAME)
        assert self.sock.selected_alpn_protocol() == "h2"
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.events: list[Any] = []
        self.closed = False
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def close(self) -> None:
        self.sock.close()

    def send(
        self,
        path: str,
        method: str = "GET",
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
        end: bool = True,
    ) -> int:
        """
        Start a request; return its stream ID. Without C{end}, the request
        stays open (its body still to come).
        """
        stream = self.conn.get_next_available_stream_id()
        head = [
            (b":method", method.encode()),
            (b":path", path.encode()),
            (b":scheme", b"https"),
            (b":authority", _NAME.encode()),
            *((k.encode(), v.encode()) for k, v in headers),
        ]
        self.conn.send_headers(stream, head, end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(stream, body, end_stream=end)
        self.flush()
        return stream

    def read_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """
        Read and keep events until C{done()} or the connection closes.
        """
        deadline = time.monotonic() + timeout
        while not done() and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; events so far: {self.events}")
            data = self.recv(left)
            if data is None:
                continue
            if not data:
                self.closed = True
                break
            events = self.conn.receive_data(data)
            for event in events:
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            self.events.extend(events)
            self.flush()

    def recv(self, timeout: float) -> bytes | None:
        """
        What the socket has within C{timeout} seconds: L{None} if nothing,
        C{b""} once the connection is closed.
        """
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            return None
        except (ssl.SSLError, ConnectionResetError):
            return b""

    def pump(self, seconds: float = 0.2) -> None:
        """
        Read what arrives within C{seconds}.
        """
        with contextlib.suppress(AssertionError):  # nothing more, for now
            self.read_until(lambda: False, seconds)

    def of(self, stream: int) -> list[Any]:
        return [e for e in self.events if getattr(e, "stream_id", None) == stream]

    def ended(self, stream: int) -> bool:
        return any(
            isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))
            for e in self.of(stream)
        )

    def response(self, stream: int, timeout: float = 10.0) -> tuple[int, bytes]:
        """
        The status and body of C{stream}, once it ends.
        """
        self.read_until(lambda: self.ended(stream), timeout)
        status, body = 0, b""
        for event in self.of(stream):
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
        return status, body

    def reset_code(self, stream: int) -> int | None:
        for event in self.of(stream):
            if isinstance(event, h2.events.StreamReset):
                return int(event.error_code)
        return None

    def goaway(self) -> Any:
        for event in self.events:
            if isinstance(event, h2.events.ConnectionTerminated):
                return event
        return None


class HTTP2Tests(SynchronousTestCase):
    folder: ClassVar[Path]
    authority: ClassVar[Authority]
    router: ClassVar[Txrouter]
    tls_port: ClassVar[int]
    h1_port: ClassVar[int]

    @classmethod
    def setUpClass(cls) -> None:
        cls.folder = Path(tempfile.mkdtemp(prefix="txrouter-h2-"))
        cls.authority = Authority(cls.folder)
        cls.tls_port, cls.h1_port = free_port(), free_port()
        router = cls.router = Txrouter("")
        pub = router.dir / "pub"
        pub.mkdir()
        (pub / "index.html").write_text("hello over h2\n")
        (pub / "big.bin").write_bytes(os.urandom(1024 * 1024))
        certs = router.dir / "certs"
        certs.mkdir()
        cls.authority.issue([_NAME, "127.0.0.1"], to=certs / "h2.pem")
        router.config.write_text(
            _ROUTES.format(
                tls_port=cls.tls_port, h1_port=cls.h1_port, apps=APPS
            ).replace("{port}", str(router.port))
        )
        try:
            router.start()
            wait_until(
                lambda: request(router.port, "GET", "/worker/environ")[0] == 200,
                "the worker",
                60,
            )
        except BaseException:
            router.stop()
            shutil.rmtree(cls.folder, True)
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            cls.router.stop()
        finally:
            shutil.rmtree(cls.folder, True)

    def client(self, settings: dict[int, int] | None = None) -> H2Client:
        client = H2Client(self.tls_port, self.authority.path, settings)
        self.addCleanup(client.close)
        return client

    def curl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.authority.curl(
            "--http2",
            "--resolve",
            f"{_NAME}:{self.tls_port}:127.0.0.1",
            "--resolve",
            f"{_NAME}:{self.h1_port}:127.0.0.1",
            *args,
        )

    def url(self, path: str, port: int | None = None) -> str:
        return f"https://{_NAME}:{port or self.tls_port}{path}"

    # -- real clients

    def test_curl(self) -> None:
        """
        curl gets HTTP/2 on the TLS listener, and HTTP/1.1 where the
        listener says C{http2: false}; an app sees HTTPS and the client.
        """
        result = self.curl("--include", self.url("/index.html"))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(result.stdout.startswith("HTTP/2 200"), result.stdout)
        self.assertTrue(result.stdout.endswith("hello over h2\n"), result.stdout)
        result = self.curl("--include", self.url("/index.html", self.h1_port))
        self.assertTrue(result.stdout.startswith("HTTP/1.1 200"), result.stdout)
        for prefix in ("/app", "/worker"):
            result = self.curl(self.url(f"{prefix}/environ?q=1"))
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn(f"HTTP_HOST={_NAME}:{self.tls_port}\n", result.stdout)
            self.assertIn("wsgi.url_scheme=https\n", result.stdout)
            self.assertIn("REMOTE_ADDR=127.0.0.1\n", result.stdout)
            self.assertIn(f"SCRIPT_NAME={prefix}\n", result.stdout)

    def test_curl_bodies(self) -> None:
        """
        A request body of 200 KiB reaches an app in process and one in a
        worker whole; a 1 MiB response comes back whole; several requests
        share one connection (C{--parallel}).
        """
        body = os.urandom(200 * 1024)
        upload = self.router.dir / "upload.bin"
        upload.write_bytes(body)
        expected = f"{len(body)} {hashlib.sha256(body).hexdigest()}"
        for prefix in ("/app", "/worker"):
            result = self.curl(
                "--data-binary", f"@{upload}", self.url(f"{prefix}/echo")
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stdout, expected)
        out = self.router.dir / "big.out"
        result = self.curl(
            "--parallel",
            "--output",
            str(out),
            self.url("/big.bin"),
            "--output",
            "/dev/null",
            self.url("/index.html"),
            "--output",
            "/dev/null",
            self.url("/worker/environ"),
            "--write-out",
            "%{http_version} %{response_code}\n",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(sorted(result.stdout.split("\n")[:-1]), ["2 200"] * 3)
        self.assertEqual(
            out.read_bytes(), (self.router.dir / "pub/big.bin").read_bytes()
        )

    def test_h2load(self) -> None:
        """
        h2load's 2,000 requests on 4 connections with 8 streams each all
        succeed, from static files and from a worker (multiplexed over the
        proxy engine).
        """
        h2load = program("h2load", "nghttp2-client")
        for path in ("/index.html", "/worker/environ"):
            result = subprocess.run(
                # h2load resolves no test name: the address, which the
                # certificate names too.
                [
                    h2load,
                    "-n",
                    "2000",
                    "-c",
                    "4",
                    "-m",
                    "8",
                    f"https://127.0.0.1:{self.tls_port}{path}",
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn("Application protocol: h2", result.stdout)
            self.assertIn(
                "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, "
                "0 failed, 0 errored",
                result.stdout,
            )
            self.assertIn("status codes: 2000 2xx", result.stdout)

    # -- limits per stream: the connection goes on

    def test_settings(self) -> None:
        """
        The router advertises C{max_streams} and a header list size.
        """
        client = self.client()
        client.read_until(
            lambda: any(
                isinstance(e, h2.events.RemoteSettingsChanged) for e in client.events
            )
        )
        settings = client.conn.remote_settings
        self.assertEqual(settings.max_concurrent_streams, 8)
        self.assertGreater(settings.max_header_list_size, 32 * 1024)

    def test_head_limits(self) -> None:
        """
        A header field over C{max_header} is a 431, a name that is not a
        token a 400; names with C{_} are dropped; each time the connection
        serves the next stream.
        """
        client = self.client()
        big = client.send("/index.html", headers=[("x-big", "a" * 2000)])
        self.assertEqual(client.response(big)[0], 431)
        bad = client.send("/index.html", headers=[("x(y)", "1")])
        status, body = client.response(bad)
        self.assertEqual(status, 400)
        self.assertIn(b"not a token", body)
        sneaky = client.send(
            "/app/environ",
            headers=[("x_forwarded_for", "203.0.113.9"), ("host_name", "x")],
        )
        status, body = client.response(sneaky)
        self.assertEqual(status, 200)
        self.assertIn(b"REMOTE_ADDR=127.0.0.1\n", body)
        after = client.send("/index.html")
        self.assertEqual(client.response(after), (200, b"hello over h2\n"))

    def test_body_limits(self) -> None:
        """
        A Content-Length over the route's C{max_body} is a 413 before any
        body is sent; a body without one, over it, is a 413 as it
        arrives; the connection serves the next stream.
        """
        client = self.client()
        declared = client.send(
            "/app/echo",
            "POST",
            headers=[("content-length", str(300 * 1024))],
            end=False,
        )
        self.assertEqual(client.response(declared)[0], 413)
        self.assertEqual(client.reset_code(declared), h2.errors.ErrorCodes.NO_ERROR)
        flowing = client.send("/app/echo", "POST", end=False)
        chunk = b"x" * 16000
        for _ in range(20):  # 320,000 bytes, within the windows
            if client.ended(flowing):
                break
            window = client.conn.local_flow_control_window(flowing)
            if window:
                client.conn.send_data(flowing, chunk[:window])
                client.flush()
            client.pump()
        self.assertEqual(client.response(flowing)[0], 413)
        small = client.send("/app/echo", "POST", body=b"abc")
        status, body = client.response(small)
        self.assertEqual((status, body[:2]), (200, b"3 "))

    def test_body_timeout(self) -> None:
        """
        A body that pauses for C{body_timeout} is a 408 on its stream.
        """
        client = self.client()
        stream = client.send("/app/echo", "POST", body=b"part", end=False)
        status, body = client.response(stream, timeout=15)
        self.assertEqual(status, 408)
        self.assertIn(b"the body paused for 1s", body)
        self.assertIsNone(client.goaway())

    def test_stream_window_shut(self) -> None:
        """
        A client that keeps a stream's window shut while its response waits
        has that stream reset after C{send_timeout}; the connection goes on.
        """
        client = self.client({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        stuck = client.send("/big.bin")
        client.read_until(lambda: client.ended(stuck), timeout=15)
        self.assertEqual(client.reset_code(stuck), h2.errors.ErrorCodes.INTERNAL_ERROR)
        # The connection's next stream is answered (with its window opened).
        client.conn.update_settings(
            {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535}
        )
        after = client.send("/index.html")
        self.assertEqual(client.response(after), (200, b"hello over h2\n"))

    # -- guards that close the connection

    def test_too_many_streams(self) -> None:
        """
        A client that opens more than C{max_streams} streams at once is
        closed with GOAWAY; other clients are served.
        """
        client = self.client()
        for _ in range(9):  # sent before the router's SETTINGS are read
            client.send("/app/echo", "POST", end=False)
        client.read_until(lambda: client.goaway() is not None)
        self.assertEqual(
            client.goaway().error_code, h2.errors.ErrorCodes.PROTOCOL_ERROR
        )
        client.read_until(lambda: client.closed, 5)
        other = self.client()
        stream = other.send("/index.html")
        self.assertEqual(other.response(stream)[0], 200)

    def test_idle(self) -> None:
        """
        A connection with no stream open for C{keepalive_timeout} is
        closed (GOAWAY, then the TLS close).
        """
        client = self.client()
        stream = client.send("/index.html")
        self.assertEqual(client.response(stream)[0], 200)
        client.read_until(lambda: client.closed, 10)
        self.assertEqual(client.goaway().error_code, h2.errors.ErrorCodes.NO_ERROR)

    def test_rapid_reset(self) -> None:
        """
        A client that opens and resets streams faster than it could be
        answered (CVE-2023-44487) is closed with ENHANCE_YOUR_CALM, and
        the router serves others meanwhile.
        """
        client = self.client()
        sent = 0
        while client.goaway() is None and sent < 5000 and not client.closed:
            for _ in range(100):
                stream = client.conn.get_next_available_stream_id()
                client.conn.send_headers(
                    stream,
                    [
                        (b":method", b"GET"),
                        (b":path", b"/app/environ"),
                        (b":scheme", b"https"),
                        (b":authority", _NAME.encode()),
                    ],
                )
                client.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
            sent += 100
            try:
                client.flush()
            except OSError:
                break
            client.pump(0.05)
        client.read_until(lambda: client.goaway() is not None, 10)
        self.assertEqual(
            client.goaway().error_code, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        )
        self.assertLess(sent, 5000)
        client.read_until(lambda: client.closed, 5)
        other = self.client()
        stream = other.send("/app/environ")
        self.assertEqual(other.response(stream)[0], 200)


class HTTP2DrainTests(SynchronousTestCase):
    """
    A router told to stop (SIGTERM) sends GOAWAY on its HTTP/2 connections,
    answers the streams under way, then closes them.
    """

    def test_drain(self) -> None:
        folder = Path(tempfile.mkdtemp(prefix="txrouter-h2-drain-"))
        self.addCleanup(shutil.rmtree, folder, True)
        authority = Authority(folder)
        tls_port = free_port()
        router = Txrouter(
            f"""\
listen:
  - tcp:{{port}}:interface=127.0.0.1
  - endpoint: tcp:{tls_port}:interface=127.0.0.1
    tls: {{certificates: [certs/]}}
routes:
  /app/: {{wsgi: "probe:application", path: {APPS}}}
"""
        )
        (router.dir / "certs").mkdir()
        authority.issue([_NAME], to=router.dir / "certs" / "h2.pem")
        router.start()
        self.addCleanup(router.stop)
        # An idle connection (one request answered), and curl's request
        # under way on another.
        client = H2Client(tls_port, authority.path)
        self.addCleanup(client.close)
        first = client.send("/app/environ")
        self.assertEqual(client.response(first)[0], 200)
        gate = folder / "gate"
        gate.mkdir()
        curl = subprocess.Popen(
            [
                program("curl", "curl"),
                "--silent",
                "--show-error",
                "--http2",
                "--cacert",
                str(authority.path),
                "--resolve",
                f"{_NAME}:{tls_port}:127.0.0.1",
                "--write-out",
                " %{http_version} %{response_code}",
                f"https://{_NAME}:{tls_port}/app/gate?gate={gate}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(lambda: curl.poll() is None and curl.kill())
        wait_until((gate / "started").exists, "curl's request to start")
        # A third, read frame by frame: the h2 package takes no frame after
        # a GOAWAY, so it could not show what the router does then.
        busy = H2Client(tls_port, authority.path)
        self.addCleanup(busy.close)
        other = folder / "other"
        other.mkdir()
        held = busy.send(f"/app/gate?gate={other}")
        wait_until((other / "started").exists, "the third request to start")
        assert router.pid is not None
        os.kill(router.pid, signal.SIGTERM)
        client.read_until(lambda: client.goaway() is not None)
        goaway = client.goaway()
        self.assertEqual(goaway.error_code, h2.errors.ErrorCodes.NO_ERROR)
        self.assertEqual(goaway.last_stream_id, first)
        client.read_until(lambda: False, 15)  # closed: it has no stream
        self.assertTrue(client.closed)
        frames = _frames(busy, lambda f: isinstance(f, GoAwayFrame))
        self.assertEqual(frames[-1].last_stream_id, held)
        late = busy.send("/app/environ")
        frames = _frames(busy, lambda f: isinstance(f, RstStreamFrame))
        self.assertEqual(
            (frames[-1].stream_id, frames[-1].error_code),
            (late, h2.errors.ErrorCodes.REFUSED_STREAM),
        )
        (gate / "release").touch()
        (other / "release").touch()
        out, err = curl.communicate(timeout=30)
        self.assertEqual((curl.returncode, out), (0, "released 2 200"), err)
        frames = _frames(busy, lambda f: "END_STREAM" in f.flags)
        body = b"".join(f.data for f in frames if isinstance(f, DataFrame))
        self.assertEqual((frames[-1].stream_id, body), (held, b"released"))
        _frames(busy, lambda f: False)  # then closed
        wait_until(lambda: not router.alive(), "the router to exit")
        self.assertNotIn("Traceback", router.log())


def _frames(client: H2Client, last: Callable[[Any], bool]) -> list[Any]:
    """
    Read C{client}'s connection frame by frame (its C{h2} state left
    behind) up to the first frame for which C{last} is true, or until it
    closes.
    """
    frames: list[Any] = []
    buffer = b""
    deadline = time.monotonic() + 15
    while not frames or not last(frames[-1]):
        while len(buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
            if len(buffer) < 9 + length:
                break
            frame.parse_body(memoryview(buffer[9 : 9 + length]))
            buffer = buffer[9 + length :]
            frames.append(frame)
            if last(frame):
                return frames
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; frames so far: {frames}")
        data = client.recv(1)
        if data is None:
            continue
        if not data:
            return frames
        buffer += data
    return frames
