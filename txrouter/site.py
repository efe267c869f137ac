"""
The HTTP site: Twisted's C{Site} with an optional access log and a count of
the requests in flight, so that shutdown can wait for them (L{RouterSite.drain}).

While it drains, no connection stays open idle for long: requests arriving
on keep-alive connections are answered with C{Connection: close} (a client
opens a new connection, to the router that replaces this one, if any), and
after a short grace the connections still idle are closed.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakSet

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime, ISSLTransport
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from txrouter.channel import RouterChannel
from txrouter.edge import BadRequest, check_headers, request_target
from txrouter.limits import Limits
from txrouter.privatetwisted import http_channel_of, http_protocol_factory

__all__ = ["KEEPALIVE_GRACE", "RouterRequest", "RouterSite"]

#: Seconds between two looks at the connections' deadlines: a late head or
#: body is refused at most this much after its deadline.
_SWEEP_EVERY = 0.5

#: Seconds a draining site goes on serving what keep-alive clients send on
#: their open connections before it closes those left idle: a client whose
#: request crosses that close on the wire has to send it again, so active
#: clients get an answer (with C{Connection: close}) instead.
KEEPALIVE_GRACE = 1.0


class RouterRequest(Request):
    """
    A request of a L{RouterSite}: it is checked at the edge (L{txrouter.edge})
    before it is routed, and it tells its site when it ends, without the
    cost of a C{notifyFinish} Deferred per request. A site's
    C{requestFactory} must be this class or a subclass.
    """

    _refused: str | None = None
    #: Whether a header name may have "_" (the strict gate tells when not).
    underscored_names = True

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        try:
            path, host = request_target(command, path)
            check_headers(self.requestHeaders, version, host, self.underscored_names)
        except BadRequest as e:
            self._refused = str(e)
        if not self.requestHeaders.hasHeader(b"host"):
            # HTTP/1.0 without Host: name the address the request came to,
            # as Twisted does for an in-process app, so that a worker or an
            # upstream sees the same and answers the same.
            address = getattr(self.getHost(), "host", None)
            if address:
                name = f"[{address}]" if ":" in address else address
                self.requestHeaders.setRawHeaders(b"host", [name.encode("ascii")])
        super().requestReceived(command, path, version)

    def process(self) -> None:
        if self._refused is not None:
            self._refuse(self._refused)
            return
        super().process()

    def _refuse(self, why: str) -> None:
        body = f"400 Bad Request: {why}.\n".encode()
        self.setResponseCode(400)
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.setHeader(b"content-length", b"%d" % len(body))
        self.setHeader(b"connection", b"close")
        # Nothing more is read from a client that sent this.
        self.channel.persistent = False
        self.write(body)
        self.finish()

    def handleContentChunk(self, data: bytes) -> None:
        count = getattr(self.channel, "body_received", None)
        if count is not None:
            count(len(data))
        super().handleContentChunk(data)

    def finish(self) -> None:
        super().finish()
        self._ended()

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self._ended()

    def _ended(self) -> None:
        if isinstance(self.site, RouterSite):
            self.site.request_ended(self)

    def isSecure(self) -> bool:
        # Twisted adapts the transport to ISSLTransport, which for a plain
        # TCP connection walks the adapter registry on every call; TLS
        # transports provide the interface directly.
        if self._forceSSL:
            return True
        channel = getattr(self, "channel", None)  # gone once finished
        return channel is not None and ISSLTransport.providedBy(channel.transport)


class RouterSite(Site):
    """
    One site for every listening port.

    @ivar in_flight: requests received and not yet finished or abandoned.
    """

    displayTracebacks = False
    requestFactory = RouterRequest
    _log = Logger()

    def __init__(
        self,
        resource: IResource,
        reactor: IReactorTime,
        access_log: str | None,
        limits: Limits | None = None,
    ) -> None:
        """
        @param access_log: a file path, C{"-"} for twistd's log, or L{None}
            for no access log.
        @param limits: the edge's limits, kept by a strict L{RouterChannel}
            per connection; L{None} for Twisted's own channel (a worker,
            whose one client is its router, which keeps them).
        """
        log_path = None if access_log in (None, "-") else access_log
        super().__init__(resource, logPath=log_path, reactor=reactor)
        self.limits: Limits | None = None
        if limits is not None:
            self.set_limits(limits)
        self.open_connections = 0
        self.refused_connections = 0
        self._sweep: LoopingCall | None = None
        self._logging = access_log is not None
        self._draining = False
        self._idle_closing = False
        self._drained: list[Deferred[None]] = []
        self.in_flight: set[Request] = set()
        self._channels: WeakSet[Any] = WeakSet()

    def buildProtocol(self, addr: Any) -> Any:
        limits = self.limits
        if limits is not None and self.open_connections >= limits.max_connections:
            # Closed at once: the connections already open keep their share.
            self.refused_connections += 1
            if self.refused_connections % 1000 == 1:
                self._log.warn(
                    "{count} connection(s) refused so far: max_connections "
                    "({limit}) are open",
                    count=self.refused_connections,
                    limit=limits.max_connections,
                )
            return None
        protocol = super().buildProtocol(addr)
        channel = http_channel_of(protocol)
        self._channels.add(channel)
        if limits is not None:
            self.open_connections += 1
            if self._sweep is None:
                # One look a second at every connection's deadlines.
                self._sweep = LoopingCall(self._check_deadlines)
                self._sweep.clock = self.reactor
                self._sweep.start(_SWEEP_EVERY, now=False)
        return protocol

    def _check_deadlines(self) -> None:
        now = self.reactor.seconds()
        for channel in list(self._channels):
            check = getattr(channel, "check_deadlines", None)
            if check is not None:
                check(now)

    def stopFactory(self) -> None:
        super().stopFactory()
        if self._sweep is not None and self._sweep.running:
            self._sweep.stop()
        self._sweep = None

    def set_limits(self, limits: Limits) -> None:
        """
        Keep C{limits} on the connections opened from now on.
        """
        self.limits = limits
        self.timeOut = limits.keepalive_timeout
        channel = type("Channel", (RouterChannel,), {"limits": limits})
        self.protocol = http_protocol_factory(channel)  # type: ignore[method-assign]

    def connection_closed(self) -> None:
        """
        A connection of a L{RouterChannel} closed.
        """
        self.open_connections -= 1

    def max_body_for(self, host: bytes, target: bytes) -> int:
        """
        The largest request body the route of a request for C{target} (as
        sent) on C{host} takes.
        """
        assert self.limits is not None
        if not getattr(self.resource, "has_own_max_body", False):
            return self.limits.max_body
        try:
            path, named = request_target(b"GET", target)
        except BadRequest:
            return self.limits.max_body  # refused later, with its reason
        find = getattr(self.resource, "max_body_for", None)
        found = find(named or host, path) if find is not None else None
        return self.limits.max_body if found is None else int(found)

    def _end_grace(self) -> None:
        self._idle_closing = True
        self._close_idle()

    def _close_idle(self) -> None:
        """
        Close every connection that has no request on it (none being
        received, none being answered).
        """
        for channel in list(self._channels):
            transport = getattr(channel, "transport", None)
            if not channel.requests and transport is not None:
                transport.loseConnection()

    def log(self, request: Any) -> None:
        if self._logging:
            super().log(request)

    def getResourceFor(self, request: Request) -> IResource:
        self.in_flight.add(request)
        if self._draining:
            # Tell keep-alive clients not to send more on this connection.
            request.setHeader(b"connection", b"close")
        return super().getResourceFor(request)  # type: ignore[no-any-return]

    def request_ended(self, request: Request) -> None:
        """
        C{request} was finished, or its client went away.
        """
        self.in_flight.discard(request)
        if self._idle_closing:
            # Its connection falls idle once the response is written.
            self.reactor.callLater(0, self._close_idle)
        if not self.in_flight:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Wait until no request is in flight, at most C{timeout} seconds; then
        abort the connections of the requests still running. Meanwhile,
        requests that keep-alive clients send on their open connections
        are served, answered with C{Connection: close}, for
        L{KEEPALIVE_GRACE} seconds; then the connections still idle close.

        Call it after the ports have stopped listening.
        """
        self._draining = True
        for request in self.in_flight:
            if not request.startedWriting:
                request.setHeader(b"connection", b"close")
        grace = min(KEEPALIVE_GRACE, timeout)
        idle_closed = deferLater(self.reactor, grace, self._end_grace)
        return gatherResults([idle_closed, self._requests_done(timeout)]).addCallback(
            lambda _: None
        )

    def _requests_done(self, timeout: float) -> Deferred[None]:
        if not self.in_flight:
            return succeed(None)
        self._log.info(
            "Waiting up to {timeout}s for {count} request(s) in flight",
            timeout=timeout,
            count=len(self.in_flight),
        )
        done: Deferred[None] = Deferred()
        self._drained.append(done)
        call = self.reactor.callLater(timeout, self._give_up, done)
        done.addBoth(lambda result: call.cancel() if call.active() else None)
        return done

    def _give_up(self, done: Deferred[None]) -> None:
        self._log.warn(
            "drain_timeout reached: aborting {count} request(s) still in flight: "
            "{uris}",
            count=len(self.in_flight),
            uris=", ".join(sorted(r.uri.decode("latin-1") for r in self.in_flight)),
        )
        for request in list(self.in_flight):
            transport = request.channel.transport if request.channel else None
            if transport is not None:
                transport.abortConnection()  # type: ignore[attr-defined]
        if done in self._drained:
            self._drained.remove(done)
            done.callback(None)
