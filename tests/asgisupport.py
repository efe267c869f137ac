"""
Helpers for the end-to-end tests of C{asgi:} routes: L{AsgiWorker}, an ASGI
worker process (C{python -m txrouter.worker serve --asgi ...}) started by
the test itself, with a token the test knows, so that the test can speak
for a router over the worker's UNIX socket.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support import REPO, wait_until

__all__ = ["CLIENT_IP", "AsgiWorker", "UnixHTTPConnection"]

#: A client address other than the router's own, on the loopback network.
CLIENT_IP = "127.0.0.5"


class UnixHTTPConnection(http.client.HTTPConnection):
    """
    An HTTP/1.1 client connection over a UNIX socket.
    """

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class AsgiWorker:
    """
    An ASGI worker process serving C{app} at C{prefix} on a socket in a
    folder of its own; stopped (and its folder removed) by L{stop}.
    """

    def __init__(
        self,
        app: str,
        path: Path,
        prefix: str = "/live/",
        settings: str | None = None,
        drain_timeout: float = 10.0,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="txrouter-asgi-"))
        self.socket = str(self.dir / "w.sock")
        self.token = secrets.token_hex(16)
        self.log = self.dir / "worker.log"
        self.command = [
            sys.executable,
            "-m",
            "txrouter.worker",
            "serve",
            "--socket",
            self.socket,
            "--prefix",
            prefix,
            "--drain-timeout",
            str(drain_timeout),
            "--asgi",
            app,
            "--path",
            str(path),
            *(["--settings", settings] if settings else []),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> AsgiWorker:
        """
        Start the worker and wait until its socket accepts connections.
        """
        env = {**os.environ, "TXROUTER_WORKER_TOKEN": self.token}
        env.pop("TXROUTER_ROUTER_PID", None)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.dir, env=env, stdout=log, stderr=log
            )
        wait_until(self._accepting, f"the worker's socket ({self.output()})")
        return self

    def _accepting(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the worker exited:\n{self.output()}")
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(self.socket)
            except OSError:
                return False
        return True

    def output(self) -> str:
        """
        What the worker wrote so far.
        """
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def facts(self, scheme: str = "http", **more: str) -> dict[str, str]:
        """
        The headers a router adds to a request for this worker.
        """
        return {
            "X-Txrouter-Token": self.token,
            "X-Txrouter-Client": CLIENT_IP,
            "X-Txrouter-Client-Port": "40404",
            "X-Txrouter-Scheme": scheme,
            "X-Txrouter-Server-Port": "8080",
            "X-Txrouter-Protocol": "HTTP/1.1",
            **more,
        }

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """
        One request over the worker's socket.

        @return: status, headers (lower-case names) and body.
        """
        connection = UnixHTTPConnection(self.socket)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            answer = {k.lower(): v for k, v in response.getheaders()}
            return response.status, answer, data
        finally:
            connection.close()

    def terminate(self) -> None:
        """
        Send SIGTERM, as its router does to stop it.
        """
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """
        Stop the worker (SIGKILL after 30 seconds) and remove its folder.
        """
        try:
            if self.process is not None and self.process.poll() is None:
                self.terminate()
                try:
                    self.process.wait(30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        self.process.kill()
                    self.process.wait(10)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
