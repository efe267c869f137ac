"""
An ASGI worker process: one ASGI 3 application (a Django project with
Channels, or any other) served by Daphne on a UNIX socket to its router.

The router starts it (L{txrouter.workers}) as::

    python -m txrouter.worker serve --socket PATH --prefix /live/ \\
        --asgi chat.asgi:application --path sites/chat --settings chat.settings

with the shared secret in C{TXROUTER_WORKER_TOKEN}. The application is
wrapped in L{txrouter.asgifacts.router_facts}, so it sees each request as
its client made it to the router, and only its router's requests. HTTP
and WebSockets arrive on the same socket. On SIGTERM (or SIGINT) it stops
listening, closes its open WebSockets with 1001 (going away), lets its
HTTP requests in flight finish (at most C{--drain-timeout} seconds) and
exits 0; it never outlives its router.

Importing this module installs Twisted's asyncio reactor (Daphne's import
does, and Daphne needs it): only a worker process imports it, before
anything imports C{twisted.internet.reactor}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import os
import signal
import sys
from typing import Any

# Daphne's server module installs the asyncio reactor as it is imported, so
# it is the first import that can import Twisted (straight imports come
# before "from" ones, and asgiref imports no Twisted).
import daphne.server
from asgiref.compatibility import guarantee_single_callable
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.error import ReactorNotRunning
from twisted.internet.task import LoopingCall

from txrouter.asgifacts import ASGIApp, router_facts
from txrouter.heap import freeze_startup_heap
from txrouter.importer import import_app
from txrouter.privatetwisted import http_protocol_factory
from txrouter.workerrequest import PassedBody, WorkerChannel

__all__ = ["GOING_AWAY", "WEBSOCKET_MAX_MESSAGE", "serve"]

#: The close code an open WebSocket gets when its worker stops (RFC 6455).
GOING_AWAY = 1001

#: The largest WebSocket message (and frame) a client may send (Daphne's
#: own default, since 4.2.2, is 1 MiB).
WEBSOCKET_MAX_MESSAGE = 64 * 1024 * 1024

_log = logging.getLogger("txrouter.asgiworker")


class _Request(WebRequest):  # type: ignore[misc]
    """
    Daphne's request, taking a body its router spooled to a file as that
    file's descriptor, passed over the UNIX socket (as
    L{txrouter.workerrequest.WorkerRequest} does for a WSGI worker).
    """

    content: Any

    def process(self) -> Any:
        lengths = self.requestHeaders.getRawHeaders(b"x-txrouter-body-length")
        if lengths is not None:
            self.requestHeaders.removeHeader(b"x-txrouter-body-length")
            passed = getattr(self.channel, "passed", None)
            if not passed or not lengths[-1].isdigit():
                self.basic_error(400, b"Bad Request", "The body's file did not come.")
                return None
            if self.content is not None:
                self.content.close()
            descriptor = passed.popleft()
            self.content = io.BufferedReader(PassedBody(descriptor, int(lengths[-1])))
            self.requestHeaders.setRawHeaders(b"content-length", [lengths[-1]])
        return super().process()


class _Factory(HTTPFactory):  # type: ignore[misc]
    """
    Daphne's HTTP factory with channels that receive the descriptors their
    router passes, and no idle timeout: only the router connects, and it
    retires the connections it pools itself.
    """

    protocol = http_protocol_factory(WorkerChannel)

    def __init__(self, server: daphne.server.Server) -> None:
        super().__init__(server)
        self.timeOut = None

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = _Request
        return protocol


class _Server(daphne.server.Server):  # type: ignore[misc]
    """
    Daphne's server, telling its drain when a connection ends.
    """

    drain: _Drain | None = None

    def protocol_disconnected(self, protocol: Any) -> None:
        super().protocol_disconnected(protocol)
        if self.drain is not None:
            self.drain.check()

    def kill_all_applications(self) -> Any:
        # Daphne's own fails (KeyError) on a connection that has no
        # application: the HTTP request a WebSocket came in on, until its
        # checker forgets it (within a second). A drain stops sooner.
        for protocol, details in list(self.connections.items()):
            if "application_instance" not in details:
                del self.connections[protocol]
        return super().kill_all_applications()


class _Drain:
    """
    A worker's stop: no new connections, open WebSockets closed, requests in
    flight finished (at most C{timeout} seconds), then the reactor stops.
    """

    def __init__(self, reactor: Any, server: _Server, timeout: float) -> None:
        self._reactor = reactor
        self._server = server
        self._timeout = timeout
        self.port: Any = None
        self._timer: Any = None

    def start(self) -> None:
        if self._timer is not None:
            return
        _log.info("stopping: draining requests in flight")
        self._timer = self._reactor.callLater(self._timeout, self._give_up)
        if self.port is not None:
            self.port.stopListening()
        for protocol in self._busy():
            if (
                isinstance(protocol, WebSocketProtocol)
                and protocol.state == protocol.STATE_OPEN
            ):
                # Autobahn lets an application close with 1000 or 3000-4999
                # only; a server that goes away says so with 1001, as
                # Daphne says 1011 itself (handle_exception).
                protocol.sendCloseFrame(code=GOING_AWAY)
        self._server.drain = self
        self.check()

    def _busy(self) -> list[Any]:
        return [
            protocol
            for protocol, details in self._server.connections.items()
            if "disconnected" not in details
        ]

    def check(self) -> None:
        """
        Stop once nothing is in flight.
        """
        if self._timer is not None and self._timer.active() and not self._busy():
            self._timer.cancel()
            _stop(self._reactor)

    def _give_up(self) -> None:
        _log.warning(
            "drain timeout reached: closing %d connection(s) still busy",
            len(self._busy()),
        )
        _stop(self._reactor)


def _stop(reactor: Any) -> None:
    """
    Stop the reactor, if nothing stopped it yet (the drain and the
    router's death may both try).
    """
    with contextlib.suppress(ReactorNotRunning):
        reactor.stop()


def _load(args: argparse.Namespace) -> ASGIApp:
    """
    Import the application (its settings first, for Django).

    @raise txrouter.errors.AppLoadError: it cannot be imported.
    """
    if args.settings:
        os.environ["DJANGO_SETTINGS_MODULE"] = args.settings
    application = import_app(args.asgi, [args.path] if args.path else [])
    # An ASGI 2 application (a class taking the scope) is served too.
    return guarantee_single_callable(application)  # type: ignore[no-any-return]


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    # No time: the router's log puts its own before each line.
    handler.setFormatter(logging.Formatter("[%(name)s] %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    _log.setLevel(logging.INFO)


def serve(args: argparse.Namespace) -> int:
    """
    Serve C{args.asgi} on C{args.socket} until stopped.

    @raise txrouter.errors.AppLoadError: the application cannot be loaded.
    @return: the exit status.
    """
    from twisted.internet import reactor

    _log_to_stderr()
    token = os.environ.get("TXROUTER_WORKER_TOKEN", "").encode("ascii")
    application = router_facts(_load(args), token, args.prefix)
    server = _Server(
        application,
        # Daphne listens on endpoint strings with its own factory; this
        # worker listens itself (see ready), so that its factory takes the
        # descriptors its router passes and its drain can close the port.
        endpoints=[f"unix:{args.socket}"],
        signal_handlers=False,
        # 2: Twisted's log goes to Python's logging (1 would discard it).
        verbosity=2,
        root_path=args.prefix.rstrip("/"),
        # The router and the client decide how long a WebSocket lives.
        websocket_timeout=-1,
    )
    server.endpoints = []
    drain = _Drain(reactor, server, args.drain_timeout)
    failed: list[str] = []

    def ready() -> None:
        # Set here rather than as Daphne's arguments, which only 4.2.2 has.
        server.ws_factory.setProtocolOptions(
            maxMessagePayloadSize=WEBSOCKET_MAX_MESSAGE,
            maxFramePayloadSize=WEBSOCKET_MAX_MESSAGE,
        )
        if os.path.exists(args.socket):
            os.unlink(args.socket)  # left by a worker that died before us
        endpoint = UNIXServerEndpoint(reactor, args.socket, mode=0o600)
        endpoint.listen(_Factory(server)).addCallbacks(listening, cannot_listen)
        loop = asyncio.get_event_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, drain.start)
        parent = os.getppid()

        def orphaned() -> None:
            # Never outlive the router, even one killed with SIGKILL.
            if os.getppid() != parent:
                _stop(reactor)

        LoopingCall(orphaned).start(1.0, now=False)
        freeze_startup_heap()

    def listening(port: Any) -> None:
        drain.port = port
        _log.info("serving %s on unix:%s", args.asgi, args.socket)

    def cannot_listen(failure: Any) -> None:
        failed.append(failure.getErrorMessage())
        _log.error("cannot listen on unix:%s: %s", args.socket, failed[-1])
        reactor.callWhenRunning(_stop, reactor)

    server.ready_callable = ready
    server.run()
    return 1 if failed else 0
