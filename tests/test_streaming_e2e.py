"""
End to end: back-pressure for streamed WSGI bodies in a real, daemonized
C{twistd txrouter}. A generator body is produced only as fast as the client
takes it, for an application in the router process (C{workers: 0}) and in a
worker process (C{workers: 1}, where the router's proxy stops reading from a
worker whose client is slow). A client that stops reading holds the
application's pool thread at a bounded point; when the client goes away the
generator is closed and the thread released; a client that pauses and then
reads everything gets the whole body.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import tempfile
from pathlib import Path
from typing import ClassVar

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support import Txrouter, settled, stop_daemon, wait_until

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024

#: Streams C{mib} MiB in 64 KiB chunks and records, in C{progress-<tag>}
#: next to itself, how many bytes it has handed over so far (every MiB) and
#: C{closed N} once the generator is closed or done.
_STREAM_APP = '''
"""Stream a generator body, recording how far it got."""

import os
from urllib.parse import parse_qs

HERE = os.path.dirname(os.path.abspath(__file__))
CHUNK = 64 * 1024
MIB = 1024 * 1024


def chunk(index):
    return b"%015d\\n" % index * (CHUNK // 16)


def record(tag, text):
    path = os.path.join(HERE, "progress-" + tag)
    with open(path + ".new", "w") as f:
        f.write(text)
    os.replace(path + ".new", path)


def body(tag, total):
    produced = 0
    try:
        while produced < total:
            data = chunk(produced // CHUNK)
            produced += len(data)
            if produced % MIB == 0:
                record(tag, str(produced))
            yield data
    finally:
        record(tag, "closed %d" % produced)


def application(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    tag = query["tag"][0]
    if not tag.isalnum():
        start_response("400 Bad Request", [("Content-Length", "0")])
        return []
    total = int(query["mib"][0]) * MIB
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(total)),
            ("X-Pid", str(os.getpid())),
        ],
    )
    return body(tag, total)
'''

_MODULE = "txrouter_stream_app"


def _expected_digest(mib: int) -> str:
    """
    The SHA-256 of the body the application streams for C{mib} MiB.
    """
    digest = hashlib.sha256()
    for index in range(mib * 16):
        digest.update(b"%015d\n" % index * 4096)
    return digest.hexdigest()


def _read_head(s: socket.socket) -> tuple[bytes, bytes]:
    """
    Read from C{s} until a whole response head is in.

    @return: the head and whatever of the body came with it.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        more = s.recv(4096)
        if not more:
            raise AssertionError(f"connection closed before the head: {data!r}")
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _header(head: bytes, name: bytes) -> bytes | None:
    """
    The value of header C{name} (any case) in a raw response head.
    """
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


