"""
End to end: C{asgi:} routes with real processes. An ASGI worker started by
the test itself, spoken to over its UNIX socket as its router would; and a
real, daemonized C{twistd txrouter} serving the chat example of
C{sites/chat} (Django with Channels) and a plain ASGI 3 application
(C{tests/apps/asgiprobe.py}) in Daphne workers, driven over HTTP on
127.0.0.1. Every process a test starts, or that its router starts, is gone
when the test ends.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.asgisupport import CLIENT_IP, AsgiWorker
from tests.support import APPS, REPO, Txrouter, prepared_sites, request, wait_until
from tests.test_workers_e2e import (
    _gone,
    _parent,
    _runtime_dir,
    _start,
    _stop,
    _workers_of,
)

pytestmark = pytest.mark.e2e

PROBE = "asgiprobe:application"


def _gate() -> Path:
    return Path(tempfile.mkdtemp(prefix="txrouter-asgi-gate-"))


def _in_thread(call: Any) -> tuple[threading.Thread, list[Any]]:
    """
    Run C{call()} in a thread; its result (or exception) is put in the
    returned list.
    """
    answers: list[Any] = []

    def run() -> None:
        try:
            answers.append(call())
        except Exception as e:
            answers.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, answers


def _passed_body(worker: AsgiWorker, path: str, body: bytes) -> bytes:
    """
    POST C{body} to the worker as its router does with a body it spooled
    to a file: the file's descriptor passed over the socket with the head.

    @return: the whole answer.
    """
    head = "".join(
        f"{name}: {value}\r\n"
        for name, value in {
            "Host": "localhost",
            **worker.facts(),
            "X-Txrouter-Body-Length": str(len(body)),
        }.items()
    )
    with tempfile.TemporaryFile() as spool, socket.socket(socket.AF_UNIX) as s:
        spool.write(body)
        spool.flush()
        s.settimeout(30)
        s.connect(worker.socket)
        data = f"POST {path} HTTP/1.1\r\n{head}Connection: close\r\n\r\n".encode()
        socket.send_fds(s, [data], [spool.fileno()])
        return b"".join(iter(lambda: s.recv(65536), b""))


class WorkerTests(SynchronousTestCase):
    """
    One ASGI worker serving the probe application at C{/probe/}, spoken to
    over its socket with the token it was started with.
    """

    worker: ClassVar[AsgiWorker]

    @classmethod
    def setUpClass(cls) -> None:
        cls.worker = AsgiWorker(PROBE, APPS, prefix="/probe/")
        try:
            cls.worker.start()
        except BaseException:
            cls.worker.stop()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.worker.stop()

    def scope(self, **headers: str) -> dict[str, Any]:
        status, _, body = self.worker.request("GET", "/probe/scope?x=1", headers)
        self.assertEqual(status, 200, body)
        return dict(json.loads(body))

    def test_facts(self) -> None:
        """
        The application sees the client the router speaks for, its scheme,
        the server as the client named it, the prefix as C{root_path} and
        no router header; a client's C{Daphne-Root-Path} changes nothing.
        """
        seen = self.scope(
            Host="example.localhost:1234",
            **self.worker.facts("https"),
            **{"Daphne-Root-Path": "/elsewhere", "X-Custom": "kept"},
        )
        self.assertEqual(seen["client"], [CLIENT_IP, 40404])
        self.assertEqual(seen["scheme"], "https")
        self.assertEqual(seen["server"], ["example.localhost", 8080])
        self.assertEqual(seen["root_path"], "/probe")
        self.assertEqual(seen["path"], "/probe/scope")
        self.assertEqual(seen["query_string"], "x=1")
        names = [name for name, _ in seen["headers"]]
        self.assertIn("x-custom", names)
        self.assertEqual([n for n in names if n.startswith("x-txrouter")], [])

    def test_strangers_refused(self) -> None:
        """
        A request without the token, or with another one, is answered 403
        by the worker itself.
        """
        for extra in ({}, {"X-Txrouter-Token": "0" * 32}):
            headers = {"Host": "localhost", "X-Txrouter-Client": "203.0.113.9", **extra}
            status, _, body = self.worker.request("GET", "/probe/scope", headers)
            self.assertEqual(
                (status, body),
                (403, b"403 Forbidden: not from this worker's router.\n"),
            )

    def test_bodies(self) -> None:
        """
        A body sent on the connection, and one whose file the router passes
        as a descriptor (as it does with a body it spooled), both reach the
        application whole.
        """
        body = os.urandom(3 * 1024 * 1024)
        expected = f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
        status, _, answer = self.worker.request(
            "POST", "/probe/echo", {"Host": "localhost", **self.worker.facts()}, body
        )
        self.assertEqual((status, answer), (200, expected))
        answer = _passed_body(self.worker, "/probe/echo", body)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:200])
        self.assertTrue(answer.endswith(b"\r\n\r\n" + expected), answer[-200:])

    def test_private_socket(self) -> None:
        """
        The worker's socket is its owner's alone (mode 0600).
        """
        mode = os.stat(self.worker.socket).st_mode
        self.assertTrue(stat.S_ISSOCK(mode))
        self.assertEqual(oct(stat.S_IMODE(mode)), oct(0o600))

    def test_asyncio_reactor(self) -> None:
        """
        Daphne found no other reactor installed before its own: the worker
        imported nothing that installs one.
        """
        self.scope(Host="localhost", **self.worker.facts())
        self.assertNotIn("non-asyncio Twisted reactor", self.worker.output())


class WorkerLifeTests(SynchronousTestCase):
    """
    How an ASGI worker stops: drained on SIGTERM, at once when its router
    dies, never when its application cannot be loaded.
    """

    def start(self, drain_timeout: float = 10.0) -> AsgiWorker:
        worker = AsgiWorker(PROBE, APPS, prefix="/probe/", drain_timeout=drain_timeout)
        self.addCleanup(worker.stop)
        return worker.start()

    def test_sigterm_drains(self) -> None:
        """
        SIGTERM while a request is in flight: the worker stops accepting
        connections, the request completes with 200 once the application
        answers, and the worker exits 0.
        """
        worker = self.start()
        gate = _gate()
        self.addCleanup(shutil.rmtree, gate, ignore_errors=True)
        facts = {"Host": "localhost", **worker.facts()}
        thread, answers = _in_thread(
            lambda: worker.request("GET", f"/probe/gate?gate={gate}", facts)
        )
        self.addCleanup(thread.join, 30)
        wait_until((gate / "started").exists, "the request to reach the application")
        worker.terminate()
        wait_until(lambda: not worker._accepting(), "the worker to stop listening")
        assert worker.process is not None
        self.assertIsNone(worker.process.poll())
        (gate / "release").touch()
        thread.join(30)
        self.assertEqual(answers[0][0], 200, answers)
        self.assertEqual(answers[0][2], b"released")
        self.assertEqual(worker.process.wait(30), 0, worker.output())

    def test_drain_timeout(self) -> None:
        """
        A request that outlives C{--drain-timeout} does not hold the worker:
        it exits 0 soon after the timeout.
        """
        worker = self.start(drain_timeout=1)
        gate = _gate()
        self.addCleanup(shutil.rmtree, gate, ignore_errors=True)
        facts = {"Host": "localhost", **worker.facts()}
        thread, _ = _in_thread(
            lambda: worker.request("GET", f"/probe/gate?gate={gate}", facts)
        )
        self.addCleanup(thread.join, 30)
        wait_until((gate / "started").exists, "the request to reach the application")
        started = time.monotonic()
        worker.terminate()
        assert worker.process is not None
        self.assertEqual(worker.process.wait(30), 0, worker.output())
        self.assertLess(time.monotonic() - started, 1 + 3)
        (gate / "release").touch()

    def test_dies_with_router(self) -> None:
        """
        A worker whose parent (its router) is killed with SIGKILL exits too.
        """
        worker = AsgiWorker(PROBE, APPS, prefix="/probe/")
        self.addCleanup(worker.stop)
        env = {
            **os.environ,
            "TXROUTER_WORKER_TOKEN": worker.token,
            "PYTHONPATH": str(REPO),
        }
        # A stand-in router: starts the worker, says its PID, waits.
        parent = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import signal, subprocess, sys\n"
                "child = subprocess.Popen(sys.argv[1:])\n"
                "print(child.pid, flush=True)\n"
                "signal.pause()\n",  # until the test kills it
                *worker.command,
            ],
            env=env,
            stdout=subprocess.PIPE,
        )
        self.addCleanup(parent.wait, 10)
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        self.addCleanup(lambda: _gone(child) or os.kill(child, signal.SIGKILL))
        wait_until(lambda: os.path.exists(worker.socket), "the worker's socket")
        self.assertEqual(_parent(child), parent.pid)
        parent.kill()
        wait_until(lambda: _gone(child), "the orphaned worker to exit", timeout=10)

    def test_load_error(self) -> None:
        """
        An application that cannot be imported: the worker exits with
        status 3 and says why.
        """
        worker = AsgiWorker("no_such_module:application", APPS, prefix="/x/")
        self.addCleanup(worker.stop)
        result = subprocess.run(
            worker.command,
            env={
                **os.environ,
                "TXROUTER_WORKER_TOKEN": worker.token,
                "PYTHONPATH": str(REPO),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 3, result.stderr)
        self.assertIn("cannot load the application: no module named", result.stderr)


def _from_client(
    port: int, path: str, headers: dict[str, str]
) -> tuple[int, bytes, int]:
    """
    GET C{path} from L{CLIENT_IP}.

    @return: the status, the body and the client's own port.
    """
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=30, source_address=(CLIENT_IP, 0)
    )
    try:
        connection.connect()
        assert connection.sock is not None
        client_port = connection.sock.getsockname()[1]
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), client_port
    finally:
        connection.close()


def _pids(
    port: int, path: str, count: int, without: frozenset[int] = frozenset()
) -> set[int]:
    """
    Ask C{path} who answers until C{count} different processes (none of
    C{without}) have; a 503 (starting) or 502 (a worker just killed) means
    "not yet".
    """
    seen: set[int] = set()

    def enough() -> bool:
        status, _, body = request(port, "GET", path)
        if status in (502, 503):
            return False
        if status != 200:
            raise AssertionError(f"GET {path}: {status} {body[:500]!r}")
        pid = json.loads(body)["pid"]
        if pid not in without:
            seen.add(pid)
        return len(seen) >= count

    wait_until(enough, f"{count} processes to answer {path}", timeout=60)
    return seen


class RouterTests(SynchronousTestCase):
    """
    A daemon serving the chat example at C{/live/} (one worker) and the
    probe application at C{/probe/} (two workers), both C{asgi:} routes.
    """

    server: ClassVar[Txrouter]
    runtime: ClassVar[Path]

    @classmethod
    def setUpClass(cls) -> None:
        chat = prepared_sites() / "chat"
        cls.runtime = _runtime_dir()
        cls.server = _start(
            f"""
