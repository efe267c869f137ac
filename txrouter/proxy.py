"""
L{ProxyResource}: forward requests under a prefix to HTTP upstreams.

Each request becomes one L{_Exchange}: pick an upstream, get a pooled
connection, send the request (body re-framed with C{Content-Length},
forwarding headers set by us), then stream the response back as it arrives,
pausing the upstream while the client is slow. Failures answer for this
route only: 502 when no upstream could be reached or the answer was broken,
504 when none came within the route's C{timeout} (and the client's connection
is aborted when a body then stalls that long). A connection that could
not be made is retried on the route's next upstream (nothing was sent yet).
Each upstream counts the requests it failed and those retried after it
(L{Upstream.failures}, L{Upstream.retries}), for the metrics.

A request that asks to switch to a protocol the route tunnels (its
C{upgrade} list: WebSocket by default) is sent with its C{Upgrade}; if the
upstream answers C{101}, the client and upstream connections become a
L{txrouter.tunnel.Tunnel}, up to the route's C{max_tunnels} (503 beyond).
Any other answer is relayed as usual. A protocol the route does not tunnel
is a 400, but for C{h2c}, which RFC 9113 retired: such a request is served
as plain HTTP/1.1, as the RFCs let a server do with any C{Upgrade}.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IUNIXTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from txrouter.errorpage import TUNNELS_FULL, error_page
from txrouter.forwarding import (
    Forwarding,
    Pairs,
    TrustedProxies,
    UnsafePath,
    downstream_headers,
    upstream_headers,
    upstream_path,
    worker_headers,
)
from txrouter.http1client import HTTP1Connection
from txrouter.proxyclient import ProxyClient
from txrouter.site import abort
from txrouter.tunnel import Tunnel, Tunnels
from txrouter.upstream import Upstream, UpstreamGroup

__all__ = [
    "ProxyResource",
    "ProxySettings",
    "forwarding_for",
    "outgoing_headers",
    "outgoing_path",
]

_log = Logger()

# Methods whose request carries a body by definition: an empty one is still
# sent with "Content-Length: 0".
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})

# Methods that may be sent again when a reused connection turned out to be
# closed by the upstream before it answered (RFC 9110 section 9.2.2).
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


@dataclass(frozen=True)
class ProxySettings:
    """
    What a proxy route needs besides its upstreams.

    @ivar name: the route, for logs (C{routes.yaml:12: routes['/api/']}).
    @ivar timeout: seconds to wait for the response headers once sent, and
        at most between two reads of the body.
    @ivar preserve_host: pass the client's C{Host} on, rather than the
        upstream's own.
    @ivar trusted: peers whose forwarding headers are extended.
    @ivar prefix: the route prefix without its trailing slash, for
        C{X-Forwarded-Prefix} (C{b""} at C{/}).
    @ivar worker_token: set when the upstreams are our own worker processes:
        they get the client's headers untouched plus the connection's facts
        (L{txrouter.forwarding.worker_headers}).
    @ivar upgrades: the protocols (lower case) a request may switch to,
        through a tunnel; none for an upstream that cannot switch.
    @ivar tunnel_idle_timeout: seconds a tunnel may carry nothing either
        way before it is closed.
    @ivar max_tunnels: tunnels open at once (a handshake counts).
    """

    name: str
    timeout: float
    preserve_host: bool
    trusted: TrustedProxies
    prefix: bytes = b""
    worker_token: bytes | None = None
    upgrades: frozenset[bytes] = frozenset()
    tunnel_idle_timeout: float = 3600.0
    max_tunnels: int = 4096


class ProxyResource(Resource):
    """
    Forwards every request below its prefix to one of C{group}'s upstreams.

    @ivar tunnels: the route's open tunnels.
    """

    isLeaf = True

    def __init__(
        self,
        reactor: Any,
        client: ProxyClient,
        group: UpstreamGroup,
        settings: ProxySettings,
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.client = client
        self.group = group
        self.settings = settings
        self.tunnels = Tunnels(settings.max_tunnels)

    def render(self, request: Any) -> int:
        _Exchange(self, request, None).start()
        return NOT_DONE_YET

    def serve(self, request: Any, release: Callable[[], None]) -> None:
        """
        Forward C{request}; call C{release} once it is over (answered, or
        its client gone). See L{txrouter.bulkhead.Admitted}.
        """
        _Exchange(self, request, release).start()


def forwarding_for(request: Any, settings: ProxySettings) -> Forwarding:
    """
    What the router tells an upstream about the client side of C{request}.
    """
    peer = getattr(request.getClientAddress(), "host", None)
    host = request.getHeader(b"host") or request.getRequestHostname()
    return Forwarding(
        client=peer,
        scheme=b"https" if request.isSecure() else b"http",
        host=host,
        prefix=settings.prefix,
        trusted=peer is not None and peer in settings.trusted,
    )


def outgoing_path(request: Any) -> bytes:
    """
    The path and query that C{request} is sent upstream with, after the
    upstream's base path: its raw segments after the route's prefix, with
    dot-segments resolved inside the base (L{upstream_path}).

    @raise UnsafePath: see L{upstream_path}; the client gets a 400.
    """
    raw_path, _, query = request.uri.partition(b"?")
    rest = raw_path.split(b"/")[1 + len(request.prepath) :]
    return upstream_path(b"", rest, query)


def outgoing_headers(
    request: Any,
    settings: ProxySettings,
    forwarding: Forwarding | None,
    upstream_host: bytes,
) -> Pairs:
    """
    The headers that C{request} is sent upstream with: to one of our
    workers, the client's own and the connection's facts; to another
    upstream, the forwarding headers and a C{Host} that is the client's
    (C{preserve_host}) or C{upstream_host}.

    @param forwarding: L{forwarding_for} the request (unused for workers).
    """
    if settings.worker_token is not None:
        return worker_headers(
            request.requestHeaders, settings.worker_token, _facts(request)
        )
    assert forwarding is not None
    host = request.getHeader(b"host") if settings.preserve_host else None
    return upstream_headers(request.requestHeaders, forwarding, host or upstream_host)


def _facts(request: Any) -> dict[bytes, bytes]:
    """
    The connection facts a worker needs to build the WSGI environ.
    """
    client = request.getClientAddress()
    return {
        b"client": str(getattr(client, "host", "127.0.0.1")).encode("ascii"),
        b"client-port": b"%d" % (getattr(client, "port", 0) or 0,),
        b"scheme": b"https" if request.isSecure() else b"http",
        b"server-port": b"%d" % (getattr(request.getHost(), "port", 0) or 0,),
        b"protocol": request.clientproto,
    }


class _Exchange:
    """
    One client request and its trip upstream; it receives the response
    (L{txrouter.http1client.ResponseReceiver}) and relays it.
    """

    def __init__(
        self,
        resource: ProxyResource,
        request: Any,
        release: Callable[[], None] | None,
    ) -> None:
        self.resource = resource
        self.request = request
        self.release_slot = release
        self.tried: list[Upstream] = []
        self.forwarding: Forwarding | None = None
        self.upstream: Upstream | None = None
        self.pending: Deferred[Any] | None = None
        self.connection: HTTP1Connection | None = None
        self.timer: IDelayedCall | None = None
        self.started = False
        self.producing = False
        self.retried = False
        self.client_gone = False
        #: The protocol asked for, when the route tunnels it.
        self.switching: bytes | None = None

    def start(self) -> None:
        request = self.request
        finished = request.notifyFinish().addErrback(self._client_lost)
        if self.release_slot is not None:
            finished.addCallback(self._over)
        try:
            self.path = outgoing_path(request)
        except UnsafePath:
            error_page(request, 400)
            return
        content = request.content
        content.seek(0, 2)
        self.length = content.tell()
        self.has_body = self.length > 0 or request.method in _BODY_METHODS
        settings = self.resource.settings
        # Set by the strict channel (a plain Twisted request has none).
        asked = getattr(request, "upgrade", None)
        if asked is not None and not self._may_switch(asked):
            return
        if settings.worker_token is None:
            self.forwarding = forwarding_for(request, settings)
        self._attempt()

    def _may_switch(self, asked: bytes) -> bool:
        """
        Decide what to do with a request asking to switch to C{asked} (its
        C{Upgrade}, lower case): tunnel it, serve it as plain HTTP, or
        refuse it (then L{False}).
        """
        resource = self.resource
        protocols = [p.strip() for p in asked.split(b",")]
        upgrades = resource.settings.upgrades
        tunnelled = [p for p in protocols if p.partition(b"/")[0] in upgrades]
        if not tunnelled:
            if upgrades and any(p.partition(b"/")[0] != b"h2c" for p in protocols):
                names = ", ".join(sorted(u.decode() for u in upgrades))
                why = (
                    f"400 Bad Request: this URL switches protocols only to "
                    f"{names}, not to {asked.decode('latin-1')!r}.\n"
                )
                error_page(self.request, 400, body=why.encode("utf-8"))
                return False
            return True  # served as plain HTTP/1.1
        tunnels = resource.tunnels
        if tunnels.full():
            error_page(self.request, 503, retry_after=1, body=TUNNELS_FULL)
            return False
        self.switching = tunnelled[0]
        tunnels.opening += 1
        self.request.notifyFinish().addBoth(self._handshake_over)
        return True

    def _handshake_over(self, ignored: object) -> None:
        self.resource.tunnels.opening -= 1

    def _over(self, ignored: object) -> None:
        assert self.release_slot is not None
        self.release_slot()

    # -- choosing an upstream and a connection

    def _attempt(self, failed: Upstream | None = None) -> None:
        """
        Send the request to the route's next upstream.

        @param failed: the upstream this is a retry after, if any.
        """
        group = self.resource.group
        upstream = group.choose(exclude=self.tried)
        if failed is not None and upstream is not None:
            failed.retries += 1
        if upstream is None:
            if not group.any_ready():
                # Workers starting or restarting: come back in a moment.
                error_page(self.request, 503, retry_after=1)
            else:
                error_page(self.request, 502)
            return
        self.tried.append(upstream)
        self._use(upstream, self.resource.client.pool.take_idle(upstream.key))

    def _use(self, upstream: Upstream, connection: HTTP1Connection | None) -> None:
        self.upstream = upstream
        self.request.upstream = upstream  # for the access log
        upstream.in_flight += 1
        if connection is not None:
            self._send(connection)
            return
        d = self.resource.client.pool.connect(upstream.key, upstream.endpoint)
        self.pending = d
        d.addCallbacks(self._send, self._connect_failed)

    def _release(self) -> None:
        if self.upstream is not None:
            self.upstream.in_flight -= 1
            self.upstream = None

    def _connect_failed(self, failure: Failure) -> None:
        self.pending = None
        upstream = self.upstream
        self._release()
        if self.client_gone or upstream is None:
            return
        upstream.failures += 1
        if self.retried:
            # The request may have reached this upstream on the connection
            # that failed: it is not sent anywhere else.
            self._warn(
                upstream,
                "{route}: upstream {upstream} closed the connection and "
                "cannot be reached again: {why}",
                why=failure.getErrorMessage(),
            )
            error_page(self.request, 502)
            return
        self.resource.group.mark_down(upstream)
        self._warn(
            upstream,
            "{route}: cannot connect to upstream {upstream}: {why}",
            why=failure.getErrorMessage(),
        )
        self._attempt(upstream)

    # -- the request

    def _send(self, connection: HTTP1Connection) -> None:
        self.pending = None
        upstream = self.upstream
        if self.client_gone or upstream is None:
            connection.transport.loseConnection()  # type: ignore[union-attr]
            return
        request = self.request
        settings = self.resource.settings
        headers = outgoing_headers(request, settings, self.forwarding, upstream.host)
        lines = [b"%s %s%s HTTP/1.1\r\n" % (request.method, upstream.base, self.path)]
        for name, value in headers:
            lines.append(b"%s: %s\r\n" % (name, value))
        if self.switching is not None:
            lines.append(b"Connection: Upgrade\r\nUpgrade: %s\r\n" % (self.switching,))
        body = request.content if self.has_body else None
        if body is not None and self._pass_file(connection):
            # The worker reads the file: no second copy of the body.
            lines.append(b"X-Txrouter-Body-Length: %d\r\n" % (self.length,))
            body = None
        elif body is not None:
            lines.append(b"Content-Length: %d\r\n" % (self.length,))
            body.seek(0)
        lines.append(b"\r\n")
        self.connection = connection
        connection.send(
            b"".join(lines),
            body,
            self.length if body is not None else 0,
            self,
            request.method == b"HEAD",
            self.switching,
        )
        if self.connection is connection and not self.started:
            self.timer = self.resource.reactor.callLater(
                settings.timeout, self._time_out
            )

    def _pass_file(self, connection: HTTP1Connection) -> bool:
        """
        Pass the file a body was spooled to, to a worker over its UNIX
        socket, with the head about to be sent; L{False} if it cannot go
        so (not a worker, a body in memory, a TCP connection).
        """
        transport = connection.transport
        if (
            self.resource.settings.worker_token is None
            or self.length == 0
            or not IUNIXTransport.providedBy(transport)
        ):
            return False
        try:
            descriptor = self.request.content.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            return False  # in memory (a small body)
        transport.sendFileDescriptor(descriptor)
        return True

    def request_progress(self) -> None:
        # A long upload that keeps moving is not a silent upstream: the
        # timeout bounds each pause in it, then the wait for the answer.
        if self.timer is not None and not self.started:
            self.timer.reset(self.resource.settings.timeout)

    def _time_out(self) -> None:
        self.timer = None
        upstream = self.upstream
        if self.connection is not None:
            self.connection.abort()
            self.connection = None
        self._release()
        if upstream is not None:
            upstream.failures += 1
            self.resource.group.timed_out(upstream)
        if self.client_gone:
            return
        if upstream is not None:
            self._warn(
                upstream,
                "{route}: upstream {upstream} sent no response in {timeout:g}s",
                timeout=self.resource.settings.timeout,
            )
        error_page(self.request, 504)

    def _warn(self, upstream: Upstream, format: str, **fields: Any) -> None:
        """
        Log a warning about C{upstream}, unless one was logged within
        L{txrouter.upstream.WARN_EVERY} seconds (then it is counted, and the
        next one says how many were left out).
        """
        left_out = upstream.warning_due(self.resource.reactor.seconds())
        if left_out is None:
            return
        if left_out:
            format += " ({left_out} more such line(s) left out)"
        _log.warn(
            format,
            route=self.resource.settings.name,
            upstream=upstream.name,
            left_out=left_out,
            **fields,
        )

    def _stop_timer(self) -> None:
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None

    # -- the response (ResponseReceiver)

    def response_started(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self._stop_timer()
        self.started = True
        if self.upstream is not None:
            self.upstream.timeouts = 0
        request = self.request
        request.setResponseCode(status, reason)
        # The upstream's headers, and nothing of Twisted's defaults: no
        # Content-Type where the upstream sent none.
        request.defaultContentType = None
        downstream_headers(headers, request.responseHeaders)
        connection = self.connection
        if connection is not None and not connection.body_buffered:
            # A slow client pauses reading from the upstream.
            request.registerProducer(connection, True)
            self.producing = True
            self.timer = self.resource.reactor.callLater(
                self.resource.settings.timeout, self._stalled
            )

    def response_switched(
        self, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self._stop_timer()
        self.started = True
        connection, self.connection = self.connection, None
        upstream = self.upstream
        if upstream is not None:
            upstream.timeouts = 0
        self._release()
        assert connection is not None and self.switching is not None
        request = self.request
        if self.client_gone:
            connection.abort()
            return
        # Ours (Server, Date), the upstream's (Sec-WebSocket-Accept,
        # cookies...) less hop-by-hop ones, and the switch itself.
        answer = Headers()
        for name in (b"server", b"date"):
            values = request.responseHeaders.getRawHeaders(name)
            if values:
                answer.setRawHeaders(name, values)
        downstream_headers(headers, answer)
        answer.setRawHeaders(b"connection", [b"Upgrade"])
        answer.setRawHeaders(b"upgrade", [self.switching])
        tunnel = Tunnel(
            self.resource.reactor,
            request.channel,
            connection,
            self.resource.settings.tunnel_idle_timeout,
            self.resource.tunnels,
        )
        request.channel.switch_protocols(request, reason, answer, tunnel)
        connection.join(tunnel)

    def response_body(self, data: bytes) -> None:
        if self.timer is not None:
            self.timer.reset(self.resource.settings.timeout)
        self.request.write(data)

    def _stalled(self) -> None:
        """
        The body has not moved for C{timeout} seconds.
        """
        timeout = self.resource.settings.timeout
        connection = self.connection
        if connection is not None and connection.paused:
            # Waiting for our own slow client, not for the upstream.
            self.timer = self.resource.reactor.callLater(timeout, self._stalled)
            return
        self.timer = None
        if connection is not None:
            connection.abort()
        self.response_failed(f"no data for {timeout}s in the middle of the body", False)

    def response_done(self) -> None:
        self._stop_timer()
        self.connection = None
        self._release()
        request = self.request
        if self.producing:
            request.unregisterProducer()
        request.finish()

    def response_failed(self, why: str, stale: bool) -> None:
        self._stop_timer()
        self.connection = None
        upstream = self.upstream
        self._release()
        request = self.request
        if self.producing:
            request.unregisterProducer()
        if self.client_gone or upstream is None:
            return
        if (
            stale
            and not self.retried
            and request.method in _IDEMPOTENT
            and self.resource.settings.worker_token is None
        ):
            # The upstream closed this idle connection as we reused it; a
            # worker never does (its pool outlives ours), so a worker's
            # connection lost before the answer means the worker died.
            self.retried = True
            upstream.retries += 1
            self._use(upstream, None)
            return
        upstream.failures += 1
        self._warn(upstream, "{route}: upstream {upstream} failed: {why}", why=why)
        if self.started:
            # The client must not wait for bytes that will never come.
            abort(request)
        else:
            error_page(request, 502)

    def _client_lost(self, reason: Failure) -> None:
        self.client_gone = True
        self._stop_timer()
        if self.pending is not None:
            self.pending.cancel()
        if self.connection is not None:
            self.connection.abort()
            self.connection = None
        self._release()
