"""
End to end: WebSockets of C{asgi:} routes, with the C{websockets} package's
client, against the chat example of C{sites/chat} (a Channels consumer per
room, and an echo consumer) and the probe application of C{tests/apps}.

The same cases run twice: against ASGI workers started by the test itself,
spoken to over their UNIX sockets with the router's headers (the worker's
part, on its own), and through a real, daemonized C{twistd txrouter} on
127.0.0.1 (the proxy engine's tunnel, client to worker).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest
from twisted.trial.unittest import SynchronousTestCase
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect, unix_connect

from tests.asgisupport import CLIENT_IP, AsgiWorker
from tests.support import APPS, Txrouter, prepared_sites, request, wait_until
from tests.test_workers_e2e import _runtime_dir, _start, _stop

pytestmark = pytest.mark.e2e

PROBE = "asgiprobe:application"
CHAT = "chat.asgi:application"

#: The size of the large messages, each way.
LARGE = 16 * 1024 * 1024

#: Seconds a test waits for one message.
WAIT = 30


def _closed_code(socket: ClientConnection) -> int | None:
    """
    Wait until the server closes C{socket}; the code it closed with.
    """
    try:
        while True:
            socket.recv(timeout=WAIT)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


class _Cases:
    """
    What a WebSocket client of the chat and the probe sees, however it
    reaches their workers; L{connect} says how.
    """

    def connect(
        self, app: str, path: str, origin: str | None = None
    ) -> ClientConnection:
        raise NotImplementedError

    def origin(self) -> str:
        """
        An C{Origin} the chat accepts (one of its C{ALLOWED_HOSTS}).
        """
        raise NotImplementedError

    def chat(self, path: str) -> ClientConnection:
        return self.connect(CHAT, path, self.origin())

    def test_room(self: Any) -> None:
        """
        Two clients in one room each see the other's messages, and their
        own; a client in another room sees none.
        """
        room = f"/live/ws/r{uuid.uuid4().hex[:12]}/"
        elsewhere = f"/live/ws/other{uuid.uuid4().hex[:8]}/"
        with (
            self.chat(room) as one,
            self.chat(room) as two,
            self.chat(elsewhere) as other,
        ):
            one.send("hello from one")
            self.assertEqual(two.recv(timeout=WAIT), "hello from one")
            self.assertEqual(one.recv(timeout=WAIT), "hello from one")
            two.send("hello from two")
            self.assertEqual(one.recv(timeout=WAIT), "hello from two")
            self.assertEqual(two.recv(timeout=WAIT), "hello from two")
            other.send("elsewhere")
            self.assertEqual(other.recv(timeout=WAIT), "elsewhere")
            with self.assertRaises(TimeoutError):
                one.recv(timeout=0.5)

    def test_large_messages(self: Any) -> None:
        """
        A 16 MiB binary message and a 16 MiB text message go each way
        whole.
        """
        data = os.urandom(LARGE)
        text = base64.b64encode(os.urandom(LARGE * 3 // 4)).decode("ascii")
        self.assertEqual(len(text), LARGE)
        with self.chat("/live/ws/echo/") as socket:
            socket.send(data)
            self.assertEqual(socket.recv(timeout=WAIT), data)
            socket.send(text)
            self.assertEqual(socket.recv(timeout=WAIT), text)

    def test_ping(self: Any) -> None:
        """
        A client's ping is answered with a pong.
        """
        with self.chat("/live/ws/echo/") as socket:
            self.assertTrue(socket.ping(b"are you there").wait(WAIT))

    def test_close_code(self: Any) -> None:
        """
        The close code the application closes with reaches the client.
        """
        with self.chat("/live/ws/echo/") as socket:
            socket.send("close 4321")
            self.assertEqual(_closed_code(socket), 4321)

    def test_foreign_origin_refused(self: Any) -> None:
        """
        The chat refuses a socket opened by another site's page (403),
        as Channels' origin check says.
        """
        with self.assertRaises(InvalidStatus) as caught:
            self.connect(CHAT, "/live/ws/lobby/", "http://evil.example").close()
        self.assertEqual(caught.exception.response.status_code, 403)

    def scope(self: Any, path: str) -> dict[str, Any]:
        """
        The scope the probe application got for a socket to C{path}.
        """
        with self.connect(PROBE, path) as socket:
            seen = json.loads(socket.recv(timeout=WAIT))
            seen["local"] = socket.local_address
            socket.send(b"\x00binary")
            self.assertEqual(socket.recv(timeout=WAIT), b"\x00binary")
        return dict(seen)


class WorkerTests(_Cases, SynchronousTestCase):
    """
    The cases against ASGI workers started by the test, over their UNIX
    sockets, with the headers a router adds.
    """

    workers: ClassVar[dict[str, AsgiWorker]]

    @classmethod
    def setUpClass(cls) -> None:
        chat = prepared_sites() / "chat"
        cls.workers = {
            CHAT: AsgiWorker(CHAT, chat, "/live/", "chat.settings"),
            PROBE: AsgiWorker(PROBE, APPS, "/probe/"),
        }
        try:
            for worker in cls.workers.values():
                worker.start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        for worker in cls.workers.values():
            worker.stop()

    def origin(self) -> str:
        return "http://localhost:8080"

    def connect(
        self, app: str, path: str, origin: str | None = None, scheme: str = "http"
    ) -> ClientConnection:
        worker = self.workers[app]
        return unix_connect(
            worker.socket,
            f"ws://localhost:8080{path}",
            additional_headers=worker.facts(scheme),
            origin=origin,
            max_size=None,
            open_timeout=WAIT,
        )

    def test_facts(self) -> None:
        """
        The application's WebSocket scope has the client the router speaks
        for, its scheme as C{ws} / C{wss}, the server as the client named
        it and the prefix as C{root_path}, and no router header.
        """
        seen = self.scope("/probe/ws")
        self.assertEqual(seen["client"], [CLIENT_IP, 40404])
        self.assertEqual(seen["scheme"], "ws")
        self.assertEqual(seen["server"], ["localhost", 8080])
        self.assertEqual((seen["path"], seen["root_path"]), ("/probe/ws", "/probe"))
        names = [name for name, _ in seen["headers"]]
        self.assertEqual([n for n in names if n.startswith("x-txrouter")], [])
        with self.connect(PROBE, "/probe/ws", scheme="https") as socket:
            self.assertEqual(json.loads(socket.recv(timeout=WAIT))["scheme"], "wss")

    def test_strangers_refused(self) -> None:
        """
        A WebSocket without the worker's token is refused with 403 before
        it is accepted.
        """
        worker = self.workers[PROBE]
        for headers in ({}, {"X-Txrouter-Token": "0" * 32}):
            with self.assertRaises(InvalidStatus) as caught:
                unix_connect(
                    worker.socket,
                    "ws://localhost/probe/ws",
                    additional_headers=headers,
                    open_timeout=WAIT,
                ).close()
            self.assertEqual(caught.exception.response.status_code, 403)

    def test_drain_closes_sockets(self) -> None:
        """
        SIGTERM to a worker with an open WebSocket: the socket is closed
        with 1001 (going away), and the worker exits 0.
        """
        worker = AsgiWorker(CHAT, prepared_sites() / "chat", "/live/", "chat.settings")
        self.addCleanup(worker.stop)
        worker.start()
        with unix_connect(
            worker.socket,
            "ws://localhost/live/ws/lobby/",
            additional_headers=worker.facts(),
            origin=self.origin(),
            open_timeout=WAIT,
        ) as socket:
            socket.send("still here")
            self.assertEqual(socket.recv(timeout=WAIT), "still here")
            worker.terminate()
            self.assertEqual(_closed_code(socket), 1001)
        assert worker.process is not None
        self.assertEqual(worker.process.wait(WAIT), 0, worker.output())


class RouterTests(_Cases, SynchronousTestCase):
    """
    The cases through a daemon serving the chat at C{/live/} and the probe
    at C{/probe/}, both C{asgi:} routes, on 127.0.0.1.
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
drain_timeout: 5
runtime_dir: {cls.runtime}
routes:
  /live/: {{asgi: "{CHAT}", path: {chat}, settings: chat.settings}}
  /probe/: {{asgi: "{PROBE}", path: {APPS}}}
"""
        )
        try:
            for path in ("/live/", "/probe/scope"):
                wait_until(
                    lambda path=path: request(cls.server.port, "GET", path)[0] == 200,
                    f"{path} to answer",
                )
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        _stop(cls.server)
        shutil.rmtree(cls.runtime.parent, ignore_errors=True)

    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def connect(
        self, app: str, path: str, origin: str | None = None
    ) -> ClientConnection:
        return connect(
            f"ws://127.0.0.1:{self.server.port}{path}",
            origin=origin,
            max_size=None,
            open_timeout=WAIT,
        )

    def test_facts(self) -> None:
        """
        Through the router, the application's WebSocket scope has the
        client's own address and port, C{ws}, the C{Host} it asked for and
        the prefix as C{root_path}.
        """
        seen = self.scope("/probe/ws")
        self.assertEqual(seen["client"], list(seen["local"]))
        self.assertEqual(seen["scheme"], "ws")
        self.assertEqual(seen["server"], ["127.0.0.1", self.server.port])
        self.assertEqual((seen["path"], seen["root_path"]), ("/probe/ws", "/probe"))
        names = [name for name, _ in seen["headers"]]
        self.assertEqual([n for n in names if n.startswith("x-txrouter")], [])
