"""
Upstream servers for the proxy tests: L{RecordingUpstream}, a stdlib HTTP/1.1
server (TCP or UNIX socket) that records every request it receives and
answers according to the path, and L{Nginx}, a real nginx on a free port.

    >>> upstream = RecordingUpstream().start()
    >>> upstream.url                      # http://127.0.0.1:PORT
    >>> upstream.seen(tag="t1")           # what arrived, in order
    >>> upstream.stop()

With C{tls=True} it speaks HTTPS with a self-signed certificate for
127.0.0.1, which no client trusts by default.

The recording server answers by the first path segment it knows, anywhere in
the path (so C{/v1/status/404} and C{/status/404} are the same):

  - C{echo} (and any path it does not know): 200 with a JSON description of
    the request, two C{Set-Cookie} lines and hop-by-hop headers
    (C{Connection: close, X-Hop}, C{X-Hop}, C{Keep-Alive},
    C{Proxy-Connection}) that a proxy must not pass on. The connection is
    left open, so a client that ignores the C{close} option does not fail by
    chance; C{linger-close} tests that option.
  - C{linger-close}: 200 with C{Connection: close, X-Hop}; then reads
    nothing more, waits a second, and closes: a client that reuses the
    connection gets no answer.
  - C{slow?s=N}: waits N seconds, then 200; a client that goes away
    meanwhile is noticed at once and recorded in L{RecordingUpstream.dropped}.
  - C{stream}: a chunked 200 whose first chunk is sent at once and the rest
    only after the test sets L{RecordingUpstream.stream_gate}.
  - C{big?n=BYTES}: a C{Content-Length} body of L{big_body}C{(n)}.
  - C{flood?n=BYTES&tag=T}: a C{Content-Length} body of n bytes, counting
    in L{RecordingUpstream.sent}C{[T]} the bytes written so far (a write
    blocks while the peer does not read), and recording the request in
    L{RecordingUpstream.dropped} if the peer goes away.
  - C{truncate}: declares C{Content-Length: 1000}, sends 10 bytes, closes.
  - C{garbage}: sends something that is not HTTP, closes.
  - C{hang}: reads the request and never answers (until L{stop}).
  - C{status/NNN}: that status, with a short body when it may have one.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import itertools
import json
import os
import random
import select
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["Nginx", "RecordingUpstream", "Seen", "big_body", "sha256"]

#: Seconds the C{hang} and C{slow} answers wait at most, whatever happens.
_LONGEST_WAIT = 60.0

_NO_BODY = frozenset({204, 304})


def big_body(n: int) -> bytes:
    """
    C{n} deterministic bytes with no short period, so a shifted, repeated or
    truncated copy does not match.
    """
    return random.Random(n).randbytes(n)


def sha256(data: bytes) -> str:
    """
    The hex SHA-256 of C{data}.
    """
    return hashlib.sha256(data).hexdigest()


@dataclass
class Seen:
    """
    One request as the upstream received it.

    @ivar target: the raw request-line target (path and query).
    @ivar headers: every header line in order, duplicates kept.
    @ivar framing: C{"chunked"}, C{"length"} or C{"none"}: how the body was
        delimited.
    @ivar client_port: the peer's TCP port (L{None} over a UNIX socket).
    @ivar connection: a number for the connection it came on.
    """

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    framing: str
    client_port: int | None
    connection: int

    @property
    def path(self) -> str:
        """
        The target without its query.
        """
        return urlsplit(self.target).path

    def values(self, name: str) -> list[str]:
        """
        Every value of header C{name} (any case), in order.
        """
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def names(self) -> set[str]:
        """
        The lower-case names of all headers received.
        """
        return {n.lower() for n, _ in self.headers}

    def as_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "target": self.target,
            "headers": self.headers,
            "framing": self.framing,
            "length": len(self.body),
            "sha256": sha256(self.body),
            "body": self.body.decode("latin-1") if len(self.body) <= 65536 else None,
            "client_port": self.client_port,
            "connection": self.connection,
        }


def _peer_gone(sock: socket.socket) -> bool:
    """
    Whether the peer has closed or reset C{sock} (without consuming data).
    """
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ValueError:
        return False  # a TLS socket cannot peek; do not guess
    except OSError:
        return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def setup(self) -> None:
        super().setup()
        self.owner: RecordingUpstream = self.server.owner
        self.connection_number = self.owner._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.owner._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> tuple[bytes, str]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts), "chunked"
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length)), "length"
        return b"", "none"

    def _serve(self) -> None:
        body, framing = self._read_body()
        client = self.client_address
        seen = Seen(
            method=self.command,
            target=self.path,
            headers=list(self.headers.items()),
            body=body,
            framing=framing,
            client_port=client[1] if isinstance(client, tuple) else None,
            connection=self.connection_number,
        )
        self.owner._record(seen)
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        segments = parts.path.split("/")
        for i, segment in enumerate(segments):
            answer = getattr(self, "_answer_" + segment.replace("-", "_"), None)
            if answer is not None and segment:
                answer(seen, query, segments[i + 1 :])
                return
        self._answer_echo(seen, query, [])

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def _reply(
        self,
        code: int,
        body: bytes,
        headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
        content_type: str = "text/plain",
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if code not in _NO_BODY:
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and code not in _NO_BODY:
            self.wfile.write(body)

    def _answer_echo(self, seen: Seen, query: Any, rest: list[str]) -> None:
        self._reply(
            200,
            json.dumps(seen.as_json()).encode(),
            [
                ("Set-Cookie", "a=1; Path=/"),
                ("Set-Cookie", "b=2; Path=/"),
                ("Connection", "close, X-Hop"),
                ("X-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"),
                ("X-End-To-End", "kept"),
            ],
            "application/json",
        )

    def _answer_linger_close(self, seen: Seen, query: Any, rest: list[str]) -> None:
        self._reply(200, b"bye\n", [("Connection", "close, X-Hop"), ("X-Hop", "1")])
        self.wfile.flush()
        self.close_connection = True
        self.owner.released.wait(1.0)

    def _wait_or_drop(self, seen: Seen, seconds: float) -> bool:
        """
        Wait C{seconds} (or until released); record and return C{True} if the
        client went away meanwhile.
        """
        deadline = time.monotonic() + min(seconds, _LONGEST_WAIT)
        while time.monotonic() < deadline and not self.owner.released.is_set():
            if _peer_gone(self.connection):
                self.owner._dropped(seen)
                self.close_connection = True
                return True
            time.sleep(0.02)
        return False

    def _answer_slow(self, seen: Seen, query: Any, rest: list[str]) -> None:
        if self._wait_or_drop(seen, float(query.get("s", ["1"])[0])):
            return
        try:
            self._reply(200, b"slept\n")
            self.wfile.flush()
        except OSError:
            self.owner._dropped(seen)
            self.close_connection = True

    def _answer_hang(self, seen: Seen, query: Any, rest: list[str]) -> None:
        self._wait_or_drop(seen, _LONGEST_WAIT)
        self.close_connection = True

    def _answer_stream(self, seen: Seen, query: Any, rest: list[str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        chunk(b"first chunk\n")
        self.owner.stream_gate.wait(_LONGEST_WAIT)
        chunk(b"second chunk\n")
        self.wfile.write(b"0\r\n\r\n")

    def _answer_big(self, seen: Seen, query: Any, rest: list[str]) -> None:
        n = int(query.get("n", ["0"])[0])
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        if self.command == "HEAD":
            return
        data = big_body(n)
        view = memoryview(data)
        for start in range(0, n, 65536):
            self.wfile.write(view[start : start + 65536])

    def _answer_flood(self, seen: Seen, query: Any, rest: list[str]) -> None:
        n = int(query.get("n", ["0"])[0])
        tag = query.get("tag", [""])[0]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        block = b"x" * 65536
        sent = 0
        try:
            while sent < n:
                piece = block[: n - sent]
                self.wfile.write(piece)
                sent += len(piece)
                self.owner.sent[tag] = sent
        except OSError:
            self.owner._dropped(seen)
            self.close_connection = True

    def _answer_truncate(self, seen: Seen, query: Any, rest: list[str]) -> None:
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 1000\r\n\r\n0123456789"
        )
        self.wfile.flush()
        self.close_connection = True

    def _answer_garbage(self, seen: Seen, query: Any, rest: list[str]) -> None:
        self.wfile.write(b"SSH-2.0-OpenSSH_9.2\r\nthis is not HTTP at all\r\n\r\n")
        self.wfile.flush()
        self.close_connection = True

    def _answer_status(self, seen: Seen, query: Any, rest: list[str]) -> None:
        code = int(rest[0]) if rest and rest[0].isdigit() else 200
        headers = [("ETag", '"v1"')]
        if code == 304:
            # What the 200 would have carried (RFC 9110 section 8.6).
            headers.append(("Content-Length", "13"))
        self._reply(code, b"status %d\n" % code, headers)


def _self_signed(folder: Path) -> tuple[str, str]:
    """
    Write a self-signed certificate for 127.0.0.1 and its key to C{folder}.

    @return: the certificate and key file paths.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = folder / "cert.pem"
    key_path = folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