listen: tcp:{{port}}:interface=127.0.0.1
drain_timeout: 10
runtime_dir: {cls.runtime}
routes:
  /live/: {{asgi: "chat.asgi:application", path: {chat}, settings: chat.settings}}
  /probe/:
    asgi: "{PROBE}"
    path: {APPS}
    workers: 2
    env: {{TXROUTER_E2E_FLAVOUR: asgi}}
"""
        )
        try:
            cls.all_serving()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        _stop(cls.server)
        shutil.rmtree(cls.runtime.parent, ignore_errors=True)

    @classmethod
    def all_serving(cls) -> None:
        """
        Wait until every worker answers (a test kills one).
        """
        _pids(cls.server.port, "/probe/scope", 2)
        _pids(cls.server.port, "/live/whoami/", 1)

    @property
    def port(self) -> int:
        return self.server.port

    def test_chat_pages(self) -> None:
        """
        The chat's pages link under the prefix: the rooms, the stylesheet
        and script (served by the router from STATIC_ROOT, with no header
        of Django's), and the room's socket.
        """
        status, _, body = request(self.port, "GET", "/live/")
        self.assertEqual(status, 200, body[:500])
        self.assertIn(b'href="/live/lobby/"', body)
        status, _, body = request(self.port, "GET", "/live/lobby/")
        self.assertEqual(status, 200, body[:500])
        self.assertIn(b'data-socket="/live/ws/lobby/"', body)
        self.assertIn(b'src="/live/static/room/chat.js"', body)
        self.assertIn(b'href="/live/static/room/chat.css"', body)
        status, headers, script = request(self.port, "GET", "/live/static/room/chat.js")
        self.assertEqual(status, 200)
        collected = prepared_sites() / "chat" / "staticfiles" / "room" / "chat.js"
        self.assertEqual(script, collected.read_bytes())
        self.assertNotIn("x-frame-options", headers)

    def test_chat_sees_the_client(self) -> None:
        """
        Django under Daphne sees the prefix as its script name, the client's
        address, its C{Host} and its scheme, as a WSGI worker would.
        """
        status, body, _ = _from_client(
            self.port, "/live/whoami/", {"Host": "example.localhost:1234"}
        )
        self.assertEqual(status, 200, body)
        seen = json.loads(body)
        self.assertEqual(seen["script_name"], "/live")
        self.assertEqual(
            (seen["path"], seen["path_info"]), ("/live/whoami/", "/whoami/")
        )
        self.assertEqual(seen["remote_addr"], CLIENT_IP)
        self.assertEqual(seen["host"], "example.localhost:1234")
        self.assertEqual(seen["scheme"], "http")
        self.assertEqual(_parent(seen["pid"]), self.server.pid)

    def test_probe_scope(self) -> None:
        """
        A plain ASGI application sees the client's address and port, scheme
        http, the prefix as C{root_path} and the original C{Host}; nothing
        a client sends changes them, and no router header reaches it.
        """
        status, body, client_port = _from_client(
            self.port,
            "/probe/scope?a=%2F",
            {
                "Host": "example.localhost:1234",
                "X-Txrouter-Client": "203.0.113.9",
                "X-Txrouter-Scheme": "https",
                "X-Txrouter-Token": "0" * 32,
                "Daphne-Root-Path": "/elsewhere",
            },
        )
        self.assertEqual(status, 200, body)
        seen = json.loads(body)
        self.assertEqual(seen["client"], [CLIENT_IP, client_port])
        self.assertEqual(seen["scheme"], "http")
        self.assertEqual(seen["root_path"], "/probe")
        self.assertEqual(seen["server"], ["example.localhost", self.port])
        self.assertEqual(seen["http_version"], "1.1")
        self.assertEqual(seen["query_string"], "a=%2F")
        self.assertIn(["host", "example.localhost:1234"], seen["headers"])
        leaked = [n for n, _ in seen["headers"] if n.startswith("x-txrouter")]
        self.assertEqual(leaked, [])
        self.assertEqual(seen["flavour"], "asgi")
        # What the worker made at startup is out of the collector's passes.
        self.assertGreater(seen["frozen"], 10_000)

    def test_http10_client(self) -> None:
        """
        An HTTP/1.0 client's request reaches the application as HTTP/1.0.
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(b"GET /probe/scope HTTP/1.0\r\nHost: localhost\r\n\r\n")
            answer = b"".join(iter(lambda: s.recv(65536), b""))
        head, _, body = answer.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.0 200"), answer[:300])
        self.assertEqual(json.loads(body)["http_version"], "1.0")

    def test_posts(self) -> None:
        """
        A small body, a large one (which the router spools and passes as a
        file) and a chunked one reach the application whole.
        """
        for size in (5, 3 * 1024 * 1024):
            body = os.urandom(size)
            status, _, answer = request(self.port, "POST", "/probe/echo", body=body)
            expected = f"{size} {hashlib.sha256(body).hexdigest()}".encode()
            self.assertEqual((status, answer), (200, expected))
        body = os.urandom(200_000)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(
                "POST",
                "/probe/echo",
                body=iter([body[:70_000], body[70_000:]]),
                encode_chunked=True,
            )
            response = connection.getresponse()
            answer = response.read()
        finally:
            connection.close()
        expected = f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
        self.assertEqual((response.status, answer), (200, expected))

    def test_worker_refuses_strangers(self) -> None:
        """
        Each ASGI worker's socket (private, 0600) answers 403 to a request
        that does not come from its router, with or without a made-up token.
        """
        self.all_serving()
        sockets = sorted(self.runtime.glob("*.sock"))
        self.assertEqual(len(sockets), 3, sockets)
        for path in sockets:
            self.assertEqual(oct(stat.S_IMODE(path.stat().st_mode)), oct(0o600))
            for extra in (b"", b"X-Txrouter-Token: " + b"0" * 32 + b"\r\n"):
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(10)
                    s.connect(str(path))
                    s.sendall(
                        b"GET /probe/scope HTTP/1.1\r\nHost: localhost\r\n"
                        b"X-Txrouter-Client: 203.0.113.9\r\n" + extra + b"\r\n"
                    )
                    head = s.recv(100)
                self.assertTrue(head.startswith(b"HTTP/1.1 403"), (path, head))

    def test_killed_worker_restarted(self) -> None:
        """
        A worker killed with SIGKILL is replaced by a new process, as a
        Django worker is, and the route answers from two workers again.
        """
        before = _pids(self.port, "/probe/scope", 2)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: _gone(victim), "the killed worker to exit")
        after = _pids(self.port, "/probe/scope", 2, without=frozenset({victim}))
        self.assertEqual(len(after), 2)
        self.assertNotIn(victim, after)
        assert self.server.pid is not None
        self.assertEqual(after, {p for p in _workers_of(self.server.pid) if p in after})


