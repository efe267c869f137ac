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
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as _Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.runner.procmon import ProcessMonitor

from txrouter.djangoproject import loaded_settings
from txrouter.routespec import Origin, Threads
from txrouter.upstream import STUCK_AFTER, Upstream, UpstreamGroup

__all__ = ["AppRoute", "WorkerMonitor", "WorkerSet", "WorkerStartError"]

_log = Logger()

_SETTINGS = "DJANGO_SETTINGS_MODULE"

#: Seconds between two attempts to reach a starting worker's socket.
PROBE_INTERVAL = 0.1

#: How many of a worker's last stderr lines are kept, to say why it failed.
_KEPT_LINES = 20


class WorkerStartError(Exception):
    """
    New workers did not become ready; the message says which and why, with
    the worker's own last lines of output.
    """


class _OutputLogger(Logger):
    """
    The monitor's logger: forwards each line a worker prints, and keeps the
    last few of each worker's stderr.
    """

    def __init__(self) -> None:
        super().__init__(namespace="txrouter.workers")
        self.last_lines: dict[str, deque[str]] = {}

    def emit(self, level: Any, format: str | None = None, **kwargs: Any) -> None:
        if "tag" in kwargs:
            line = str(kwargs.get("line", "")).rstrip()
            if not line:
                return  # a worker's blank line says nothing in the log
            if kwargs.get("stream") == "stderr":
                kept = self.last_lines.setdefault(
                    kwargs["tag"], deque(maxlen=_KEPT_LINES)
                )
                kept.append(line)
        super().emit(level, format, **kwargs)


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
        self._exited: dict[str, list[Deferred[None]]] = {}
        self.log = self.output = _OutputLogger()

    def last_lines(self, name: str) -> list[str]:
        """
        The last lines worker C{name} wrote to its stderr.
        """
        return list(self.output.last_lines.get(name, ()))

    def retire(self, name: str) -> Deferred[None]:
        """
        Stop worker C{name} for good (SIGTERM, SIGKILL after C{killTime}),
        with no restart, and forget it.

        @return: fires once the process has exited.
        """
        restart = self.restart.pop(name, None)
        if restart is not None and restart.active():
            restart.cancel()
        self.watchers.pop(name, None)
        self.output.last_lines.pop(name, None)
        if name in self._processes:
            self.removeProcess(name)
        if name not in self.protocols:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._exited.setdefault(name, []).append(done)
        return done

    def startProcess(self, name: str) -> None:
        started = name not in self.protocols
        if started and name in self._processes:
            # Known only now: twistd may have forked since the tree was built.
            self._processes[name].env["TXROUTER_ROUTER_PID"] = str(os.getpid())
        super().startProcess(name)
        if started and name in self.protocols and name in self.watchers:
            self.watchers[name](name, True)

    def _monitoredProcessExited(self, name: str, reason: Failure | None = None) -> None:
        super()._monitoredProcessExited(name, reason)
        if name in self.watchers:
            self.watchers[name](name, False)
        for d in self._exited.pop(name, []):
            d.callback(None)
        if not self.protocols:
            waiting, self._all_exited = self._all_exited, []
            for d in waiting:
                d.callback(None)

    #: Seconds left before the router's stop deadline, if it has one: the
    #: requests to workers have drained by now, so a worker that has not
    #: exited by then is killed.
    time_left: Callable[[], float] | None = None

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        if self.time_left is not None:
            self.killTime = self.time_left()  # type: ignore[assignment]
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
    @property
    def timeout(self) -> float: ...


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
        generation: int = 1,
    ) -> None:
        """
        @param app_args: what C{python -m txrouter.worker serve} is to load
            (C{--django DIR --settings MOD}, or C{--wsgi MOD:ATTR}).
        @param cwd: the workers' working directory.
        @param socket_stem: the start of the workers' socket names, unique
            to the route and to this router.
        @param generation: the route table the set is made for; sets made
            later for the same route (a reload, a restart) get other
            process names and sockets, so that both run side by side.
        """
        self._reactor = reactor
        self._monitor = monitor
        self.route = route
        self.token = secrets.token_hex(16).encode("ascii")
        env = dict(os.environ)
        router_project = loaded_settings()
        if router_project is not None and env.get(_SETTINGS) == router_project:
            # The router's own Django project: a worker's application (an
            # asgi.py's setdefault) must not take it for its own.
            del env[_SETTINGS]
        env.update(route.env)
        env["TXROUTER_WORKER_TOKEN"] = self.token.decode("ascii")
        self._by_name: dict[str, Upstream] = {}
        self._runs: dict[str, int] = {}
        self._waiting: list[Deferred[None]] = []
        self.generation = generation
        members = []
        for number in range(1, route.workers + 1):
            socket = os.path.join(
                runtime_dir, f"{socket_stem}g{generation}-{number}.sock"
            )
            name = f"{route.origin.where} worker {number}"
            if generation > 1:
                name += f" (table {generation})"
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
            # Watched first: a running monitor starts the process at once.
            monitor.watchers[name] = self._changed
            monitor.addProcess(name, args, env=env, cwd=cwd)
        self.group = UpstreamGroup(reactor, members, self._stuck)

    @property
    def names(self) -> list[str]:
        """
        The process names of the set's workers, in order.
        """
        return list(self._by_name)

    def pids(self) -> dict[str, int | None]:
        """
        Each worker's process ID, L{None} while it is not running.
        """
        found: dict[str, int | None] = {}
        for name in self._by_name:
            protocol = self._monitor.protocols.get(name)
            transport = getattr(protocol, "transport", None)
            found[name] = getattr(transport, "pid", None)
        return found

    def all_ready(self) -> bool:
        """
        Whether every worker of the set answers.
        """
        return all(upstream.ready for upstream in self._by_name.values())

    def in_flight(self) -> int:
        """
        Requests the router has sent to the set and not seen answered.
        """
        return sum(upstream.in_flight for upstream in self._by_name.values())

    def ready(self) -> Deferred[None]:
        """
        Fires once every worker answers; fails with L{WorkerStartError} if
        one exits before it does.
        """
        if self.all_ready():
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def retire(self) -> Deferred[None]:
        """
        Stop the set's workers for good; fires once all have exited.
        """
        self._runs.clear()  # stops the probes
        self._fail_waiting("the workers were stopped")
        exits = [self._monitor.retire(name) for name in self._by_name]
        return DeferredList(exits, consumeErrors=True).addCallback(lambda _: None)

    def _stuck(self, upstream: Upstream) -> None:
        """
        A worker keeps leaving requests unanswered: its threads are likely
        all stuck, so take it out of the rotation and restart it.
        """
        name = upstream.name
        if name not in self._monitor.protocols:
            return
        _log.warn(
            "{name} left {count} requests in a row unanswered within the "
            "route's timeout; restarting it",
            name=name,
            count=STUCK_AFTER,
        )
        upstream.ready = False
        self._monitor.stopProcess(name)

    def _fail_waiting(self, why: str) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(WorkerStartError(why))

    def _changed(self, name: str, started: bool) -> None:
        upstream = self._by_name[name]
        upstream.ready = False
        # Each start gets a number, so that a probe of an earlier run of
        # the same worker stops by itself.
        self._runs[name] = self._runs.get(name, 0) + 1
        if started:
            if self._runs[name] > 1:
                upstream.restarts += 1  # not its first start
            upstream.down_until = 0.0
            upstream.pid = self.pids()[name]
            self._probe(name, self._runs[name])
            return
        if self._waiting:
            lines = "\n".join("  " + line for line in self._monitor.last_lines(name))
            self._fail_waiting(
                f"{name} exited before it was ready"
                + (f"; its last output:\n{lines}" if lines else "")
            )
        if self._monitor.running:
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
                if self.all_ready():
                    waiting, self._waiting = self._waiting, []
                    for d in waiting:
                        d.callback(None)

        def retry(_: Failure) -> None:
            self._reactor.callLater(PROBE_INTERVAL, self._probe, name, run)

        d = upstream.endpoint.connect(_ProbeFactory())
        d.addCallbacks(ready, retry)