class _TCPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _UNIXServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class RecordingUpstream:
    """
    A recording HTTP/1.1 server on 127.0.0.1 (or on a UNIX socket when
    C{unix} is true) in a background thread.

    @ivar stream_gate: set it to let C{stream} send its second chunk.
    @ivar released: set by L{stop}; ends C{hang} and C{slow} waits.
    @ivar dropped: requests whose client went away before the answer.
    @ivar sent: bytes of each C{flood} answer written so far, by tag.
    """

    def __init__(self, unix: bool = False, tls: bool = False) -> None:
        self.unix = unix
        self.tls = tls
        self.sent: dict[str, int] = {}
        self.stream_gate = threading.Event()
        self.released = threading.Event()
        self.requests: list[Seen] = []
        self.dropped: list[Seen] = []
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._open: set[socket.socket] = set()
        self._dir: str | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> RecordingUpstream:
        """
        Listen and serve in a background thread.
        """
        server: Any
        self._dir = tempfile.mkdtemp(prefix="txr-up-")
        if self.unix:
            server = _UNIXServer(os.path.join(self._dir, "up.sock"), _Handler)
        else:
            server = _TCPServer(("127.0.0.1", 0), _Handler)
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*_self_signed(Path(self._dir)))
            server.socket = context.wrap_socket(server.socket, server_side=True)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        """
        The TCP port it listens on.
        """
        return int(self._server.server_address[1])

    @property
    def socket_path(self) -> str:
        """
        The UNIX socket it listens on.
        """
        return str(self._server.server_address)

    @property
    def url(self) -> str:
        """
        Its address as a C{proxy:} route names it (no trailing path).
        """
        if self.unix:
            return "unix:" + self.socket_path
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """
        Release every waiting answer, stop listening, and close every
        connection still open.
        """
        self.released.set()
        self.stream_gate.set()
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            still_open = list(self._open)
        for sock in still_open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        assert self._thread is not None
        self._thread.join(10)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._server = None

    def seen(self, tag: str | None = None) -> list[Seen]:
        """
        The requests received so far; with C{tag}, only those whose query
        has C{tag=TAG}.
        """
        with self._lock:
            requests = list(self.requests)
        if tag is None:
            return requests
        return [
            r
            for r in requests
            if parse_qs(urlsplit(r.target).query).get("tag") == [tag]
        ]

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    def _dropped(self, seen: Seen) -> None:
        with self._lock:
            self.dropped.append(seen)

    def _opened(self, sock: socket.socket) -> int:
        with self._lock:
            self._open.add(sock)
            return next(self._numbers)

    def _closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)


