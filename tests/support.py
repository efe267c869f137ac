"""
Helpers for the end-to-end tests: a prepared copy of the example sites, free
ports, and L{Txrouter}, a real C{twistd txrouter} process.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = [
    "APPS",
    "REPO",
    "Txrouter",
    "alive",
    "free_port",
    "listening",
    "prepared_sites",
    "request",
    "sleeping",
    "wait_until",
]

REPO = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"


def wait_until(
    condition: Callable[[], object], what: str, timeout: float = 30.0
) -> None:
    """
    Poll C{condition} until it is true; fail with C{what} after C{timeout}.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def settled(
    progress: Callable[[], int], still: float = 1.0, deadline: float = 30.0
) -> int:
    """
    Poll C{progress()} until it stops changing for C{still} seconds; return
    its last value. Fail if it still changes after C{deadline} seconds.
    """
    last, since = progress(), time.monotonic()
    give_up = since + deadline
    while time.monotonic() - since < still:
        if time.monotonic() > give_up:
            raise AssertionError(f"still progressing after {deadline}s")
        time.sleep(0.1)
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
    return last


def kill_workers(pids: Iterable[int]) -> None:
    """
    SIGKILL those of C{pids} that are still txrouter worker processes: the
    router stops its workers, this makes sure after a failed test.
    """
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"txrouter.worker" in cmdline.split(b"\0"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def stop_daemon(
    server: Txrouter | None,
    workers: Iterable[int],
    scratch: Path,
    *also: Callable[[], object],
) -> None:
    """
    Stop C{server} (L{None} when it was never made), kill any of its
    C{workers} still alive, call each of C{also}, and remove C{scratch}:
    every step runs even when one before it failed.
    """
    with contextlib.ExitStack() as steps:
        steps.callback(shutil.rmtree, scratch, ignore_errors=True)
        for step in reversed(also):
            steps.callback(step)
        steps.callback(kill_workers, workers)
        if server is not None:
            steps.callback(server.stop)


def program(name: str, package: str, *folders: str) -> str:
    """
    The path of the program C{name} (on C{PATH}, else in C{folders}).
    Without it, the test is skipped with the Debian C{package} to install,
    except in CI (C{CI} set), where it fails: C{.ci/run} installs every
    program the end-to-end tests drive, so a missing one there is a broken
    CI, not a reason to skip.
    """
    found = shutil.which(name) or next(
        (found for f in folders if (found := shutil.which(name, path=f))), None
    )
    if found is not None:
        return found
    why = f"{name} is not installed (Debian: apt-get install {package})"
    if os.environ.get("CI"):
        raise AssertionError(f"{why}; CI must run this test (.ci/run installs it)")
    raise unittest.SkipTest(why)


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@functools.cache
def prepared_sites() -> Path:
    """
    A copy of C{sites/}, migrated and with static files collected, made once
    per test session (the repository's own copy is left untouched).
    """
    scratch = Path(tempfile.mkdtemp(prefix="txrouter-sites-"))
    atexit.register(shutil.rmtree, scratch, True)
    target = scratch / "sites"
    shutil.copytree(
        REPO / "sites",
        target,
        ignore=shutil.ignore_patterns("db.sqlite3", "staticfiles", "__pycache__"),
    )
    subprocess.run(
        [sys.executable, str(target / "prepare.py")],
        check=True,
        capture_output=True,
    )
    return target


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    """
    One HTTP/1.1 request to 127.0.0.1:C{port}.

    @return: status, headers (lower-case names) and body.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            data,
        )
    finally:
        connection.close()


def listening(port: int) -> bool:
    """
    Whether something accepts connections on 127.0.0.1:C{port}.
    """
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def sleeping(pid: int) -> bool:
    """
    Whether a thread of process C{pid} is inside C{time.sleep} (a slow view
    running, or a slow import), as the kernel tells by its wait channel.
    """
    for wchan in Path(f"/proc/{pid}/task").glob("*/wchan"):
        try:
            if "nanosleep" in wchan.read_text():
                return True
        except OSError:
            continue
    return False


def alive(pid: int) -> bool:
    """
    Whether process C{pid} exists (a zombie child of ours is reaped, and
    does not).
    """
    return _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours still answers kill(0): reap it if it is one.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0


class Txrouter:
    """
    A real C{twistd txrouter} process serving a routes file, daemonized
    (the default) or in the foreground.

    The routes text may use C{{port}}, replaced by a free port. Stop it with
    L{stop}, which sends SIGTERM to the PID in its pidfile and waits until
    the process is gone (SIGKILL after a deadline).
    """

    def __init__(self, routes: str, daemon: bool = True) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="txrouter-e2e-"))
        # Logs stay readable until the test session ends.
        atexit.register(shutil.rmtree, self.dir, True)
        self.port = free_port()
        self.config = self.dir / "routes.yaml"
        self.config.write_text(
            routes.replace("{port}", str(self.port)), encoding="utf-8"
        )
        self.pidfile = self.dir / "twistd.pid"
        self.logfile = self.dir / "twistd.log"
        self.daemon = daemon
        self.pid: int | None = None
        self._foreground: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """
        The twistd command line.
        """
        return [
            str(Path(sys.executable).parent / "twistd"),
            *([] if self.daemon else ["--nodaemon"]),
            "--pidfile",
            str(self.pidfile),
            "--logfile",
            str(self.logfile),
            "txrouter",
            "--config",
            str(self.config),
        ]

    def run_to_failure(self) -> subprocess.CompletedProcess[str]:
        """
        Run twistd expecting it to refuse to start; return its result.
        """
        return subprocess.run(
            self.command(), cwd=self.dir, capture_output=True, text=True, timeout=60
        )

    def start(self) -> Txrouter:
        """
        Start the server and wait until it accepts connections.
        """
        if self.daemon:
            result = subprocess.run(
                self.command(), cwd=self.dir, capture_output=True, text=True, timeout=60
            )
            if result.returncode != 0:
                raise AssertionError(
                    f"twistd exited {result.returncode}:\n{result.stderr}"
                )
            wait_until(self.pidfile.exists, "the pidfile")
            self.pid = int(self.pidfile.read_text())
        else:
            self._foreground = subprocess.Popen(
                self.command(),
                cwd=self.dir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.pid = self._foreground.pid
        wait_until(self._accepting, f"port {self.port} to accept ({self.log()})")
        return self

    def _accepting(self) -> bool:
        assert self.pid is not None
        if not _alive(self.pid):
            raise AssertionError(f"twistd died while starting:\n{self.log()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def log(self) -> str:
        """
        The twistd log so far.
        """
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log yet)"

    def alive(self) -> bool:
        """
        Whether the server process still exists.
        """
        return self.pid is not None and _alive(self.pid)

    def terminate(self) -> None:
        """
        Send SIGTERM, as an init system would.
        """
        assert self.pid is not None
        os.kill(self.pid, signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> None:
        """
        SIGTERM, then wait for the process to exit; SIGKILL it after
        C{timeout} and fail.
        """
        if self.pid is None or not _alive(self.pid):
            return
        self.terminate()
        try:
            wait_until(lambda: not self.alive(), "twistd to exit", timeout)
        except AssertionError:
            os.kill(self.pid, signal.SIGKILL)
            raise
        finally:
            if self._foreground is not None:
                self._foreground.wait(timeout=5)
