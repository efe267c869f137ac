"""Soak txrouter: minutes of mixed load with faults, then per-route failures,
latencies and the router's memory curve.

Usage (from the repository root)::

    .venv/bin/python bench/soak.py                      # 10 minutes
    .venv/bin/python bench/soak.py --duration 60 --out /tmp/soak

It starts a real daemonized ``twistd txrouter`` from this checkout's venv
(``PYTHONPATH`` set to the checkout, as ``bench/run.py`` does) on a free port
of 127.0.0.1, with four routes:

  - ``/``: the example Django blog, in the router process (``workers: 0``);
  - ``/wiki/``: the example Django wiki in two worker processes;
  - ``/api/``: ``proxy:`` to a healthy upstream;
  - ``/flaky/``: ``proxy:`` to an upstream that the soak faults.

The sites are a copy of ``sites/`` prepared in a temporary folder (as the
tests do); the upstreams run in one process of their own
(``bench/soak_upstream.py``). Then, for ``--duration`` seconds:

  - load: ``--clients`` threads per route, each sending GETs and POSTs
    (bodies of 300 B to 150 KB, with ``Content-Length`` or chunked) and
    checking every answer (status, and the body: exact text, echoed
    length and SHA-256); a quarter of the requests ask for
    ``Connection: close``, the others reuse the connection;
  - faults: every ``--kill-every`` seconds ``kill -9`` of one ready worker
    of ``/wiki/`` (its PID from the admin endpoint's status); the faulted
    upstream cycles through healthy, stall-head (never answers), healthy,
    stall-body (head and 1 KB of the body, then nothing), healthy, refuse
    (listener closed); vanishing clients, on every route: half a request
    head, a head and half a body, half a response read, or a request left
    before its answer, then a close or a reset (``SO_LINGER`` 0);
  - every ``--sample-every`` seconds: the router's RSS, open files,
    threads and CPU, its workers' total RSS and CPU, requests done.

A failure is any status other than 2xx/3xx, a connection error, a timeout
or a wrong body. Failures are expected only on ``/flaky/`` for requests
that overlap a fault phase, and on ``/wiki/`` for requests that overlap a
kill (in flight at that moment, or sent in the second after it); every
other failure is unexpected. A worker that exits without the soak killing
it (a crash, or another process's kill) is reported, with the failures
around it. The router's RSS is flat when the mean of the last third of the
samples is within ``--rss-tolerance`` of the middle third's (the first
third is warm-up).

Exit status: 0 when there was no unexpected failure, no worker exited
unasked, the RSS was flat and the router survived; 1 otherwise; 2 when the
soak could not start; 130 on Ctrl-C (the report so far is printed). Every
process it started is stopped by its PID, also on failure, Ctrl-C or
SIGTERM.

Only the standard library is used; the load must count each request's
outcome per route, so it is not wrk.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from soak_upstream import HELLO as UPSTREAM_HELLO
from soak_upstream import big_body

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
UPSTREAM_SCRIPT = Path(__file__).resolve().parent / "soak_upstream.py"

#: The faulted route's C{timeout:} (seconds to the head, and inside a body).
FAULTED_TIMEOUT = 2
#: The faulted upstream's cycle: (mode, seconds).
PHASES = (
    ("healthy", 10.0),
    ("stall-head", 8.0),
    ("healthy", 10.0),
    ("stall-body", 8.0),
    ("healthy", 10.0),
    ("refuse", 8.0),
)
#: A failure on the worker route up to this long after a kill is expected.
KILL_WINDOW = 1.0
#: Seconds a client waits for any answer before it counts a timeout.
CLIENT_TIMEOUT = 30.0
#: How long the router, its workers and the upstreams have to get ready.
READY_TIMEOUT = 90.0
#: The router's drain on SIGTERM, and how long its stop may take beyond it.
DRAIN_TIMEOUT = 10
STOP_GRACE = 10.0
#: Seconds the router idles after the load before its last sample.
IDLE_WAIT = 3.0
#: Share of the load's requests sent with C{Connection: close}.
CLOSE_SHARE = 0.25

ROUTES = """\
listen: tcp:{port}:interface=127.0.0.1
admin: unix:{admin}:mode=600
runtime_dir: {runtime}
drain_timeout: {drain}
routes:
  /:        {{django: {sites}/blog, workers: 0}}
  /wiki/:   {{django: {sites}/wiki, workers: 2}}
  /api/:    {{proxy: "http://127.0.0.1:{healthy}/v1/"}}
  /flaky/:  {{proxy: "http://127.0.0.1:{faulted}/v1/", timeout: {timeout}, \
connect_timeout: 1}}
"""


@dataclass(frozen=True)
class Route:
    """One route of the soak: its name in the report, prefix and kind."""

    name: str
    prefix: str
    kind: str


IN_PROCESS = Route("in-process", "/", "django blog, workers: 0")
WORKERS = Route("workers", "/wiki/", "django wiki, workers: 2")
PROXY = Route("proxy", "/api/", "proxy, healthy upstream")
FAULTED = Route("faulted", "/flaky/", "proxy, faulted upstream")
ROUTE_LIST = (IN_PROCESS, WORKERS, PROXY, FAULTED)


# --------------------------------------------------------------------------
# What the clients send, and what a right answer is


def _django_hello(project: str) -> bytes:
    return f"hello from {project}".encode().ljust(99, b".") + b"\n"


@dataclass(frozen=True)
class Body:
    """A request body and what an echo of it must contain."""

    data: bytes
    digest: bytes

    @classmethod
    def of(cls, data: bytes) -> Body:
        return cls(data, hashlib.sha256(data).hexdigest().encode())

    def pieces(self) -> Iterator[bytes]:
        """The body in 8 KiB pieces: http.client sends them chunked."""
        view = memoryview(self.data)
        for start in range(0, len(self.data), 8192):
            yield bytes(view[start : start + 8192])


BODIES = tuple(
    Body.of(random.Random(size).randbytes(size))
    for size in (300, 5_000, 60_000, 150_000)
)

Check = Callable[[int, bytes], str | None]


@dataclass(frozen=True)
class Probe:
    """One kind of request a load client sends on its route."""

    name: str
    method: str
    path: str
    check: Check
    body: Body | None = None
    chunked: bool = False


def exact(expected: bytes) -> Check:
    """A 200 whose body is C{expected}."""

    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"status {status}"
        if body != expected:
            return f"wrong body ({len(body)} bytes, expected {len(expected)})"
        return None

    return check


def page(status: int, body: bytes) -> str | None:
    """A 200 with an HTML page."""
    if status != 200:
        return f"status {status}"
    if b"</html>" not in body:
        return f"wrong body ({len(body)} bytes, no </html>)"
    return None


def echoed(body: Body) -> Check:
    """A 200 whose JSON gives the length and SHA-256 of C{body}."""
    length = b'"length": %d' % len(body.data)

    def check(status: int, answer: bytes) -> str | None:
        if status != 200:
            return f"status {status}"
        if body.digest not in answer or length not in answer:
            return f"wrong echo {answer[:120]!r}"
        return None

    return check


def _stream_body(n: int) -> bytes:
    return b"".join(b"chunk %d\n" % i for i in range(n))


def django_probes(prefix: str, project: str, slow: bool) -> list[Probe]:
    """The requests sent to an example Django project mounted at C{prefix}."""
    probes = [
        Probe("GET hello", "GET", f"{prefix}hello/", exact(_django_hello(project))),
        Probe("GET list page", "GET", prefix, page),
        Probe("GET stream", "GET", f"{prefix}stream/?n=50", exact(_stream_body(50))),
    ]
    for body in BODIES:
        size = len(body.data)
        probes.append(
            Probe(f"POST echo {size}", "POST", f"{prefix}echo/", echoed(body), body)
        )
        probes.append(
            Probe(
                f"POST echo {size} chunked",
                "POST",
                f"{prefix}echo/",
                echoed(body),
                body,
                chunked=True,
            )
        )
    if slow:
        # Keeps requests in flight in the workers when one is killed.
        probes += [
            Probe("GET slow 0.2s", "GET", f"{prefix}slow/?s=0.2", exact(b"slept"))
        ] * 2
    return probes


def proxy_probes(prefix: str, full: bool) -> list[Probe]:
    """The requests sent to a proxy route of the soak upstream."""
    probes = [
        Probe("GET hello", "GET", f"{prefix}hello", exact(UPSTREAM_HELLO)),
        Probe("GET big 100k", "GET", f"{prefix}big?n=100000", exact(big_body(100_000))),
    ]
    for body in BODIES if full else BODIES[:2]:
        size = len(body.data)
        probes.append(
            Probe(f"POST echo {size}", "POST", f"{prefix}echo", echoed(body), body)
        )
        if full:
            probes.append(
                Probe(
                    f"POST echo {size} chunked",
                    "POST",
                    f"{prefix}echo",
                    echoed(body),
                    body,
                    chunked=True,
                )
            )
    if full:
        probes.append(
            Probe(
                "GET chunked 50k",
                "GET",
                f"{prefix}chunked?n=50000",
                exact(big_body(50_000)),
            )
        )
    return probes


PROBES: dict[Route, list[Probe]] = {
    IN_PROCESS: django_probes("/", "blog", slow=False),
    WORKERS: django_probes("/wiki/", "wiki", slow=True),
    PROXY: proxy_probes("/api/", full=True),
    FAULTED: proxy_probes("/flaky/", full=False),
}


# --------------------------------------------------------------------------
# Load


@dataclass(frozen=True)
class Outcome:
    """One request of the load: when it ran and what went wrong, if anything."""

    route: Route
    probe: str
    start: float
    end: float
    error: str | None


class Clock:
    """Seconds since the soak's load started."""

    def __init__(self) -> None:
        self.zero = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.zero