class RouterDrainTests(SynchronousTestCase):
    """
    SIGTERM to a router with an C{asgi:} route.
    """

    def test_sigterm_drains(self) -> None:
        """
        SIGTERM while the ASGI worker holds a request: the request completes
        with 200, then the router exits and leaves no worker and no socket.
        """
        runtime = _runtime_dir()
        self.addCleanup(shutil.rmtree, runtime.parent, ignore_errors=True)
        server = _start(
            f"""
listen: tcp:{{port}}:interface=127.0.0.1
drain_timeout: 20
runtime_dir: {runtime}
routes:
  /probe/: {{asgi: "{PROBE}", path: {APPS}}}
"""
        )
        assert server.pid is not None
        workers: set[int] = set()
        self.addCleanup(lambda: _stop(server, workers))
        workers |= _pids(server.port, "/probe/scope", 1)
        gate = _gate()
        self.addCleanup(shutil.rmtree, gate, ignore_errors=True)
        thread, answers = _in_thread(
            lambda: request(server.port, "GET", f"/probe/gate?gate={gate}")
        )
        self.addCleanup(thread.join, 30)
        wait_until((gate / "started").exists, "the request to reach the application")
        server.terminate()
        (gate / "release").touch()
        thread.join(30)
        self.assertEqual(answers[0][0], 200, answers)
        self.assertEqual(answers[0][2], b"released")
        wait_until(lambda: _gone(server.pid), "the router to exit", timeout=30)
        for pid in workers:
            wait_until(lambda pid=pid: _gone(pid), "the worker to exit")
        self.assertEqual(list(runtime.glob("*.sock")), [])
