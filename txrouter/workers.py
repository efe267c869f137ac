"""
Worker processes, seen from the router: L{WorkerMonitor} starts, restarts
and stops them; a L{WorkerSet} holds one route's workers as upstreams of
the proxy engine and routes to a worker only once it answers.

Each worker (L{txrouter.worker}) serves one route's application on a UNIX
socket in the router's private runtime folder. A worker that dies is
restarted, after a delay that doubles while it keeps dying young (a project
whose settings fail to import never spins the CPU). While none of a route's
workers is ready, the route answers 503 with C{Retry-After}.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as _Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.runner.procmon import ProcessMonitor

from txrouter.routespec import Origin, Threads
from txrouter.upstream import Upstream, UpstreamGroup

__all__ = ["AppRoute", "WorkerMonitor", "WorkerSet"]

_log = Logger()

#: Seconds between two attempts to reach a starting worker's socket.
PROBE_INTERVAL = 0.1


class WorkerMonitor(ProcessMonitor):
    """
    Twisted's process monitor, telling L{WorkerSet}s when their processes
    start and end, and whose C{stopService} waits until every worker has
    exited (SIGTERM, then SIGKILL after C{killTime}).
    """

    # A worker that dies within this many seconds of starting is restarted
    # after a delay that doubles each time, up to maxRestartDelay.
    threshold = 10
    minRestartDelay = 1
    maxRestartDelay = 30

    def __init__(self, reactor: Any, kill_time: float) -> None:
        super().__init__(reactor)
        self.killTime = kill_time  # type: ignore[assignment]
        self.watchers: dict[str, Callable[[str, bool], None]] = {}
        self._all_exited: list[Deferred[None]] = []

    def startProcess(self, name: str) -> None:
        started = name not in self.protocols
        super().startProcess(name)
        if started and name in self.protocols and name in self.watchers:
            self.watchers[name](name, True)

    def _monitoredProcessExited(self, name: str, reason: Failure | None = None) -> None:
        super()._monitoredProcessExited(name, reason)
        if name in self.watchers:
            self.watchers[name](name, False)
        if not self.protocols:
            waiting, self._all_exited = self._all_exited, []
            for d in waiting:
                d.callback(None)

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        super().stopService()
        if not self.protocols:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._all_exited.append(done)
        return done


class AppRoute(Protocol):
    """
    What a worker set needs of its route (a C{django:} or C{wsgi:} one).
    """

    @property
    def prefix(self) -> str: ...
    @property
    def origin(self) -> Origin: ...
    @property
    def workers(self) -> int: ...
    @property
    def threads(self) -> Threads: ...
    @property
    def env(self) -> tuple[tuple[str, str], ...]: ...


class _Probe(_Protocol):
    def connectionMade(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


class _ProbeFactory(Factory):
    # A starting worker is probed every PROBE_INTERVAL: no log line each time.
    noisy = False
    protocol = _Probe


class WorkerSet:
    """
    The worker processes of one route, as an L{UpstreamGroup}.
    """

    def __init__(
        self,
        reactor: Any,
        monitor: WorkerMonitor,
        route: AppRoute,
        app_args: list[str],
        cwd: str,
        runtime_dir: str,
        socket_stem: str,
        drain_timeout: float,
    ) -> None:
        """
        @param app_args: what C{python -m txrouter.worker serve} is to load
            (C{--django DIR --settings MOD}, or C{--wsgi MOD:ATTR}).
        @param cwd: the workers' working directory.
        @param socket_stem: the start of the workers' socket names, unique
            to the route.
        """
        self._reactor = reactor
        self._monitor = monitor
        self.route = route
        self.token = secrets.token_hex(16).encode("ascii")
        env = dict(os.environ)
        env.update(route.env)
        env["TXROUTER_WORKER_TOKEN"] = self.token.decode("ascii")
        self._by_name: dict[str, Upstream] = {}
        self._runs: dict[str, int] = {}
        members = []
        for number in range(1, route.workers + 1):
            socket = os.path.join(runtime_dir, f"{socket_stem}-{number}.sock")
            name = f"{route.origin.where} worker {number}"
            upstream = Upstream(
                name,
                UNIXClientEndpoint(reactor, socket, timeout=5),
                b"localhost",
                route.prefix.encode("utf-8"),
                key=("txrouter-worker", socket),
            )
            upstream.ready = False
            members.append(upstream)
            self._by_name[name] = upstream
            args = [
                sys.executable,
                "-m",
                "txrouter.worker",
                "serve",
                "--socket",
                socket,
                "--prefix",
                route.prefix,
                "--threads",
                f"{route.threads.min}:{route.threads.max}",
                "--drain-timeout",
                str(drain_timeout),
                "--processes",
                str(route.workers),
                *app_args,
            ]
            monitor.addProcess(name, args, env=env, cwd=cwd)
            monitor.watchers[name] = self._changed
        self.group = UpstreamGroup(reactor, members)

    def _changed(self, name: str, started: bool) -> None:
        upstream = self._by_name[name]
        upstream.ready = False
        # Each start gets a number, so that a probe of an earlier run of
        # the same worker stops by itself.
        self._runs[name] = self._runs.get(name, 0) + 1
        if started:
            upstream.down_until = 0.0
            self._probe(name, self._runs[name])
        elif self._monitor.running:
            _log.warn("{name} exited; it will be restarted", name=name)

    def _probe(self, name: str, run: int) -> None:
        """
        Try the worker's socket until it accepts; then route to it.
        """
        if self._runs.get(name) != run:
            return
        upstream = self._by_name[name]

        def ready(_: object) -> None:
            if self._runs.get(name) == run:
                upstream.ready = True
                _log.info("{name} is ready", name=name)

        def retry(_: Failure) -> None:
            self._reactor.callLater(PROBE_INTERVAL, self._probe, name, run)

        d = upstream.endpoint.connect(_ProbeFactory())
        d.addCallbacks(ready, retry)
