"""
L{SteadyLoad}: a bounded, steady load from several keep-alive clients, for
the end-to-end tests that change a running router (reload, restart,
upgrade) and must show that no request fails or gets a wrong answer.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tests.support import wait_until

__all__ = ["Check", "SteadyLoad", "echo_post", "get"]


@dataclass(frozen=True)
class Check:
    """
    One request the clients send over and over, and what a right answer is.

    @ivar accept: called with the status and body; returns an error text,
        or L{None} when the answer is right.
    """

    method: str
    path: str
    body: bytes | None
    accept: Callable[[int, bytes], str | None]
    headers: tuple[tuple[str, str], ...] = ()


def get(path: str, *bodies: bytes, prefix: bool = False) -> Check:
    """
    A GET answered with 200 and one of C{bodies} (any body if none; with
    C{prefix}, a body starting with one of them).
    """

    def accept(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"status {status}: {body[:200]!r}"
        if not bodies:
            return None
        if any(body.startswith(b) if prefix else body == b for b in bodies):
            return None
        return f"unexpected body {body[:200]!r}"

    return Check("GET", path, None, accept)


def echo_post(path: str, size: int) -> Check:
    """
    A POST of C{size} random bytes to an echo view that answers with the
    body's length and SHA-256 as JSON.
    """
    body = os.urandom(size)
    digest = hashlib.sha256(body).hexdigest().encode()

    def accept(status: int, answer: bytes) -> str | None:
        if status != 200:
            return f"status {status}: {answer[:200]!r}"
        if digest not in answer or f'"length": {size}'.encode() not in answer:
            return f"wrong echo {answer[:200]!r}"
        return None

    return Check(
        "POST",
        path,
        body,
        accept,
        (("Content-Type", "application/octet-stream"),),
    )


@dataclass
class SteadyLoad:
    """
    C{clients} threads, each on its own keep-alive connection to
    127.0.0.1:C{port}, sending the C{checks} in turn (a short pause between
    requests keeps the load bounded) until L{stop}.

    A request sent on a reused keep-alive connection that the server closed
    before answering a byte is sent again once on a new connection, as
    browsers and HTTP libraries do (RFC 9112 section 9.3.1): a server that
    is stopping closes idle connections, and a request can cross that close
    on the wire. Those are counted in C{resent}; any other error is a
    failure.

    @ivar done: requests answered rightly.
    @ivar resent: requests sent again after such a close.
    @ivar failures: what went wrong, one line per failed request.
    """

    port: int
    checks: Sequence[Check]
    clients: int = 4
    pause: float = 0.005
    done: int = 0
    resent: int = 0
    failures: list[str] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> SteadyLoad:
        for number in range(self.clients):
            thread = threading.Thread(target=self._client, args=(number,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """
        Stop the clients (each finishes the request it is in).
        """
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        """
        Wait until C{count} more requests have been answered.
        """
        target = self.done + count
        wait_until(
            lambda: self.done >= target or self.failures,
            f"{count} more requests (load at {self.done})",
            timeout,
        )

    def _client(self, number: int) -> None:
        connection = self._connect()
        turn = number
        try:
            while not self._stopping.is_set():
                check = self.checks[turn % len(self.checks)]
                turn += 1
                reused = connection.sock is not None
                error, closed_early = self._one(connection, check)
                if error is not None and closed_early and reused:
                    connection.close()
                    with self._lock:
                        self.resent += 1
                    error, _ = self._one(connection, check)
                with self._lock:
                    if error is None:
                        self.done += 1
                    else:
                        self.failures.append(f"{check.method} {check.path}: {error}")
                        connection.close()
                # Pacing, not waiting: it keeps the load steady and bounded.
                time.sleep(self.pause)
        finally:
            connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def _one(
        self, connection: http.client.HTTPConnection, check: Check
    ) -> tuple[str | None, bool]:
        """
        Send C{check} and judge its answer.

        @return: the error or L{None}, and whether the connection was closed
            before any byte of an answer came.
        """
        try:
            connection.request(
                check.method, check.path, body=check.body, headers=dict(check.headers)
            )
            response = connection.getresponse()
        except (
            http.client.RemoteDisconnected,
            ConnectionResetError,
            BrokenPipeError,
        ) as e:
            return f"{type(e).__name__}: {e}", True
        except (OSError, http.client.HTTPException) as e:
            return f"{type(e).__name__}: {e}", False
        try:
            body = response.read()
        except (OSError, http.client.HTTPException) as e:
            return f"{type(e).__name__} in the body: {e}", False
        if response.getheader("connection", "").lower() == "close":
            connection.close()
        return check.accept(response.status, body), False