class StreamingBackPressureTests(SynchronousTestCase):
    """
    A daemon serving the streaming application at C{/inproc/} in the router
    process and at C{/worker/} in one worker process.
    """

    scratch: ClassVar[Path]
    server: ClassVar[Txrouter]
    workers: ClassVar[set[int]]

    @classmethod
    def setUpClass(cls) -> None:
        cls.scratch = Path(tempfile.mkdtemp(prefix="txrouter-stream-"))
        cls.workers = set()
        try:
            (cls.scratch / f"{_MODULE}.py").write_text(_STREAM_APP, encoding="utf-8")
            app = f'"{_MODULE}:application", path: {cls.scratch}'
            cls.server = Txrouter(
                f"""
listen:
  - "tcp:{{port}}:interface=127.0.0.1"
routes:
  /inproc/: {{wsgi: {app}, workers: 0}}
  /worker/: {{wsgi: {app}, workers: 1}}
"""
            )
            cls.server.start()
            for route in ("inproc", "worker"):
                wait_until(
                    lambda route=route: cls._answers(route),
                    f"/{route}/ to answer ({cls.server.log()})",
                )
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        # The server is absent when setUpClass failed before making it.
        stop_daemon(getattr(cls, "server", None), cls.workers, cls.scratch)

    @classmethod
    def _saw_pid(cls, pid: bytes | str | None) -> int | None:
        """
        Remember the PID an answer came from when it is not the router's.
        """
        if pid is None:
            return None
        number = int(pid)
        if number != cls.server.pid:
            cls.workers.add(number)
        return number

    @classmethod
    def _get(cls, route: str, tag: str, mib: int) -> tuple[int, int | None, bytes]:
        """
        GET C{mib} MiB tagged C{tag} from C{/route/}, read whole.

        @return: status, the answering PID and the body.
        """
        connection = http.client.HTTPConnection(
            "127.0.0.1", cls.server.port, timeout=30
        )
        try:
            connection.request("GET", f"/{route}/?tag={tag}&mib={mib}")
            response = connection.getresponse()
            body = response.read()
            pid = cls._saw_pid(response.getheader("X-Pid"))
            if response.status == 200:
                length = response.getheader("Content-Length")
                assert length == str(mib * MIB), f"Content-Length {length}"
            return response.status, pid, body
        finally:
            connection.close()

    @classmethod
    def _answers(cls, route: str) -> bool:
        """
        Whether C{/route/} answers 200 (a worker answers 503 until it is up).
        """
        try:
            return cls._get(route, f"ready{route}", 0)[0] == 200
        except OSError:
            return False

    def progress(self, tag: str) -> str:
        """
        What the application last recorded for C{tag} (C{""} if nothing).
        """
        try:
            return (self.scratch / f"progress-{tag}").read_text()
        except FileNotFoundError:
            return ""

    def produced(self, tag: str) -> int:
        """
        How many bytes the application has handed over for C{tag}.
        """
        return int(self.progress(tag).removeprefix("closed ") or 0)

    def closed(self, tag: str) -> bool:
        """
        Whether the generator for C{tag} was closed (or ran to its end).
        """
        return self.progress(tag).startswith("closed ")

    def open_stream(
        self, route: str, tag: str, mib: int
    ) -> tuple[socket.socket, bytes]:
        """
        Ask C{/route/} for C{mib} MiB on a raw socket with a small receive
        buffer and read the response head (a 200 with the full length).

        @return: the socket, and the part of the body read with the head.
        """
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.settimeout(10)
            s.connect(("127.0.0.1", self.server.port))
            target = f"/{route}/?tag={tag}&mib={mib}"
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head, rest = _read_head(s)
            self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
            self.assertEqual(_header(head, b"content-length"), b"%d" % (mib * MIB))
            self.assertIsNone(_header(head, b"transfer-encoding"), head)
            self._saw_pid(_header(head, b"x-pid"))
        except BaseException:
            s.close()
            raise
        return s, rest

    def assertServing(self, route: str) -> None:
        """
        C{/route/} still streams a small body whole.
        """
        tag = f"small{route}"
        status, _, body = self._get(route, tag, 1)
        self.assertEqual(status, 200)
        self.assertEqual(len(body), MIB)
        self.assertEqual(hashlib.sha256(body).hexdigest(), _expected_digest(1))
        # The client can have the last chunk before the generator is done.
        wait_until(lambda: self.closed(tag), "the generator to finish", 15)
        self.assertEqual(self.progress(tag), f"closed {MIB}")

    def check_stalled_client(self, route: str) -> None:
        """
        A client that stops reading holds the application far below the
        256 MiB it would produce; once the client goes away the generator is
        closed and the route serves again.
        """
        tag = f"stalled{route}"
        s, _ = self.open_stream(route, tag, 256)
        with s:
            produced = settled(lambda: self.produced(tag))
            self.assertLess(
                produced,
                64 * MIB,
                f"the server buffered the body ({self.progress(tag)!r})",
            )
            self.assertFalse(self.closed(tag), "the body ended with the client stalled")
        wait_until(
            lambda: self.closed(tag),
            "the generator to be closed after the client went away",
            15,
        )
        self.assertLess(self.produced(tag), 64 * MIB, self.progress(tag))
        self.assertServing(route)

    def check_paused_then_read(self, route: str) -> None:
        """
        A client that stops reading for a while, then reads everything, gets
        exactly the 32 MiB body, in order.
        """
        tag = f"paused{route}"
        mib = 32
        s, body = self.open_stream(route, tag, mib)
        with s:
            produced = settled(lambda: self.produced(tag), still=0.5, deadline=20)
            self.assertLess(produced, mib * MIB, "nothing was paused")
            s.settimeout(30)
            parts = [body]
            received = len(body)
            while received < mib * MIB:
                more = s.recv(256 * 1024)
                if not more:
                    break
                parts.append(more)
                received += len(more)
            body = b"".join(parts)
        self.assertEqual(len(body), mib * MIB)
        self.assertEqual(hashlib.sha256(body).hexdigest(), _expected_digest(mib))
        wait_until(lambda: self.closed(tag), "the generator to finish", 15)
        self.assertEqual(self.progress(tag), f"closed {mib * MIB}")

    def test_in_process_stalled_client_pauses_application(self) -> None:
        """
        In the router process, a client that stops reading pauses the
        application's generator at a bounded point; when the client goes
        away the generator is closed and the route keeps serving.
        """
        self.check_stalled_client("inproc")

    def test_worker_stalled_client_pauses_application(self) -> None:
        """
        In a worker process, a client that stops reading pauses the
        application's generator at a bounded point (the router stops reading
        from the worker); when the client goes away the generator is closed
        and the route keeps serving.
        """
        self.check_stalled_client("worker")

    def test_in_process_paused_client_gets_whole_body(self) -> None:
        """
        In the router process, a client that pauses and then reads gets the
        whole streamed body, exactly as long as its Content-Length.
        """
        self.check_paused_then_read("inproc")
        self.assertEqual(self._get("inproc", "pidinproc", 0)[1], self.server.pid)

    def test_worker_paused_client_gets_whole_body(self) -> None:
        """
        In a worker process, a client that pauses and then reads gets the
        whole streamed body, exactly as long as its Content-Length.
        """
        self.check_paused_then_read("worker")
        self.assertNotEqual(self._get("worker", "pidworker", 0)[1], self.server.pid)
