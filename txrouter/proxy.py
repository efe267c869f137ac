"""
L{ProxyResource}: forward requests under a prefix to HTTP upstreams.

Each request becomes one L{_Exchange}: pick an upstream, get a pooled
connection, send the request (body re-framed with C{Content-Length},
forwarding headers set by us), then stream the response back as it arrives,
pausing the upstream while the client is slow. Failures answer for this
route only: 502 when no upstream could be reached or the answer was broken,
504 when none came within the route's C{timeout}. A connection that could
not be made is retried on the route's next upstream (nothing was sent yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import FileBodyProducer, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from txrouter.forwarding import (
    Forwarding,
    TrustedProxies,
    UnsafePath,
    downstream_headers,
    upstream_headers,
    upstream_path,
    worker_headers,
)
from txrouter.proxyclient import ProxyClient
from txrouter.upstream import Upstream, UpstreamGroup

__all__ = ["ProxyResource", "ProxySettings", "error_page"]

_log = Logger()

# Methods whose request carries a body by definition: an empty one is still
# sent with "Content-Length: 0".
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})

# Responses that never have a body, nor a Content-Length of their own.
_NO_BODY = frozenset({204, 304})

_PAGES = {
    400: b"400 Bad Request: the path is not valid.\n",
    502: b"502 Bad Gateway: the upstream server could not be reached or "
    b"gave an invalid response.\n",
    503: b"503 Service Unavailable: no server for this address is up yet; "
    b"try again shortly.\n",
    504: b"504 Gateway Timeout: the upstream server did not answer in time.\n",
}


def error_page(request: Any, code: int, retry_after: int | None = None) -> None:
    """
    Finish C{request} with a short plain-text error page.
    """
    body = _PAGES[code]
    request.setResponseCode(code)
    request.responseHeaders.setRawHeaders(
        b"content-type", [b"text/plain; charset=utf-8"]
    )
    request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
    if retry_after is not None:
        request.responseHeaders.setRawHeaders(b"retry-after", [b"%d" % retry_after])
    request.write(body)
    request.finish()


@dataclass(frozen=True)
class ProxySettings:
    """
    What a proxy route needs besides its upstreams.

    @ivar name: the route, for logs (C{routes.yaml:12: routes['/api/']}).
    @ivar timeout: seconds to wait for the response headers once sent.
    @ivar preserve_host: pass the client's C{Host} on, rather than the
        upstream's own.
    @ivar trusted: peers whose forwarding headers are extended.
    @ivar worker_token: set when the upstreams are our own worker processes:
        they get the client's headers untouched plus the connection's facts
        (L{txrouter.forwarding.worker_headers}).
    """

    name: str
    timeout: float
    preserve_host: bool
    trusted: TrustedProxies
    worker_token: bytes | None = None


class ProxyResource(Resource):
    """
    Forwards every request below its prefix to one of C{group}'s upstreams.
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

    def render(self, request: Any) -> int:
        _Exchange(self, request).start()
        return NOT_DONE_YET


def _forwarding(request: Any, trusted: TrustedProxies) -> Forwarding:
    peer = getattr(request.getClientAddress(), "host", None)
    host = request.getHeader(b"host") or request.getRequestHostname()
    prefix = b"/" + b"/".join(request.prepath) if request.prepath else b""
    return Forwarding(
        client=peer,
        scheme=b"https" if request.isSecure() else b"http",
        host=host,
        prefix=prefix,
        trusted=peer is not None and peer in trusted,
    )


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
    }


