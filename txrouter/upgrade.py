"""
Zero-downtime upgrade of the router process itself (the nginx and gunicorn
USR2 pattern): L{Upgrader} starts a new C{twistd} with the same command
line, handing it the listening sockets; the new router serves them at
once (no moment without a listener, no C{SO_REUSEPORT} race), starts its
workers, and says when it is ready. Only then does the old one stop
accepting, drain its requests and workers, and exit; the pidfile names the
new process. A new router that fails to start leaves the old one serving.

The hand-over, as seen by the new process (L{inherited_sockets},
L{AdoptedEndpoint}, L{ReadyReport}):

  - C{TXROUTER_INHERITED}: JSON, endpoint string to file descriptor, for
    each listener (the admin endpoint too);
  - C{TXROUTER_UPGRADE_FD}: a pipe to the old router, which gets
    C{"pid N"} when the new one starts, then C{"ready"}, or C{"failed:
    why"}.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.protocols.haproxy import proxyEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from txrouter.endpointstrings import split_endpoint
from txrouter.privatetwisted import forget_pidfile, hand_over_port, twistd_options
from txrouter.reloader import Outcome
from txrouter.services import ListenerService, RouterService

__all__ = [
    "AdoptedEndpoint",
    "ReadyReport",
    "Upgrader",
    "inherited_endpoint",
    "inherited_sockets",
]

_log = Logger()

_INHERITED = "TXROUTER_INHERITED"
_REPORT_FD = "TXROUTER_UPGRADE_FD"

#: Seconds a new router has to say it is ready.
READY_TIMEOUT = 120.0

#: Endpoint types whose listening socket can be handed over as it is.
_ADOPTABLE = {"tcp": socket.AF_INET, "tcp6": socket.AF_INET6, "unix": socket.AF_UNIX}


#: Why a router with systemd's sockets is not upgraded: systemd watches the
#: process it started, and stops the service (and the new router with it)
#: when that process exits; a restart is as good, since systemd keeps the
#: sockets open and connections wait in their backlog meanwhile.
_SYSTEMD_REFUSAL = (
    "cannot upgrade: {0!r} is a socket of systemd's, and systemd stops the "
    "service when the process it started exits, the new router with it; "
    "restart the service instead ('systemctl restart txrouter.service'): "
    "systemd keeps the sockets open meanwhile, so connections wait instead "
    "of failing"
)


#: Why a router that dropped root is not upgraded: the new router would be
#: started by the dropped user with the same --uid, which only root may
#: ask for, and could not make its admin socket where root did.
_DROPPED_REFUSAL = (
    "cannot upgrade: this router dropped root (twistd --uid/--gid), and a "
    "new one started by the user it runs as could not do the same; restart "
    "it instead (under systemd socket activation, the sockets stay open "
    "meanwhile)"
)


def _layers(description: str) -> tuple[int, str]:
    """
    How many C{haproxy:} wrappers an endpoint string has, and the type of
    the endpoint they wrap.
    """
    args, _ = split_endpoint(description)
    wrappers = 0
    while args and args[0].lower() == "haproxy":
        wrappers += 1
        args = args[1:]
    return wrappers, (args[0].lower() if args else "")


# -- the new router's side


def inherited_sockets() -> dict[str, int]:
    """
    The listening sockets handed to this process by the router it
    replaces, by endpoint string; read once (the variables are removed, so
    that workers do not see them).
    """
    text = os.environ.pop(_INHERITED, "")
    return {str(k): int(v) for k, v in json.loads(text).items()} if text else {}


@implementer(IStreamServerEndpoint)
class AdoptedEndpoint:
    """
    An endpoint that listens on a socket this process was handed, instead
    of binding a new one.
    """

    def __init__(self, reactor: Any, fd: int, family: int) -> None:
        self._reactor = reactor
        self._fd = fd
        self._family = family

    def listen(self, factory: Any) -> Deferred[Any]:
        port = self._reactor.adoptStreamPort(self._fd, self._family, factory)
        os.close(self._fd)  # the port holds a duplicate
        return succeed(port)


def inherited_endpoint(reactor: Any, description: str, fd: int) -> Any:
    """
    The endpoint for a listener whose socket was handed over.
    """
    wrappers, kind = _layers(description)
    endpoint: Any = AdoptedEndpoint(reactor, fd, _ADOPTABLE[kind])
    for _ in range(wrappers):
        endpoint = proxyEndpoint(endpoint)
    return endpoint


class ReadyReport(Service):
    """
    In a router started by an upgrade: tell the old router our PID, then,
    once every worker answers, that we are ready.
    """

    def __init__(self, top: RouterService) -> None:
        self._top = top
        self._fd = int(os.environ.pop(_REPORT_FD, "-1"))

    @property
    def wanted(self) -> bool:
        return self._fd >= 0

    def startService(self) -> None:
        super().startService()
        if not self.wanted:
            return
        self._say(f"pid {os.getpid()}")
        table = self._top.table
        sets = table.worker_sets() if table is not None else []
        waiting = gatherResults([s.ready() for s in sets], consumeErrors=True)
        waiting.addCallbacks(self._ready, self._failed)

    def _ready(self, _: object) -> None:
        self._say("ready")
        self._close()

    def _failed(self, failure: Failure) -> None:
        first = getattr(failure.value, "subFailure", failure)
        self._say(f"failed: {first.getErrorMessage()}")
        self._close()

    def _say(self, line: str) -> None:
        os.write(self._fd, line.encode("utf-8", "replace") + b"\n")

    def _close(self) -> None:
        os.close(self._fd)
        self._fd = -1
        # Our stderr was a pipe to the old router, which is going away.
        os.dup2(1, 2)


# -- the old router's side


class _NewRouter(ProcessProtocol):
    """
    The new router while it starts: its stderr, what it reports, its end.
    """

    def __init__(self, report_fd: int, done: Callable[[str | None], None]) -> None:
        self._report_fd = report_fd
        self._done = done
        self._report = b""
        self.pid: int | None = None
        self.errors: list[str] = []

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd == self._report_fd:
            self._report += data
            while b"\n" in self._report:
                said, _, self._report = self._report.partition(b"\n")
                self._line(said.decode("utf-8", "replace"))
        else:
            for text in data.decode("utf-8", "replace").splitlines():
                if text.strip():
                    self.errors.append(text)
                    _log.info("[new router] {line}", line=text)
            del self.errors[:-20]

    def _line(self, line: str) -> None:
        if line.startswith("pid "):
            self.pid = int(line[4:])
        elif line == "ready":
            self._done(None)
        else:
            self._done(line)

    def childConnectionLost(self, fd: int) -> None:
        if fd == self._report_fd:
            self._done("it stopped before it was ready")

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        if code:
            # A daemonizing twistd's first process exits 0 once the daemon
            # has started; anything else is a failure to start.
            self._done(f"it exited with status {code}")


class Upgrader:
    """
    Hands this router's sockets to a new router process.
    """

    def __init__(self, reactor: Any, top: RouterService) -> None:
        self._reactor = reactor
        self._top = top
        self._busy = False

    def upgrade(self) -> Deferred[Outcome]:
        """
        Start the new router; fires once it serves (this one then drains
        and exits), or with the reason it could not.
        """
        generation = self._top.table.generation if self._top.table else 0

        def outcome(ok: bool, message: str) -> Outcome:
            return Outcome(ok, message, generation, time.time())

        if self._busy:
            return succeed(outcome(False, "an upgrade is already running"))
        options = twistd_options()
        if options is None:
            return succeed(outcome(False, "this router was not started by twistd"))
        if options.get("uid") is not None or options.get("gid") is not None:
            return succeed(outcome(False, _DROPPED_REFUSAL))
        listeners = [s for s in self._top if isinstance(s, ListenerService)]
        for listener in listeners:
            kind = _layers(str(listener.name))[1]
            if kind == "systemd":
                return succeed(outcome(False, _SYSTEMD_REFUSAL.format(listener.name)))
            if kind not in _ADOPTABLE or listener.port is None:
                return succeed(
                    outcome(
                        False,
                        f"cannot hand {listener.name!r} to a new process (only "
                        "tcp, tcp6 and unix listeners, or haproxy: around "
                        "them, can be); stop and start the router instead",
                    )
                )
        self._busy = True
        pidfile = str(options["pidfile"] or "")
        aside = pidfile + ".oldbin" if pidfile else ""
        if pidfile and os.path.exists(pidfile):
            os.rename(pidfile, aside)

        result: Deferred[Outcome] = Deferred()
        report_fd = 3 + len(listeners)
        child_fds: dict[int, Any] = {0: 0, 1: 1, 2: "r", report_fd: "r"}
        inherited = {}
        for number, listener in enumerate(listeners):
            child_fds[3 + number] = listener.port.fileno()
            inherited[str(listener.name)] = 3 + number
        env = dict(os.environ)
        env[_INHERITED] = json.dumps(inherited)
        env[_REPORT_FD] = str(report_fd)

        def done(failure: str | None) -> None:
            if result.called:
                return
            if timer.active():
                timer.cancel()
            if failure is None:
                forget_pidfile()
                result.callback(
                    outcome(
                        True,
                        f"new router {new.pid} serving; this one "
                        f"({os.getpid()}) drains and exits",
                    )
                )
                self._reactor.callLater(0.1, self._hand_over, listeners, aside)
                return
            self._busy = False
            if new.pid is not None and new.pid != os.getpid():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(new.pid, signal.SIGTERM)
            if aside and os.path.exists(aside):
                os.rename(aside, pidfile)
            said = "\n".join("  " + line for line in new.errors)
            result.callback(
                outcome(
                    False,
                    f"the new router did not start: {failure}; this one "
                    "keeps serving" + (f"; its output:\n{said}" if said else ""),
                )
            )

        new = _NewRouter(report_fd, done)
        timer = self._reactor.callLater(
            READY_TIMEOUT, done, f"it was not ready in {READY_TIMEOUT:g}s"
        )
        _log.info("upgrade: starting a new router: {argv}", argv=" ".join(sys.argv))
        self._reactor.spawnProcess(
            new,
            sys.executable,
            [sys.executable, *sys.argv],
            env=env,
            path=os.getcwd(),
            childFDs=child_fds,
        )
        return result

    def _hand_over(self, listeners: list[ListenerService], aside: str) -> None:
        """
        Leave the sockets to the new router: stop, as on SIGTERM, closing
        only this process's descriptors of them.
        """
        for listener in listeners:
            hand_over_port(listener.port)
        if aside:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(aside)
        self._reactor.stop()