class LoadClient(threading.Thread):
    """
    A client on one route: sends its probes in random order, one at a time,
    on a keep-alive connection (a share of them with C{Connection: close}),
    with a pause between two requests, until C{stop} is set.
    """

    def __init__(
        self,
        route: Route,
        port: int,
        clock: Clock,
        stop: threading.Event,
        outcomes: list[Outcome],
        pause: float,
        seed: int,
    ) -> None:
        super().__init__(name=f"load {route.name} {seed}", daemon=True)
        self.route = route
        self.port = port
        self.clock = clock
        self.stop = stop
        self.outcomes = outcomes
        self.pause = pause
        self.random = random.Random(seed)

    def run(self) -> None:
        connection: http.client.HTTPConnection | None = None
        probes = PROBES[self.route]
        while not self.stop.is_set():
            probe = self.random.choice(probes)
            close = self.random.random() < CLOSE_SHARE
            if connection is None:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=CLIENT_TIMEOUT
                )
            start = self.clock.now()
            error = self.one(connection, probe, close)
            # list.append is atomic: the outcome lists need no lock.
            self.outcomes.append(
                Outcome(self.route, probe.name, start, self.clock.now(), error)
            )
            if error is not None or close:
                connection.close()
                connection = None
            self.stop.wait(self.pause * self.random.uniform(0.5, 1.5))
        if connection is not None:
            connection.close()

    def one(
        self, connection: http.client.HTTPConnection, probe: Probe, close: bool
    ) -> str | None:
        """Send C{probe}; return what went wrong, or None."""
        headers = {"Connection": "close"} if close else {}
        body: bytes | Iterator[bytes] | None = None
        if probe.body is not None:
            headers["Content-Type"] = "application/octet-stream"
            body = probe.body.pieces() if probe.chunked else probe.body.data
        try:
            connection.request(probe.method, probe.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except TimeoutError:
            return "timeout"
        except (OSError, http.client.HTTPException) as e:
            return type(e).__name__
        return probe.check(response.status, data)


#: Where vanishing clients go on each route: a POST target, a big or slow
#: streamed response (and its length), and a slow answer.
VANISH_TARGETS: dict[Route, tuple[str, str, int, str]] = {
    IN_PROCESS: (
        "/echo/",
        "/stream/?n=200&delay=0.01",
        len(_stream_body(200)),
        "/slow/?s=1",
    ),
    WORKERS: (
        "/wiki/echo/",
        "/wiki/stream/?n=200&delay=0.01",
        len(_stream_body(200)),
        "/wiki/slow/?s=1",
    ),
    PROXY: ("/api/echo", "/api/big?n=1000000", 1_000_000, "/api/slow?s=1"),
    FAULTED: ("/flaky/echo", "/flaky/big?n=1000000", 1_000_000, "/flaky/slow?s=1"),
}
VANISH_KINDS = ("half-head", "half-body", "half-response", "before-answer")


@dataclass
class Vanished:
    """What the vanishing clients did: one L{Outcome} per connection (an
    error when the router refused or broke it before the client left)."""

    outcomes: list[Outcome] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    resets: int = 0


class VanishingClient(threading.Thread):
    """
    A client that opens a connection, does part of an exchange, and goes
    away with a close or a reset, over and over, on every route.
    """

    def __init__(
        self,
        port: int,
        stop: threading.Event,
        clock: Clock,
        record: Vanished,
        lock: threading.Lock,
        pause: float,
        seed: int,
    ) -> None:
        super().__init__(name=f"vanishing {seed}", daemon=True)
        self.port = port
        self.stop = stop
        self.clock = clock
        self.record = record
        self.lock = lock
        self.pause = pause
        self.random = random.Random(seed)

    def run(self) -> None:
        while not self.stop.is_set():
            route = self.random.choice(ROUTE_LIST)
            kind = self.random.choice(VANISH_KINDS)
            reset = self.random.random() < 0.5
            start = self.clock.now()
            error = self.vanish(route, kind, reset)
            outcome = Outcome(route, f"vanish {kind}", start, self.clock.now(), error)
            with self.lock:
                self.record.outcomes.append(outcome)
                self.record.kinds[kind] += 1
                self.record.resets += reset
            self.stop.wait(self.pause * self.random.uniform(0.5, 1.5))

    def vanish(self, route: Route, kind: str, reset: bool) -> str | None:
        post, big, big_length, slow = VANISH_TARGETS[route]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small receive buffer: the router must hold the rest of a big
        # answer, so the client leaves in the middle of it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.settimeout(CLIENT_TIMEOUT)
        try:
            sock.connect(("127.0.0.1", self.port))
            if kind == "half-head":
                head = _head("GET", slow, "User-Agent: soak\r\nAccept: */*\r\n")
                sock.sendall(head[: self.random.randrange(1, len(head) - 4)])
                time.sleep(self.random.uniform(0, 0.2))
            elif kind == "half-body":
                size = self.random.choice((1_000, 50_000, 400_000))
                head = _head("POST", post, f"Content-Length: {size}\r\n")
                sock.sendall(head + b"x" * (size // 2))
                time.sleep(self.random.uniform(0, 0.2))
            elif kind == "half-response":
                # With "close", a short answer (an error page) ends in EOF.
                sock.sendall(_head("GET", big, "Connection: close\r\n"))
                got = 0
                while got < big_length // 2:
                    data = sock.recv(65536)
                    if not data:
                        return "closed before half the answer"
                    got += len(data)
            else:  # before-answer
                sock.sendall(_head("GET", slow, ""))
                time.sleep(self.random.uniform(0.1, 0.5))
        except TimeoutError:
            return "timeout"
        except OSError as e:
            return type(e).__name__
        finally:
            if reset:
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            sock.close()
        return None


def _head(method: str, path: str, extra: str) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


# --------------------------------------------------------------------------
# Processes: the sites, the upstreams, the router


def base_env(**extra: str) -> dict[str, str]:
    """Our environment without variables that would steer the servers."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "DJANGO_SETTINGS_MODULE", "DJANGO_DEBUG"}
    }
    env.update(extra)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def progress(message: str) -> None:
    """Report progress on stderr, keeping stdout for the report."""
    print(message, file=sys.stderr, flush=True)


class SoakFailed(Exception):
    """The soak could not start."""


def code_version() -> str:
    """Which code runs: the commit, and the files changed since (read only:
    no optional locks, so nothing in the checkout is written)."""
    git = ["git", "--no-optional-locks", "-C", str(REPO)]
    try:
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no", "txrouter"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[1::2]
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    if not changed:
        return f"{commit}, no change in txrouter/"
    return f"{commit} with uncommitted changes in {', '.join(changed)}"


def prepare_sites(tmp: Path) -> Path:
    """A copy of C{sites/}, migrated, static files collected (as the tests
    prepare theirs); the repository's copy is left untouched."""
    target = tmp / "sites"
    shutil.copytree(
        REPO / "sites",
        target,
        ignore=shutil.ignore_patterns("db.sqlite3", "staticfiles", "__pycache__"),
    )
    result = subprocess.run(
        [sys.executable, str(target / "prepare.py")],
        env=base_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SoakFailed(f"sites/prepare.py failed:\n{result.stdout}{result.stderr}")
    return target


class Upstreams:
    """The soak upstream process (healthy and faulted servers)."""

    def __init__(self, log: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(UPSTREAM_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("wb"),
            env=base_env(),
            text=True,
            # Out of the terminal's process group: Ctrl-C must not stop it
            # before the clients have stopped; the soak ends it by its PID.
            start_new_session=True,
        )
        words = self._line().split()
        if len(words) != 3 or words[0] != "ready":
            self.stop()
            raise SoakFailed(f"the upstream process said {' '.join(words)!r}")
        self.healthy, self.faulted = int(words[1]), int(words[2])
        self.mode = "healthy"

    def _line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def set_mode(self, mode: str) -> None:
        """Switch the faulted upstream to C{mode}; return once it is in force."""
        assert self.process.stdin is not None
        self.process.stdin.write(mode + "\n")
        self.process.stdin.flush()
        answer = self._line()
        if answer != f"ok {mode}":
            raise SoakFailed(f"the faulted upstream answered {answer!r} to {mode}")
        self.mode = mode

    def stop(self) -> None:
        """End the process (EOF on its stdin, then SIGTERM, SIGKILL)."""
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the admin endpoint's UNIX socket."""

    def __init__(self, socket_path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


@dataclass(frozen=True)
class Worker:
    """One worker of the worker route, as the admin status gives it."""

    name: str
    pid: int
    ready: bool


class Router:
    """A daemonized C{twistd txrouter}, stopped by its PID."""

    def __init__(self, tmp: Path, sites: Path, upstreams: Upstreams) -> None:
        self.port = free_port()
        self.admin = tmp / "admin.sock"
        # The workers' sockets are here: it tells our workers from others'.
        self.runtime = tmp / "run"
        self.config = tmp / "routes.yaml"
        self.pidfile = tmp / "twistd.pid"
        self.logfile = tmp / "twistd.log"
        self.config.write_text(
            ROUTES.format(
                port=self.port,
                admin=self.admin,
                runtime=self.runtime,
                drain=DRAIN_TIMEOUT,
                sites=sites,
                healthy=upstreams.healthy,
                faulted=upstreams.faulted,
                timeout=FAULTED_TIMEOUT,
            )
        )
        self.tmp = tmp
        self.pid: int | None = None
        #: Every worker PID seen, to make sure none survives the soak.
        self.seen_workers: set[int] = set()

    def start(self) -> None:
        """Start twistd (it daemonizes) and wait until it accepts."""
        # `python -m twisted` runs `twist`, not `twistd`: run the venv's twistd.
        argv = [sys.executable, str(VENV_BIN / "twistd")]
        argv += ["--pidfile", str(self.pidfile), "--logfile", str(self.logfile)]
        argv += ["txrouter", "--config", str(self.config)]
        result = subprocess.run(
            argv,
            cwd=self.tmp,
            env=base_env(PYTHONPATH=str(REPO)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise SoakFailed(f"twistd exited {result.returncode}:\n{result.stderr}")
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.pidfile.exists():
            if time.monotonic() > deadline:
                raise SoakFailed(f"no pidfile from twistd:\n{self.log_tail()}")
            time.sleep(0.05)
        self.pid = int(self.pidfile.read_text())

    def alive(self) -> bool:
        return self.pid is not None and process_alive(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        text = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) or "(no log)"

    def workers(self) -> list[Worker]:
        """The worker route's workers, from the admin endpoint's status."""
        connection = _UnixHTTPConnection(str(self.admin))
        try:
            connection.request("GET", "/status")
            status = json.loads(connection.getresponse().read())
        finally:
            connection.close()
        for route in status["routes"]:
            if route["prefix"] == WORKERS.prefix and "workers" in route:
                return [
                    Worker(w["name"], int(w["pid"] or 0), bool(w["ready"]))
                    for w in route["workers"]
                ]
        raise SoakFailed(f"no workers for {WORKERS.prefix} in the admin status")

    def worker_pids(self) -> list[int]:
        """The live worker processes whose parent is the router (from /proc)."""
        if self.pid is None:
            return []
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rpartition(")")[2].split()
                if int(fields[1]) == self.pid and fields[0] not in "ZX":
                    pid = int(stat.parent.name)
                    if self.is_worker(pid):
                        found.append(pid)
        self.seen_workers.update(found)
        return sorted(found)

    def stop(self) -> None:
        """SIGTERM (it drains), SIGKILL after the drain and a grace; then
        SIGKILL any worker still alive."""
        if self.pid is not None:
            self.worker_pids()
            for sig, wait in (
                (signal.SIGTERM, DRAIN_TIMEOUT + STOP_GRACE),
                (signal.SIGKILL, 5.0),
            ):
                if not process_alive(self.pid):
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)
                deadline = time.monotonic() + wait
                while process_alive(self.pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
        for pid in self.seen_workers:
            # A PID is reused in time: check it is still one of ours.
            if process_alive(pid) and self.is_worker(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def is_worker(self, pid: int) -> bool:
        """Whether C{pid} is a worker of this router: a txrouter worker
        whose socket is in this router's runtime folder."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if b"txrouter.worker" not in argv or b"--socket" not in argv:
            return False
        where = argv.index(b"--socket") + 1
        return where < len(argv) and Path(os.fsdecode(argv[where])).parent == (
            self.runtime
        )


def process_alive(pid: int) -> bool:
    """Whether process C{pid} exists and is not a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text.rpartition(")")[2].split()[0] not in ("Z", "X")


def fetch(port: int, path: str) -> int:
    """GET C{path}; its status (0: no answer)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        connection.close()


def wait_ready(router: Router) -> None:
    """Wait until every route answers 200 and both workers are ready."""
    deadline = time.monotonic() + READY_TIMEOUT
    paths = ("/hello/", "/wiki/hello/", "/api/hello", "/flaky/hello")
    while True:
        if not router.alive():
            raise SoakFailed(f"twistd died while starting:\n{router.log_tail()}")
        statuses = [fetch(router.port, path) for path in paths]
        if statuses == [200] * len(paths):
            with contextlib.suppress(OSError, SoakFailed, ValueError):
                if [w.ready for w in router.workers()] == [True, True]:
                    return
        if time.monotonic() > deadline:
            raise SoakFailed(
                f"not ready after {READY_TIMEOUT:.0f} s: "
                f"{dict(zip(paths, statuses, strict=True))}\n{router.log_tail()}"
            )
        time.sleep(0.25)


# --------------------------------------------------------------------------
# Faults


@dataclass
class Phase:
    """One phase of the faulted upstream: its mode, from C{start} to C{end}."""

    mode: str
    start: float
    end: float = float("inf")


@dataclass
class Kill:
    """One worker gone: a C{kill -9} of the soak's (C{ours}), or an exit the
    soak did not cause (a crash, or another process's kill), seen within
    L{WATCH_EVERY} seconds; and when a replacement was ready."""

    at: float
    name: str
    pid: int
    ours: bool = True
    ready_again: float | None = None

    def window(self) -> tuple[float, float]:
        """When failures on the worker route are explained by this exit: the
        second after the soak's kill; for another exit, until its
        replacement was ready (no worker may have been left)."""
        if self.ours:
            return self.at, self.at + KILL_WINDOW
        end = self.ready_again if self.ready_again is not None else float("inf")
        return self.at, max(end, self.at + KILL_WINDOW)


#: Seconds between two looks for worker processes that exited.
WATCH_EVERY = 0.25


class Faults:
    """
    Injects the faults on their schedule, from the main loop's ticks: a
    worker killed every C{kill_every} seconds (from half of that), the
    faulted upstream cycling through L{PHASES}.
    """

    def __init__(
        self, router: Router, upstreams: Upstreams, clock: Clock, kill_every: float
    ) -> None:
        self.router = router
        self.upstreams = upstreams
        self.clock = clock
        self.kill_every = kill_every
        self.next_kill = kill_every / 2
        self.phases = [Phase("healthy", 0.0)]
        self.phase_index = 0
        self.next_phase = PHASES[0][1]
        self.kills: list[Kill] = []
        #: Kills put off because a worker was not ready (a restart pending).
        self.deferred = 0
        self.turn = 0
        self._next_poll = 0.0
        self._next_watch = 0.0
        self._alive = set(router.worker_pids())
        self._names: dict[int, str] = {}
        self._learn_names()

    def _learn_names(self) -> list[Worker]:
        workers = self.router.workers()
        self._names.update((w.pid, w.name) for w in workers)
        return workers

    def others(self) -> list[Kill]:
        """The worker exits that the soak did not cause."""
        return [k for k in self.kills if not k.ours]

    def tick(self) -> None:
        now = self.clock.now()
        if now >= self.next_phase:
            self.phase_index = (self.phase_index + 1) % len(PHASES)
            mode, length = PHASES[self.phase_index]
            self.set_mode(mode)
            self.next_phase = now + length
        if self.kill_every > 0 and now >= self.next_kill:
            try:
                killed = self.kill()
            except (OSError, ValueError, http.client.HTTPException) as e:
                progress(f"soak: no worker status from the admin endpoint: {e}")
                killed = False
            if killed:
                self.next_kill += self.kill_every
            else:
                self.deferred += 1
                self.next_kill = now + 1.0
        if now >= self._next_watch:
            self._next_watch = now + WATCH_EVERY
            self.watch_exits()
        pending = [k for k in self.kills if k.ready_again is None]
        if pending and now >= self._next_poll:
            self._next_poll = now + 0.1
            self.watch_restart(pending)

    def watch_exits(self) -> None:
        """Note every worker process gone that the soak did not kill."""
        alive = set(self.router.worker_pids())
        ours = {k.pid for k in self.kills}
        for pid in sorted(self._alive - alive - ours):
            at = self.clock.now() - WATCH_EVERY
            name = self._names.get(pid, "?")
            self.kills.append(Kill(at, name, pid, ours=False))
            progress(
                f"soak: {name} (PID {pid}) exited at about {at:.1f} s, "
                "and the soak did not kill it"
            )
        self._alive = alive

    def set_mode(self, mode: str) -> None:
        # The window opens before the switch and closes once it took effect.
        start = self.clock.now()
        self.upstreams.set_mode(mode)
        self.phases[-1].end = self.clock.now()
        self.phases.append(Phase(mode, start))

    def end(self) -> None:
        """Mark the current phase as lasting until the load stopped."""
        self.phases[-1].end = float("inf")

    def kill(self) -> bool:
        """SIGKILL one ready worker (in turn); False if one was not ready."""
        workers = self._learn_names()
        if len(workers) < 2 or not all(w.ready for w in workers):
            return False
        victim = sorted(workers, key=lambda w: w.name)[self.turn % len(workers)]
        # Only a worker process of this router: never a reused PID.
        if victim.pid not in self.router.worker_pids():
            return False
        self.turn += 1
        at = self.clock.now()
        os.kill(victim.pid, signal.SIGKILL)
        self.kills.append(Kill(at, victim.name, victim.pid))
        return True

    def watch_restart(self, pending: list[Kill]) -> None:
        """Note when each gone worker's replacement is ready (both workers
        ready, neither of them the one gone)."""
        with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
            workers = self._learn_names()
            ready = len(workers) == 2 and all(w.ready for w in workers)
            for kill in pending:
                if ready and kill.pid not in {w.pid for w in workers}:
                    kill.ready_again = self.clock.now()

    def fault_windows(self) -> list[Phase]:
        return [p for p in self.phases if p.mode != "healthy"]


# --------------------------------------------------------------------------
# Sampling


@dataclass
class Sample:
    """What the sampler saw at time C{t}."""

    t: float
    phase: str
    router_rss_kib: int
    workers_rss_kib: int
    workers: int
    router_fds: int
    router_threads: int
    router_cpu_pct: float
    workers_cpu_pct: float
    upstream_cpu_pct: float
    client_cpu_pct: float
    requests: int
    failures: int


TICKS = os.sysconf("SC_CLK_TCK")


def proc_status(pid: int) -> dict[str, str]:
    """The fields of C{/proc/PID/status} (empty if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {
        name: value.strip()
        for name, _, value in (line.partition(":") for line in text.splitlines())
    }


def rss_kib(pid: int) -> int:
    return int(proc_status(pid).get("VmRSS", "0 kB").split()[0])


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of C{pid} so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class Sampler:
    """Samples the processes' memory and CPU, and the load's progress."""

    def __init__(
        self,
        router: Router,
        upstreams: Upstreams,
        clock: Clock,
        outcomes: list[Outcome],
    ) -> None:
        self.router = router
        self.upstreams = upstreams
        self.clock = clock
        self.outcomes = outcomes
        self.samples: list[Sample] = []
        self._last_t = 0.0
        self._cpu: dict[int, float] = {}

    def _cpu_pct(self, pids: Sequence[int], elapsed: float) -> float:
        """CPU of C{pids} since the last sample, in % of one core."""
        used = 0.0
        for pid in pids:
            now = cpu_seconds(pid)
            used += now - self._cpu.get(pid, 0.0)
            self._cpu[pid] = now
        return 100.0 * used / elapsed if elapsed > 0 else 0.0

    def sample(self, keep: bool = True) -> Sample:
        """Take a sample; add it to L{samples} if C{keep}."""
        t = self.clock.now()
        elapsed = t - self._last_t
        self._last_t = t
        assert self.router.pid is not None
        pid = self.router.pid
        workers = self.router.worker_pids()
        status = proc_status(pid)
        outcomes = list(self.outcomes)
        own = os.times()
        own_cpu = own.user + own.system
        client_cpu = 100.0 * (own_cpu - self._cpu.get(-1, 0.0)) / max(elapsed, 1e-9)
        self._cpu[-1] = own_cpu
        sample = Sample(
            t=t,
            phase=self.upstreams.mode,
            router_rss_kib=int(status.get("VmRSS", "0 kB").split()[0]),
            workers_rss_kib=sum(rss_kib(w) for w in workers),
            workers=len(workers),
            router_fds=open_fds(pid),
            router_threads=int(status.get("Threads", "0")),
            router_cpu_pct=self._cpu_pct([pid], elapsed),
            workers_cpu_pct=self._cpu_pct(workers, elapsed),
            upstream_cpu_pct=self._cpu_pct([self.upstreams.process.pid], elapsed),
            client_cpu_pct=client_cpu,
            requests=len(outcomes),
            failures=sum(o.error is not None for o in outcomes),
        )
        if not self.samples:
            # Nothing to compare with yet: the CPU figures would be totals.
            sample.router_cpu_pct = sample.workers_cpu_pct = 0.0
            sample.upstream_cpu_pct = sample.client_cpu_pct = 0.0
        if keep:
            self.samples.append(sample)
        return sample


CSV_FIELDS = (
    "t_s",
    "phase",
    "router_rss_mib",
    "workers_rss_mib",
    "workers",
    "router_fds",
    "router_threads",
    "router_cpu_pct",
    "workers_cpu_pct",
    "upstream_cpu_pct",
    "client_cpu_pct",
    "requests",
    "req_per_s",
    "failures",
)


def write_csv(path: Path, samples: Sequence[Sample]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_FIELDS)
        previous: Sample | None = None
        for s in samples:
            rate = 0.0
            if previous is not None and s.t > previous.t:
                rate = (s.requests - previous.requests) / (s.t - previous.t)
            writer.writerow(
                (
                    f"{s.t:.1f}",
                    s.phase,
                    f"{s.router_rss_kib / 1024:.2f}",
                    f"{s.workers_rss_kib / 1024:.2f}",
                    s.workers,
                    s.router_fds,
                    s.router_threads,
                    f"{s.router_cpu_pct:.1f}",
                    f"{s.workers_cpu_pct:.1f}",
                    f"{s.upstream_cpu_pct:.1f}",
                    f"{s.client_cpu_pct:.1f}",
                    s.requests,
                    f"{rate:.1f}",
                    s.failures,
                )
            )
            previous = s


# --------------------------------------------------------------------------
# Judging and reporting


@dataclass
class Judged:
    """The outcomes sorted into expected and unexpected failures."""

    successes: dict[Route, list[float]] = field(default_factory=dict)
    requests: Counter[Route] = field(default_factory=Counter)
    expected: Counter[Route] = field(default_factory=Counter)
    unexpected: list[Outcome] = field(default_factory=list)
    #: Expected failures by where they happened and what they were.
    why: Counter[str] = field(default_factory=Counter)
    #: For failed requests sent after a kill: how long after it they started.
    after_kill: list[float] = field(default_factory=list)


def overlaps(outcome: Outcome, start: float, end: float) -> bool:
    return outcome.start <= end and outcome.end >= start


def judge(outcomes: Sequence[Outcome], faults: Faults) -> Judged:
    """Sort each failure into expected (overlapping a fault on its own
    route) or unexpected."""
    judged = Judged(successes={route: [] for route in ROUTE_LIST})
    windows = faults.fault_windows()
    for o in outcomes:
        judged.requests[o.route] += 1
        if o.error is None:
            if "slow" not in o.probe:  # a sleep on purpose is not latency
                judged.successes[o.route].append(o.end - o.start)
            continue
        kind = o.error.split(" (")[0]
        if o.route is FAULTED:
            phase = next((p for p in windows if overlaps(o, p.start, p.end)), None)
            if phase is not None:
                judged.expected[o.route] += 1
                judged.why[f"{o.route.prefix} during {phase.mode}: {kind}"] += 1
                continue
        if o.route is WORKERS:
            kill = next((k for k in faults.kills if overlaps(o, *k.window())), None)
            if kill is not None:
                when = "in flight at the kill" if o.start <= kill.at else "sent after"
                cause = f"during kill, {when}"
                if not kill.ours:
                    cause = "during a worker exit the soak did not cause"
                elif o.start > kill.at:
                    judged.after_kill.append(o.start - kill.at)
                judged.expected[o.route] += 1
                judged.why[f"{o.route.prefix} {cause}: {kind}"] += 1
                continue
        judged.unexpected.append(o)
    return judged


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile of sorted C{values} (0 if empty)."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, round(share * len(values)) - 1))]


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def route_table(judged: Judged) -> list[str]:
    lines = [
        f"{'route':<9} {'what':<26} {'requests':>8} {'ok':>8} "
        f"{'expected':>8} {'unexpected':>10} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7}"
    ]
    for route in ROUTE_LIST:
        times = sorted(judged.successes[route])
        unexpected = sum(o.route is route for o in judged.unexpected)
        failed = judged.expected[route] + unexpected
        lines.append(
            f"{route.prefix:<9} {route.kind:<26} {judged.requests[route]:>8} "
            f"{judged.requests[route] - failed:>8} {judged.expected[route]:>8} "
            f"{unexpected:>10} "
            f"{1000 * percentile(times, 0.50):>7.1f} "
            f"{1000 * percentile(times, 0.99):>7.1f} "
            f"{1000 * (times[-1] if times else 0):>7.1f}"
        )
    return lines


def curve(
    samples: Sequence[Sample],
    outcomes: Sequence[Outcome],
    faults: Faults,
    step: float,
) -> list[str]:
    """One line per C{step} seconds: memory, load and failures."""
    lines = [
        f"{'t (s)':>5} {'router MiB':>10} {'workers MiB':>11} {'fds':>4} "
        f"{'thr':>3} {'req/s':>5} {'router CPU':>10} {'workers CPU':>11} "
        f"{'failed':>6}  faulted upstream"
    ]
    ends = sorted(o.end for o in outcomes if o.error is not None)
    previous = samples[0]
    boundary = step
    since: list[Sample] = []
    for s in samples[1:]:
        since.append(s)
        if s.t < boundary and s is not samples[-1]:
            continue
        rate = (s.requests - previous.requests) / max(s.t - previous.t, 1e-9)
        failed = sum(1 for t in ends if previous.t < t <= s.t)
        modes = {
            p.mode for p in faults.phases if p.start <= s.t and p.end >= previous.t
        }
        lines.append(
            f"{s.t:>5.0f} {mib(s.router_rss_kib):>10} {mib(s.workers_rss_kib):>11} "
            f"{s.router_fds:>4} {s.router_threads:>3} {rate:>5.0f} "
            f"{statistics.fmean(x.router_cpu_pct for x in since):>9.0f}% "
            f"{statistics.fmean(x.workers_cpu_pct for x in since):>10.0f}% "
            f"{failed:>6}  {', '.join(m for m in _MODE_ORDER if m in modes)}"
        )
        previous, since = s, []
        while boundary <= s.t:
            boundary += step
    return lines


_MODE_ORDER = ("healthy", "stall-head", "stall-body", "refuse")


@dataclass(frozen=True)
class Flatness:
    """The router's RSS in the middle and last thirds of the soak."""

    middle_kib: float
    last_kib: float
    slope_kib_per_min: float
    tolerance: float

    @property
    def growth(self) -> float:
        return (self.last_kib - self.middle_kib) / self.middle_kib

    @property
    def flat(self) -> bool:
        return self.growth <= self.tolerance


def flatness(samples: Sequence[Sample], duration: float, tolerance: float) -> Flatness:
    middle = [s for s in samples if duration / 3 <= s.t < 2 * duration / 3]
    last = [s for s in samples if s.t >= 2 * duration / 3]
    if not middle or not last:
        raise ValueError("too few samples for the thirds")
    after = middle + last
    slope = 0.0
    if len(after) > 1:
        slope = statistics.linear_regression(
            [s.t / 60 for s in after], [float(s.router_rss_kib) for s in after]
        ).slope
    return Flatness(
        statistics.fmean(s.router_rss_kib for s in middle),
        statistics.fmean(s.router_rss_kib for s in last),
        slope,
        tolerance,
    )


_LOG_NUMBERS = re.compile(r"\d+(\.\d+)?")
_LOG_PREFIX = re.compile(r"^\S+ \[[^\]]*\] ")


def log_summary(logfile: Path, config: str) -> tuple[list[str], int]:
    """The router's log, summarized: counts of each kind of line (numbers
    folded, the routes file's path shortened); and the number of
    tracebacks."""
    try:
        lines = logfile.read_text(errors="replace").splitlines()
    except OSError:
        return ["(no log)"], 0
    tracebacks = sum("Traceback (most recent call last)" in line for line in lines)
    kinds: Counter[str] = Counter()
    for line in lines:
        text = _LOG_PREFIX.sub("", line).replace(config, "routes.yaml")
        kinds[_LOG_NUMBERS.sub("N", text)[:120]] += 1
    top = [f"{n:>6} x {text}" for text, n in kinds.most_common(14)]
    return [f"{len(lines)} lines, {tracebacks} tracebacks", *top], tracebacks


@dataclass
class Soak:
    """Everything one soak run gathered."""

    args: argparse.Namespace
    clock: Clock
    outcomes: list[Outcome] = field(default_factory=list)
    vanished: Vanished = field(default_factory=Vanished)
    faults: Faults | None = None
    sampler: Sampler | None = None
    router: Router | None = None
    elapsed: float = 0.0
    router_died: bool = False
    #: The commit and changed files the router ran.
    code: str = ""
    #: A sample taken once the clients stopped and the router idled.
    idle: Sample | None = None


def report(soak: Soak, out: Path) -> tuple[str, bool]:
    """The printed report and whether the soak passed."""
    args = soak.args
    faults, sampler = soak.faults, soak.sampler
    assert faults is not None and sampler is not None
    judged = judge(soak.outcomes, faults)
    samples = sampler.samples
    phases = " / ".join(f"{m} {s:.0f} s" for m, s in PHASES)
    lines = [
        f"txrouter soak: {soak.elapsed:.0f} s of load; output in {out}",
        f"code: {soak.code}",
        f"load: {args.clients} clients per route x 4 routes = "
        f"{4 * args.clients} connections, pause {1000 * args.pause:.0f} ms "
        f"(+-50 %) between requests, {CLOSE_SHARE:.0%} with Connection: close; "
        f"{args.vanishers} vanishing clients, pause "
        f"{1000 * args.vanish_pause:.0f} ms",
        "faults: "
        + (
            f"kill -9 of a /wiki/ worker every {args.kill_every:.0f} s"
            if args.kill_every > 0
            else "no worker kills"
        )
        + "; "
        f"/flaky/ upstream cycles {phases} (route timeout {FAULTED_TIMEOUT} s)",
        "",
        *route_table(judged),
        "",
        "ok = right status and body; expected = failed while overlapping a fault "
        "of its own route; latencies of the ok requests (not /wiki/slow/, which "
        "sleeps 0.2 s on purpose)",
        *failure_lines("requests", judged),
        "",
        *fault_lines(faults),
        *vanish_lines(soak.vanished, faults),
        "",
        f"curve, one line per {curve_step(args.duration):.0f} s (CPU in % of one "
        f"core; soak.csv has every {args.sample_every:.0f} s sample):",
        *(
            "  " + line
            for line in curve(samples, soak.outcomes, faults, curve_step(args.duration))
        ),
    ]
    if soak.idle is not None:
        lines.append(
            f"  {soak.idle.t - soak.elapsed:.0f} s after the load stopped: router "
            f"{mib(soak.idle.router_rss_kib)} MiB, {soak.idle.router_fds} fds, "
            f"{soak.idle.router_threads} threads (before the load: "
            f"{mib(samples[0].router_rss_kib)} MiB, {samples[0].router_fds} fds, "
            f"{samples[0].router_threads} threads)"
        )
    lines.append("")
    reasons = []
    try:
        flat = flatness(samples, soak.elapsed, args.rss_tolerance)
    except ValueError as e:
        lines.append(f"router RSS: {e}")
        reasons.append("RSS not judged")
    else:
        lines.append(
            f"router RSS: start {mib(samples[0].router_rss_kib)} MiB, middle third "
            f"mean {mib(flat.middle_kib)} MiB, last third mean "
            f"{mib(flat.last_kib)} MiB: {flat.growth:+.1%} (tolerance "
            f"{flat.tolerance:.0%}); max {mib(max(s.router_rss_kib for s in samples))}"
            f" MiB; slope over the last two thirds "
            f"{flat.slope_kib_per_min / 1024:+.3f} MiB/min: "
            + ("flat" if flat.flat else "GREW")
        )
        if not flat.flat:
            reasons.append(f"router RSS grew {flat.growth:+.1%}")
    workers_rss = [s.workers_rss_kib for s in samples if s.workers == 2]
    if workers_rss:
        lines.append(
            f"workers' RSS (two workers, together; each kill restarts one): "
            f"min {mib(min(workers_rss))} MiB, max {mib(max(workers_rss))} MiB, "
            f"last {mib(workers_rss[-1])} MiB"
        )
    config = str(soak.router.config) if soak.router is not None else "routes.yaml"
    log_lines, tracebacks = log_summary(out / "twistd.log", config)
    lines += ["", "router log (twistd.log): " + log_lines[0]]
    lines += ["  " + line for line in log_lines[1:]]
    lines.append("")
    unexpected = len(judged.unexpected)
    if unexpected:
        reasons.append(f"{unexpected} unexpected request failures")
    vanish_unexpected = judge(soak.vanished.outcomes, faults).unexpected
    if vanish_unexpected:
        reasons.append(f"{len(vanish_unexpected)} vanishing clients broken early")
    if faults.others():
        reasons.append(
            f"{len(faults.others())} worker exits the soak did not cause (a crash, "
            "or another process killed them: see the log)"
        )
    if soak.router_died:
        reasons.append("the router died")
    if tracebacks:
        lines.append(f"note: {tracebacks} tracebacks in the router log")
    lines.append(
        "verdict: " + ("PASS" if not reasons else "FAIL: " + "; ".join(reasons))
    )
    return "\n".join(lines), not reasons


def curve_step(duration: float) -> float:
    """One line of the text curve per minute, or per 10 s in short runs."""
    return 60.0 if duration >= 300 else 10.0


def failure_lines(what: str, judged: Judged) -> list[str]:
    """The expected failures by cause, and every kind of unexpected one."""
    lines = []
    if judged.why:
        lines.append(f"expected failures of {what}, by fault and outcome:")
        lines += [f"  {n:>6} x {why}" for why, n in sorted(judged.why.items())]
    if judged.after_kill:
        lines.append(
            f"  (those sent after a kill started {1000 * min(judged.after_kill):.0f}"
            f"-{1000 * max(judged.after_kill):.0f} ms after the SIGKILL)"
        )
    if not judged.unexpected:
        lines.append(f"unexpected failures of {what}: none")
        return lines
    kinds = Counter(f"{o.route.prefix} {o.probe}: {o.error}" for o in judged.unexpected)
    lines.append(f"UNEXPECTED failures of {what}: {len(judged.unexpected)}")
    lines += [f"  {n:>6} x {what}" for what, n in kinds.most_common(20)]
    lines += [
        f"  at t={o.start:.2f}-{o.end:.2f} s: {o.route.prefix} {o.probe}: {o.error}"
        for o in judged.unexpected[:8]
    ]
    return lines


def fault_lines(faults: Faults) -> list[str]:
    """What was done to the worker route and the faulted upstream."""
    ours = [k for k in faults.kills if k.ours]
    restarts = [k.ready_again - k.at for k in ours if k.ready_again is not None]
    ready = (
        f"median {statistics.median(restarts):.1f} s, max {max(restarts):.1f} s"
        if restarts
        else "-"
    )
    windows = faults.fault_windows()
    modes = Counter(p.mode for p in windows)
    others = [
        f"WORKER EXIT the soak did not cause: {k.name} (PID {k.pid}) at about "
        f"{k.at:.1f} s, both workers ready again "
        + (f"{k.ready_again - k.at:.1f} s later" if k.ready_again else "never")
        for k in faults.others()
    ]
    return [
        f"worker kills: {len(ours)} (put off while a worker restarted: "
        f"{faults.deferred}); both workers ready again after {ready}"
        f" ({len(ours) - len(restarts)} not by the end)",
        *others,
        f"faulted upstream: {len(windows)} fault phases ("
        + ", ".join(f"{modes[m]} {m}" for m in _MODE_ORDER[1:])
        + ")",
    ]


def vanish_lines(vanished: Vanished, faults: Faults) -> list[str]:
    """What the vanishing clients did, and how many the router broke first."""
    judged = judge(vanished.outcomes, faults)
    lines = [
        f"vanishing clients: {len(vanished.outcomes)} connections ("
        + ", ".join(f"{k} {vanished.kinds[k]}" for k in VANISH_KINDS)
        + f"), {vanished.resets} of them left with a reset"
    ]
    return lines + ["  " + line for line in failure_lines("vanishing clients", judged)]


# --------------------------------------------------------------------------
# Running


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Soak txrouter under mixed load and faults (bench/README.md)."
    )
    parser.add_argument(
        "--duration", type=int, default=600, help="seconds of load (600)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for soak.csv, failures.csv, faults.csv, twistd.log, report.txt "
        "(default: a new temporary folder)",
    )
    parser.add_argument(
        "--clients", type=int, default=3, help="load clients per route (3)"
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=0.02,
        help="seconds a load client waits between requests, +-50%% (0.02)",
    )
    parser.add_argument(
        "--vanishers", type=int, default=2, help="vanishing clients (2)"
    )
    parser.add_argument(
        "--vanish-pause",
        type=float,
        default=0.2,
        help="seconds a vanishing client waits between connections (0.2)",
    )
    parser.add_argument(
        "--kill-every",
        type=float,
        default=30.0,
        help="seconds between two worker kills, 0 for none (30)",
    )
    parser.add_argument(
        "--sample-every", type=float, default=5.0, help="seconds between samples (5)"
    )
    parser.add_argument(
        "--rss-tolerance",
        type=float,
        default=0.10,
        help="largest growth of the router's mean RSS from the middle to the "
        "last third (0.10)",
    )
    args = parser.parse_args(argv)
    if args.duration < 30:
        parser.error("--duration must be at least 30 s (three thirds of samples)")
    if args.clients < 1 or args.pause < 0 or args.vanishers < 0:
        parser.error("need --clients >= 1, --pause >= 0, --vanishers >= 0")
    return args


def stop_on_sigterm() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so that everything gets stopped."""

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)


def run(soak: Soak, tmp: Path, steps: contextlib.ExitStack, out: Path) -> None:
    """Start everything, run the load and the faults for the duration; the
    processes are stopped when C{steps} closes, the router's log copied to
    C{out}."""
    args = soak.args
    soak.code = code_version()
    progress(f"soak: code {soak.code}; preparing a copy of the example sites")
    sites = prepare_sites(tmp)
    upstreams = Upstreams(tmp / "upstream.log")
    steps.callback(upstreams.stop)
    router = soak.router = Router(tmp, sites, upstreams)
    steps.callback(_keep_log, router.logfile, out / "twistd.log")
    steps.callback(router.stop)
    router.start()
    progress(f"soak: twistd txrouter PID {router.pid} on 127.0.0.1:{router.port}")
    wait_ready(router)
    progress(f"soak: ready; {args.duration} s of load and faults")
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def stop_clients() -> None:
        stop.set()
        for thread in threads:
            thread.join(CLIENT_TIMEOUT + 5)

    steps.callback(stop_clients)
    clock = soak.clock = Clock()
    faults = soak.faults = Faults(router, upstreams, clock, args.kill_every)
    sampler = soak.sampler = Sampler(router, upstreams, clock, soak.outcomes)
    sampler.sample()
    lock = threading.Lock()
    seed = 0
    for route in ROUTE_LIST:
        for _ in range(args.clients):
            seed += 1
            threads.append(
                LoadClient(
                    route, router.port, clock, stop, soak.outcomes, args.pause, seed
                )
            )
    for _ in range(args.vanishers):
        seed += 1
        threads.append(
            VanishingClient(
                router.port, stop, clock, soak.vanished, lock, args.vanish_pause, seed
            )
        )
    for thread in threads:
        thread.start()
    next_sample = args.sample_every
    next_progress = 30.0
    try:
        while clock.now() < args.duration:
            faults.tick()
            if clock.now() >= next_sample:
                s = sampler.sample()
                next_sample += args.sample_every
                if not router.alive():
                    soak.router_died = True
                    progress(f"soak: the router died at {s.t:.0f} s")
                    break
                if s.t >= next_progress:
                    next_progress += 30.0
                    progress(
                        f"soak: {s.t:.0f} s, router {mib(s.router_rss_kib)} MiB, "
                        f"{s.requests} requests, {s.failures} failed, "
                        f"{len(faults.kills)} kills, upstream {s.phase}"
                    )
            time.sleep(0.05)
        else:
            # The curve ends with the load, not with the clients' last requests.
            if clock.now() - sampler.samples[-1].t > 1.0:
                sampler.sample()
    finally:
        soak.elapsed = clock.now()
        faults.end()
        stop_clients()
    if not router.alive():
        soak.router_died = True
        return
    time.sleep(IDLE_WAIT)
    soak.idle = sampler.sample(keep=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="txrouter-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    stop_on_sigterm()
    soak = Soak(args, Clock())
    status = 0
    steps = contextlib.ExitStack()
    tmp = Path(tempfile.mkdtemp(prefix="txrouter-soak-run-"))
    steps.callback(shutil.rmtree, tmp, True)
    try:
        run(soak, tmp, steps, out)
    except KeyboardInterrupt:
        progress("soak: interrupted; stopping everything, the report so far follows")
        status = 130
    except (SoakFailed, OSError, subprocess.SubprocessError) as e:
        progress(f"soak: FAILED to run: {e}")
        status = 2
    finally:
        # Stopping must finish even if Ctrl-C is pressed again.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            steps.close()
        finally:
            signal.signal(signal.SIGINT, previous)
    if soak.sampler is None or len(soak.sampler.samples) < 2:
        return status or 2
    write_csv(out / "soak.csv", soak.sampler.samples)
    write_failures(out / "failures.csv", soak.outcomes)
    if soak.faults is not None:
        write_faults(out / "faults.csv", soak.faults)
    text, passed = report(soak, out)
    (out / "report.txt").write_text(text + "\n")
    print(text)
    return status or (0 if passed else 1)


def _keep_log(log: Path, copy: Path) -> None:
    if log.exists():
        shutil.copy(log, copy)


def write_faults(path: Path, faults: Faults) -> None:
    """The faults' timeline: each mode of the faulted upstream, each worker
    gone (and when both workers were ready again)."""
    rows = [(p.start, p.end, "upstream", p.mode, "") for p in faults.phases]
    rows += [
        (
            k.at,
            k.ready_again if k.ready_again is not None else float("inf"),
            "kill" if k.ours else "worker exit the soak did not cause",
            k.name,
            str(k.pid),
        )
        for k in faults.kills
    ]
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(("start_s", "end_s", "fault", "what", "pid"))
        for start, end, fault, what, pid in sorted(rows):
            writer.writerow((f"{start:.3f}", f"{end:.3f}", fault, what, pid))


def write_failures(path: Path, outcomes: Sequence[Outcome]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(("start_s", "end_s", "route", "probe", "error"))
        for o in outcomes:
            if o.error is not None:
                writer.writerow(
                    (f"{o.start:.3f}", f"{o.end:.3f}", o.route.prefix, o.probe, o.error)
                )


if __name__ == "__main__":
    sys.exit(main())