class _Exchange:
    """
    One client request and its trip upstream.
    """

    def __init__(self, resource: ProxyResource, request: Any) -> None:
        self.resource = resource
        self.request = request
        self.tried: list[Upstream] = []
        self.pending: Deferred[Any] | None = None
        self.timer: IDelayedCall | None = None
        self.timed_out = False
        self.client_gone = False
        self.relay: _Relay | None = None
        self.connection: Any = None

    def start(self) -> None:
        request = self.request
        request.notifyFinish().addErrback(self._client_lost)
        raw_path, _, query = request.uri.partition(b"?")
        segments = raw_path.split(b"/")[1:]
        self.rest = segments[len(request.prepath) :]
        self.query = query
        self.forwarding = _forwarding(request, self.resource.settings.trusted)
        try:
            upstream_path(b"/", self.rest, b"")
        except UnsafePath:
            error_page(request, 400)
            return
        self._attempt()

    def _attempt(self) -> None:
        group = self.resource.group
        upstream = group.choose(exclude=self.tried)
        if upstream is None:
            if not group.any_ready():
                # Workers starting or restarting: come back in a moment.
                error_page(self.request, 503, retry_after=1)
            else:
                error_page(self.request, 502)
            return
        self.tried.append(upstream)
        upstream.in_flight += 1
        d = self.resource.client.connect(upstream)
        d.addCallback(self._connected, upstream)
        d.addCallbacks(
            self._response,
            self._failed,
            callbackArgs=(upstream,),
            errbackArgs=(upstream,),
        )
        if not d.called:
            self.pending = d

    def _connected(self, connection: Any, upstream: Upstream) -> Deferred[IResponse]:
        request = self.request
        settings = self.resource.settings
        if settings.worker_token is not None:
            headers = worker_headers(
                request.requestHeaders, settings.worker_token, _facts(request)
            )
        else:
            host = request.getHeader(b"host") if settings.preserve_host else None
            headers = upstream_headers(
                request.requestHeaders, self.forwarding, host or upstream.host
            )
        body = None
        content = request.content
        content.seek(0, 2)
        if content.tell() or request.method in _BODY_METHODS:
            content.seek(0)
            body = FileBodyProducer(content, self.resource.client.cooperator)
        path = upstream_path(upstream.base, self.rest, self.query)
        self.connection = connection
        sent = self.resource.client.send(
            connection, request.method, path, headers, body
        )
        self.pending = sent
        self.timer = self.resource.reactor.callLater(settings.timeout, self._time_out)
        return sent

    def _time_out(self) -> None:
        self.timed_out = True
        if self.pending is not None:
            self.pending.cancel()

    def _stop_timer(self) -> None:
        self.pending = None
        if self.timer is not None and self.timer.active():
            self.timer.cancel()

    def _response(self, response: IResponse, upstream: Upstream) -> None:
        self._stop_timer()
        if self.client_gone:
            upstream.in_flight -= 1
            response.deliverBody(_Discard())
            return
        request = self.request
        request.setResponseCode(response.code, response.phrase)
        # The upstream's headers, and nothing of Twisted's defaults: no
        # Content-Type where the upstream sent none.
        request.defaultContentType = None
        downstream_headers(
            response.headers,
            request.responseHeaders,
            self.resource.client.connection_tokens(self.connection),
        )
        if (
            response.length is not UNKNOWN_LENGTH
            and request.method != b"HEAD"
            and response.code not in _NO_BODY
            and response.code >= 200
        ):
            # Twisted's client keeps Content-Length out of the headers; send
            # it on so the client gets the body unchunked.
            request.responseHeaders.setRawHeaders(
                b"content-length", [b"%d" % response.length]
            )
        self.relay = _Relay(self, upstream)
        response.deliverBody(self.relay)

    def _failed(self, failure: Failure, upstream: Upstream) -> None:
        self._stop_timer()
        upstream.in_flight -= 1
        if self.client_gone:
            return
        name = self.resource.settings.name
        if failure.check(ConnectError, DNSLookupError, TimeoutError):
            self.resource.group.mark_down(upstream)
            _log.warn(
                "{route}: cannot connect to upstream {upstream}: {why}",
                route=name,
                upstream=upstream.name,
                why=failure.getErrorMessage(),
            )
            self._attempt()
            return
        if self.timed_out:
            _log.warn(
                "{route}: upstream {upstream} sent no response in {timeout}s",
                route=name,
                upstream=upstream.name,
                timeout=self.resource.settings.timeout,
            )
            error_page(self.request, 504)
            return
        _log.warn(
            "{route}: upstream {upstream} failed: {why}",
            route=name,
            upstream=upstream.name,
            why=_reasons(failure),
        )
        error_page(self.request, 502)

    def _client_lost(self, reason: Failure) -> None:
        self.client_gone = True
        if self.pending is not None:
            self.pending.cancel()
        if self.relay is not None:
            self.relay.stop()


def _reasons(failure: Failure) -> str:
    inner = getattr(failure.value, "reasons", None)
    if inner:
        return "; ".join(
            r.getErrorMessage() for r in inner if not r.check(CancelledError)
        )
    return failure.getErrorMessage()


class _Relay(Protocol):
    """
    Streams an upstream response body to the client, with back-pressure.
    """

    def __init__(self, exchange: _Exchange, upstream: Upstream) -> None:
        self.exchange = exchange
        self.request = exchange.request
        self.upstream = upstream

    def connectionMade(self) -> None:
        # A slow client pauses reading from the upstream.
        self.request.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        self.request.write(data)

    def stop(self) -> None:
        """
        The client went away: stop reading and drop the upstream connection.
        """
        if self.transport is not None:
            # The transport of a response body is a push producer.
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        self.upstream.in_flight -= 1
        if self.exchange.client_gone:
            return
        self.request.unregisterProducer()
        if reason.check(ResponseDone, PotentialDataLoss):
            self.request.finish()
            return
        _log.warn(
            "{route}: upstream {upstream} broke off its response: {why}",
            route=self.exchange.resource.settings.name,
            upstream=self.upstream.name,
            why=_reasons(reason),
        )
        # The client must not wait for bytes that will never come.
        self.request.transport.abortConnection()


class _Discard(Protocol):
    """
    Reads and drops a response nobody wants any more.
    """

    def connectionMade(self) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]
