"""
The HTTP site: Twisted's C{Site} with an optional access log
(L{txrouter.accesslog}), the requests in flight, so that shutdown can
wait for them (L{RouterSite.drain}), and each route's counters
(L{txrouter.routestats}), to which a request is added as it ends.

Every listening port reaches the one site through a L{ListenerFactory} of
its own (L{RouterSite.listener}), which counts that port's open
connections against C{limits.max_connections}: one busy listener cannot
take the room of another.

While it drains, no connection stays open idle for long: requests arriving
on keep-alive connections are answered with C{Connection: close} (a client
opens a new connection, to the router that replaces this one, if any), and
after a short grace the connections still idle are closed.
"""

from __future__ import annotations

import time
from collections.abc import Container, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes
from weakref import WeakSet

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import (
    IAddress,
    ILoggingContext,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString
from twisted.web.resource import IResource
from twisted.web.server import Request, Site
from twisted.web.server import version as server_version
from zope.interface import implementer

from txrouter.channel import RouterChannel
from txrouter.edge import BadRequest, check_headers, request_target
from txrouter.endpointstrings import split_endpoint
from txrouter.http2 import take_over
from txrouter.limits import Limits
from txrouter.privatetwisted import http_channel_of, http_protocol_factory
from txrouter.routestats import RouteStats

if TYPE_CHECKING:
    from txrouter.accesslog import AccessLog, RouteTag
    from txrouter.forwarding import TrustedProxies
    from txrouter.upstream import Upstream

__all__ = [
    "KEEPALIVE_GRACE",
    "ListenerFactory",
    "RouterRequest",
    "RouterSite",
    "abort",
]

#: Seconds between two looks at the connections' deadlines: a late head or
#: body is refused at most this much after its deadline.
_SWEEP_EVERY = 0.5

#: Seconds a draining site goes on serving what keep-alive clients send on
#: their open connections before it closes those left idle: a client whose
#: request crosses that close on the wire has to send it again, so active
#: clients get an answer (with C{Connection: close}) instead.
KEEPALIVE_GRACE = 1.0


_SERVER = server_version


#: Where ACME's HTTP-01 challenges are answered (RFC 8555 section 8.3):
#: never redirected to HTTPS.
_ACME_CHALLENGES = b"/.well-known/acme-challenge/"


@lru_cache(maxsize=1)
def _date_of(second: int) -> bytes:
    return datetimeToString(second)  # type: ignore[no-any-return]


def _http_date() -> bytes:
    """
    The C{Date} of a response sent now, made once a second.
    """
    return _date_of(int(time.time()))


class RouterRequest(Request):
    """
    A request of a L{RouterSite}: it is checked at the edge (L{txrouter.edge})
    before it is routed, and it tells its site when it ends, without the
    cost of a C{notifyFinish} Deferred per request. A site's
    C{requestFactory} must be this class or a subclass.
    """

    _refused: str | None = None
    #: Whether the edge's checks were made before this request came (a
    #: worker's requests come from its router, which made them).
    checked_before = False
    #: Whether a header name may have "_" (the strict channel tells when not).
    underscored_names = True
    #: What the strict channel parsed of the head (L{txrouter.channel}), and
    #: whether it is this request's turn to be answered.
    head: Any = None
    turn_started = False
    #: For the access log and the route's counters: the route that took
    #: the request (set by the router), the upstream or worker it was sent
    #: to last (set by the proxy engine), when the site routed it (reactor
    #: time; L{None} again once the request is counted), and the bytes of
    #: its body received.
    route: RouteTag | None = None
    upstream: Upstream | None = None
    #: The protocols the client asks to switch to (its C{Upgrade}, lower
    #: case), set by the strict channel on an HTTP/1.1 request without a
    #: body whose C{Connection} says C{upgrade} and not C{close}.
    upgrade: bytes | None = None
    routed_at: float | None = None
    body_length = 0

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self.checked_before:
            try:
                path, host = request_target(command, path)
                check_headers(
                    self.requestHeaders, version, host, self.underscored_names
                )
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
        if self.path == b"*":
            super().process()  # Twisted answers OPTIONS * itself
            return
        # What Twisted's Site.process does, with the Date header made once
        # a second (as nginx does) rather than once a request; no resource
        # of ours encodes its responses.
        self.site = site = self.channel.site  # type: ignore[attr-defined]
        headers = self.responseHeaders
        headers.setRawHeaders(b"server", [_SERVER])
        headers.setRawHeaders(b"date", [_http_date()])
        # A plain Site (as 'txrouter explain' makes) has none.
        challenges = getattr(site, "acme_challenges", None)
        if challenges is not None and self._answer_challenge(challenges):
            return
        listener = getattr(self.channel, "listener", None)
        if (
            listener is not None
            and listener.https_redirect is not None
            and not self.path.startswith(_ACME_CHALLENGES)
        ):
            self._to_https(listener.https_redirect)
            return
        self.prepath = []
        self.postpath = list(map(unquote_to_bytes, self.path[1:].split(b"/")))
        try:
            self.render(site.getResourceFor(self))
        except BaseException:
            self.processingFailed(Failure())

    def _answer_challenge(self, challenges: Mapping[bytes, bytes]) -> bool:
        """
        Answer an ACME HTTP-01 challenge (RFC 8555 section 8.3) that the
        router's ACME service waits on, for any host, before routing: the
        CA asks over plain HTTP, at C{/.well-known/acme-challenge/TOKEN}.

        @param challenges: key authorizations by token.
        @return: whether it answered; a token it does not know is routed
            as any other request.
        """
        if not self.path.startswith(_ACME_CHALLENGES):
            return False
        answer = challenges.get(self.path[len(_ACME_CHALLENGES) :])
        if answer is None or self.method not in (b"GET", b"HEAD"):
            return False
        self._answer_unrouted(answer, b"text/plain")
        return True

    def _to_https(self, port: int) -> None:
        """
        Send the client to the same URL over HTTPS on C{port}: 301, or 308
        for a method that must not turn into a GET on the way.
        """
        host = self.getRequestHostname()
        if b":" in host:
            host = b"[%s]" % host  # an IPv6 address
        where = b"https://%s%s%s" % (
            host,
            b"" if port == 443 else b":%d" % port,
            self.uri,
        )
        self.setResponseCode(301 if self.method in (b"GET", b"HEAD") else 308)
        self.responseHeaders.setRawHeaders(b"location", [where])
        self._answer_unrouted(b"Moved to %s\n" % where, b"text/plain; charset=utf-8")

    def _answer_unrouted(self, body: bytes, content_type: bytes) -> None:
        """
        Finish with C{body}, answered by the router before any route (a
        HEAD gets the head only, as Twisted does): counted with the requests
        no route took.
        """
        headers = self.responseHeaders
        headers.setRawHeaders(b"content-type", [content_type])
        headers.setRawHeaders(b"content-length", [b"%d" % len(body)])
        self.write(body)
        self.finish()
        if isinstance(self.site, RouterSite):
            self.site.unrouted.ended(self, 0.0)

    def handleContentChunk(self, data: bytes) -> None:
        self.body_length += len(data)
        super().handleContentChunk(data)

    def _refuse(self, why: str) -> None:
        site = self.channel.site  # type: ignore[attr-defined]
        body = f"400 Bad Request: {why}.\n".encode()
        self.setResponseCode(400)
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.setHeader(b"content-length", b"%d" % len(body))
        self.setHeader(b"connection", b"close")
        # Nothing more is read from a client that sent this.
        self.channel.persistent = False
        self.write(body)
        self.finish()
        if isinstance(site, RouterSite):
            # With the requests no route took; never routed, it took no time.
            site.unrouted.ended(self, 0.0)

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
        # transports provide the interface directly. An HTTP/2 stream has
        # no transport: it tells.
        if self._forceSSL:
            return True
        channel = getattr(self, "channel", None)  # gone once finished
        if channel is None:
            return False
        transport = channel.transport
        if transport is None:
            secure = getattr(channel, "isSecure", None)
            return secure is not None and bool(secure())
        return ISSLTransport.providedBy(transport)


def abort(request: Request) -> None:
    """
    Abort what carries C{request}: its connection, or, for an HTTP/2
    stream, the stream (C{RST_STREAM}); the connection's other streams
    go on.
    """
    channel = getattr(request, "channel", None)
    if channel is None:
        return  # finished, or gone already
    carrier = channel.transport if channel.transport is not None else channel
    carrier.abortConnection()


class RouterSite(Site):
    """
    One site for every listening port.

    @ivar in_flight: requests received and not yet finished or abandoned.
    @ivar tunnels: the connections that switched protocols and are still
        open (L{txrouter.tunnel.Tunnel}).
    @ivar unrouted: the counters of the requests no route took.
    """

    displayTracebacks = False
    requestFactory = RouterRequest
    #: The ACME HTTP-01 challenges being answered (key authorizations by
    #: token; L{txrouter.acmeservice}), or L{None} without C{acme:}.
    acme_challenges: Mapping[bytes, bytes] | None = None
    #: Whether requests are added to their route's counters (a worker's
    #: are counted by its router, which reports them).
    counts_routes = True
    _log = Logger()

    def __init__(
        self,
        resource: IResource,
        reactor: IReactorTime,
        access_log: AccessLog | None,
        limits: Limits | None = None,
    ) -> None:
        """
        @param access_log: where answered requests are logged, or L{None}
            for nowhere. The site writes to it; L{txrouter.accesslog.AccessLogService}
            opens and closes it.
        @param limits: the edge's limits, kept by a strict L{RouterChannel}
            per connection; L{None} for Twisted's own channel (a worker,
            whose one client is its router, which keeps them).
        """
        super().__init__(resource, reactor=reactor)
        self.limits: Limits | None = None
        if limits is not None:
            self.set_limits(limits)
        self._listeners: WeakSet[ListenerFactory] = WeakSet()
        self._direct = ListenerFactory(self, "(direct)", True)
        self._listeners.add(self._direct)
        self._sweep: LoopingCall | None = None
        self.access_log = access_log
        self.unrouted = RouteStats()
        self._draining = False
        self._idle_closing = False
        self._drained: list[Deferred[None]] = []
        self.in_flight: set[Request] = set()
        self.tunnels: set[Any] = set()
        self._channels: WeakSet[Any] = WeakSet()

    def listener(
        self,
        name: str,
        tls: bool = False,
        https_redirect: int | None = None,
        http2: bool = False,
    ) -> ListenerFactory:
        """
        The factory for one listening port, named by its endpoint string:
        its connections are this site's, counted apart.

        @param tls: the router wraps the port's connections in TLS.
        @param https_redirect: the HTTPS port the port's requests are
            redirected to, if they are.
        @param http2: the port's TLS offers HTTP/2 over ALPN.
        """
        listener = ListenerFactory(self, name, _takes_none(name) and not tls)
        listener.https_redirect = https_redirect
        listener.http2 = http2
        self._listeners.add(listener)
        return listener

    @property
    def open_connections(self) -> int:
        """
        Open connections, on every listener together.
        """
        return sum(listener.open for listener in self._listeners)

    @property
    def refused_connections(self) -> int:
        """
        Connections refused at C{max_connections}, on every listener together.
        """
        return sum(listener.refused for listener in self._listeners)

    def connection_counts(self) -> dict[str, tuple[int, int]]:
        """
        Connections open, and refused at C{max_connections}, by listener
        (its endpoint string; listeners of the same string, one a reload
        is closing and its successor, together). Connections made by
        calling L{buildProtocol} directly, as tests do, count as
        C{"(direct)"} when there are any.
        """
        counts: dict[str, tuple[int, int]] = {}
        for listener in list(self._listeners):
            if listener is self._direct and not (listener.open or listener.refused):
                continue
            was_open, was_refused = counts.get(listener.name, (0, 0))
            counts[listener.name] = (
                was_open + listener.open,
                was_refused + listener.refused,
            )
        return counts

    def buildProtocol(self, addr: Any) -> Any:
        # Called directly (not through a listener), as by tests: one count
        # of its own.
        return self.accept(self._direct, addr)

    def accept(self, listener: ListenerFactory, addr: Any) -> Any:
        """
        The protocol of a new connection on C{listener}'s port; when that
        port has C{max_connections} open, L{None} (or, under a wrapping
        endpoint, a protocol that aborts it): closed at once.
        """
        limits = self.limits
        if limits is not None and listener.open >= limits.max_connections:
            # Closed at once: the connections already open keep their share.
            listener.refused += 1
            if listener.refused % 1000 == 1:
                self._log.warn(
                    "{listener}: {count} connection(s) refused so far: "
                    "max_connections ({limit}) are open on this listener",
                    listener=listener.address(),
                    count=listener.refused,
                    limit=limits.max_connections,
                )
            return None if listener.plain else _Closed()
        protocol = super().buildProtocol(addr)
        channel = http_channel_of(protocol)
        self._channels.add(channel)
        if limits is not None:
            listener.open += 1
            channel.listener = listener
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
        self.protocol = http_protocol_factory(  # type: ignore[method-assign]
            channel, http2=take_over
        )

    def connection_replaced(self, old: Any, new: Any) -> None:
        """
        The connection of channel C{old} goes on with C{new} (HTTP/2,
        chosen over ALPN): C{new}'s deadlines are swept from now on.
        """
        self._channels.discard(old)
        self._channels.add(new)

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
        received, none being answered) and is not a tunnel.
        """
        for channel in list(self._channels):
            close = getattr(channel, "close_if_idle", None)
            if close is not None:
                close()  # HTTP/2: GOAWAY, then closed once answered
                continue
            transport = getattr(channel, "transport", None)
            tunnelled = getattr(channel, "tunnelled", False)
            if (
                not channel.requests
                and transport is not None
                and not tunnelled
                and not getattr(transport, "disconnecting", False)
            ):
                # The channel's: it stops producing for the transport, which
                # a TLS transport waits for before it closes.
                channel.loseConnection()

    def configure_access_log(self, format: str, trusted: TrustedProxies) -> None:
        """
        Write the access log in C{format} from the next line on, naming
        clients as C{trusted} proxies tell (a reload's new settings).
        """
        access_log = self.access_log
        if access_log is None:
            return
        if format != access_log.format:
            self._log.info(
                "access log format: {new} (was {old})",
                new=format,
                old=access_log.format,
            )
        access_log.format = format
        access_log.trusted = trusted

    def log(self, request: Any) -> None:
        if self.access_log is not None:
            self.access_log.write(request)

    def getResourceFor(self, request: Request) -> IResource:
        self.in_flight.add(request)
        request.routed_at = self.reactor.seconds()  # type: ignore[attr-defined]
        if self._draining:
            # Tell keep-alive clients not to send more on this connection.
            request.setHeader(b"connection", b"close")
        return super().getResourceFor(request)  # type: ignore[no-any-return]

    def request_ended(self, request: RouterRequest) -> None:
        """
        C{request} was finished, or its client went away: it is added to
        its route's counters (once).
        """
        self.in_flight.discard(request)
        started = request.routed_at
        if started is not None:
            request.routed_at = None
            if self.counts_routes:
                route = request.route
                stats = self.unrouted if route is None else route.stats
                stats.ended(request, self.reactor.seconds() - started)
        if self._idle_closing:
            # Its connection falls idle once the response is written.
            self.reactor.callLater(0, self._close_idle)
        self._maybe_drained()

    def tunnel_opened(self, tunnel: Any) -> None:
        self.tunnels.add(tunnel)

    def tunnel_ended(self, tunnel: Any) -> None:
        self.tunnels.discard(tunnel)
        self._maybe_drained()

    def _maybe_drained(self) -> None:
        if not self.in_flight and not self.tunnels:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Wait until no request is in flight and no tunnel is open, at most
        C{timeout} seconds; then abort the connections of the requests still
        running, and the tunnels. Meanwhile,
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
        if not self.in_flight and not self.tunnels:
            return succeed(None)
        self._log.info(
            "Waiting up to {timeout}s for {count} request(s) in flight and "
            "{tunnels} tunnel(s)",
            timeout=timeout,
            count=len(self.in_flight),
            tunnels=len(self.tunnels),
        )
        done: Deferred[None] = Deferred()
        self._drained.append(done)
        call = self.reactor.callLater(timeout, self._give_up, done)
        done.addBoth(lambda result: call.cancel() if call.active() else None)
        return done

    def _give_up(self, done: Deferred[None]) -> None:
        if self.in_flight:
            self._log.warn(
                "drain_timeout reached: aborting {count} request(s) still in "
                "flight: {uris}",
                count=len(self.in_flight),
                uris=", ".join(sorted(r.uri.decode("latin-1") for r in self.in_flight)),
            )
        for request in list(self.in_flight):
            abort(request)
        if self.tunnels:
            self._log.info(
                "drain_timeout reached: closing {count} tunnel(s)",
                count=len(self.tunnels),
            )
        for tunnel in list(self.tunnels):
            tunnel.abort()
        if done in self._drained:
            self._drained.remove(done)
            done.callback(None)


@implementer(IProtocolFactory, IProtocolNegotiationFactory, ILoggingContext)
class ListenerFactory:
    """
    What one listening port has in place of the site: the site builds its
    connections (L{RouterSite.accept}), each of which takes this port's
    count down when it closes. Nothing stands between a transport and its
    channel.

    @ivar name: the endpoint string the port listens on.
    @ivar plain: whether the port takes L{None} for a refused connection,
        and closes it (TCP and UNIX ports do); a port whose endpoint wraps
        the protocol (TLS, the PROXY protocol) gets one that closes it.
    @ivar port: the listening port, once it listens (for the logs).
    @ivar open: connections open on this port.
    @ivar refused: connections refused at C{max_connections} on this port.
    @ivar https_redirect: the HTTPS port every request on this port is
        redirected to (301), if any.
    @ivar http2: the port's TLS offers HTTP/2 over ALPN
        (L{txrouter.http2}).
    @ivar proxy_peers: for a port that takes the client's address from a
        PROXY header (C{haproxy:} over TCP), the addresses allowed to send
        one (a live view of C{trusted_proxies}); a connection from any other
        peer is closed at once. L{None}: no such check.
    @ivar untrusted: connections closed because their peer was not in
        C{proxy_peers}.
    """

    __slots__ = (
        "__weakref__",
        "_untrusted_noted",
        "http2",
        "https_redirect",
        "name",
        "open",
        "plain",
        "port",
        "proxy_peers",
        "refused",
        "site",
        "untrusted",
    )

    def __init__(self, site: RouterSite, name: str, plain: bool) -> None:
        self.site = site
        self.name = name
        self.plain = plain
        self.https_redirect: int | None = None
        self.http2 = False
        self.port: Any = None
        self.open = 0
        self.refused = 0
        self.proxy_peers: Container[str] | None = None
        self.untrusted = 0
        self._untrusted_noted: tuple[float, int] | None = None

    def buildProtocol(self, addr: IAddress) -> Any:
        peers = self.proxy_peers
        if peers is not None:
            # The real TCP peer: HAProxy's wrapper reads the header later.
            host = getattr(addr, "host", None)
            if host is not None and host not in peers:
                self._untrusted_peer(host)
                return _Closed()
        return self.site.accept(self, addr)

    def _untrusted_peer(self, host: str) -> None:
        """
        Count a connection from C{host}, not a trusted proxy, and log it:
        the first, then at most once a minute with the count since.
        """
        self.untrusted += 1
        now = self.site.reactor.seconds()
        noted = self._untrusted_noted
        if noted is not None and now - noted[0] < _UNTRUSTED_LOG_EVERY:
            return
        since = self.untrusted - noted[1] if noted is not None else 1
        self._untrusted_noted = (now, self.untrusted)
        self.site._log.warn(
            "{listener}: closed a connection from {peer}, which is not in "
            "trusted_proxies: only the load balancer may send the PROXY "
            "header that names the client ({count} such connection(s) since "
            "the last line like this)",
            listener=self.address(),
            peer=host,
            count=since,
        )

    def acceptableProtocols(self) -> list[bytes]:
        # What a TLS listener offers over ALPN, preferred first (asked at
        # each handshake: a reload may turn HTTP/2 off): a client that
        # offers only protocols it does not speak gets no connection.
        return [b"h2", b"http/1.1"] if self.http2 else [b"http/1.1"]

    def doStart(self) -> None:
        self.site.doStart()

    def doStop(self) -> None:
        self.site.doStop()

    def logPrefix(self) -> str:
        return self.site.logPrefix()  # type: ignore[no-any-return]

    def address(self) -> str:
        """
        The endpoint string, and the address it is bound to once it is.
        """
        host = self.port.getHost() if self.port is not None else None
        if host is None:
            return self.name
        where = getattr(host, "name", None)
        if where is None:
            ip, number = getattr(host, "host", "?"), getattr(host, "port", "?")
            where = f"[{ip}]:{number}" if ":" in str(ip) else f"{ip}:{number}"
        elif isinstance(where, bytes):
            where = where.decode("utf-8", "replace")
        return f"{self.name} ({where})"

    def __repr__(self) -> str:
        return f"<ListenerFactory {self.name!r} of {self.site!r}>"


#: Seconds between two log lines about connections from peers that may
#: not send a PROXY header (L{ListenerFactory.proxy_peers}).
_UNTRUSTED_LOG_EVERY = 60.0

#: Endpoint types whose ports call the factory themselves and close a
#: connection it builds no protocol for.
_PLAIN_ENDPOINTS = frozenset({"tcp", "tcp6", "unix", "systemd"})


def _takes_none(description: str) -> bool:
    """
    Whether a port listening on the endpoint C{description} takes L{None}
    from its factory for a refused connection (see L{ListenerFactory.plain}).
    """
    try:
        args, _ = split_endpoint(description)
    except ValueError:
        return False
    return bool(args) and args[0].lower() in _PLAIN_ENDPOINTS


class _Closed(Protocol):
    """
    A connection refused at C{max_connections} under a wrapping protocol,
    which takes no L{None}: closed at once, before anything is read (so no
    TLS handshake is made).
    """

    def connectionMade(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]