_NGINX_CONF = """\
{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    default_type application/octet-stream;
    keepalive_requests 10000;
    server {{
        listen 127.0.0.1:{port};
        root {dir}/www;
        client_max_body_size 64m;
        location /hello {{
            default_type text/plain;
            return 200 "hello from nginx\\n";
        }}
        location /echo-headers {{
            default_type text/plain;
            return 200 "$http_x_forwarded_for|$http_x_forwarded_proto|$http_host\\n";
        }}
        location /connection {{
            default_type text/plain;
            return 200 "$connection\\n";
        }}
        location /dav/ {{
            dav_methods PUT DELETE;
            create_full_put_path on;
        }}
    }}
}}
"""


class Nginx:
    """
    A real nginx on a free port on 127.0.0.1, with a generated config and
    everything it writes in a temporary folder.

    It serves C{/hello}, C{/echo-headers} (the forwarding headers it got),
    C{/connection} (nginx's number for the client connection), the static
    file C{/big.bin} (L{BIG} bytes of L{big_body}) and WebDAV C{PUT} and
    C{GET} under C{/dav/}.
    """

    BIG = 5 * 1024 * 1024

    def __init__(self, port: int) -> None:
        self.port = port
        # Named now, made by start() once nginx is known to be there.
        self.dir = Path(tempfile.gettempdir()) / f"txr-nginx-{os.getpid()}-{port}"
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def executable() -> str:
        """
        The nginx binary; fails (never skips) when it is not installed.
        """
        found = shutil.which("nginx") or (
            "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
        )
        if found is None:
            raise AssertionError(
                "nginx is not installed; the proxy interop tests need it: "
                "run `apt-get install nginx-light` (as .ci/run does)"
            )
        return found

    @property
    def url(self) -> str:
        """
        Its address for a C{proxy:} route.
        """
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        """
        Write the config and files, start nginx in the foreground, and wait
        until it accepts connections.
        """
        binary = self.executable()
        self.dir.mkdir()
        for sub in ("tmp", "www/dav"):
            (self.dir / sub).mkdir(parents=True)
        (self.dir / "www" / "big.bin").write_bytes(big_body(self.BIG))
        conf = self.dir / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(_NGINX_CONF.format(user=user, dir=self.dir, port=self.port))
        self.process = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(self.dir), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                assert self.process.stderr is not None
                raise AssertionError(
                    f"nginx exited {self.process.returncode}: "
                    f"{self.process.stderr.read().decode(errors='replace')}"
                    f"{self.error_log()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(
                        f"nginx did not listen on {self.port}: {self.error_log()}"
                    ) from None
                time.sleep(0.05)

    def error_log(self) -> str:
        """
        nginx's error log so far.
        """
        try:
            return (self.dir / "error.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """
        Stop nginx (SIGTERM to its master process by PID, SIGKILL if it does
        not exit) and remove its folder.
        """
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if process is not None and process.stderr is not None:
            process.stderr.close()
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)
