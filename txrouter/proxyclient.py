"""
L{ProxyClient}: the one HTTP/1.1 client of a txrouter process, with a
persistent connection pool shared by every proxy route (and, later, by the
routes to worker processes).

It is Twisted's own client below C{Agent}: C{HTTPConnectionPool} hands out
C{HTTP11ClientProtocol} connections per upstream key, and each request is
written on one. Skipping C{Agent} saves parsing a URL and building an
endpoint per request, which measurement showed to be a large share of the
proxy's cost; the upstream's endpoint is built once, in L{Upstream}.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import Cooperator

# Request is public in twisted.web.iweb as IClientRequest, but its one
# implementation lives in a private module; Agent builds the same object.
from twisted.web._newclient import Request as ClientRequest
from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse

from txrouter.forwarding import connection_tokens
from txrouter.upstream import Upstream

__all__ = ["ProxyClient", "ProxyClientService"]


class _QuietFactory(_HTTP11ClientFactory):
    # One log line per upstream connection opened and closed is noise.
    noisy = False


class ProxyClient:
    """
    Sends requests to upstreams over pooled persistent connections.

    @ivar pool: the connection pool, keyed by L{Upstream.key}.
    """

    #: Idle connections kept per upstream; more are opened under load and
    #: closed when they fall idle beyond this number.
    idle_per_upstream = 32
    #: Seconds an idle pooled connection is kept.
    idle_timeout = 60

    def __init__(self, reactor: Any) -> None:
        # Request bodies are written by a cooperator on our reactor.
        self.cooperator = Cooperator(scheduler=lambda work: reactor.callLater(0, work))
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool._factory = _QuietFactory
        self.pool.maxPersistentPerHost = self.idle_per_upstream
        self.pool.cachedConnectionTimeout = self.idle_timeout

    def connect(self, upstream: Upstream) -> Deferred[Any]:
        """
        A connection to C{upstream}, from the pool or new.
        """
        return self.pool.getConnection(upstream.key, upstream.endpoint)

    @staticmethod
    def send(
        connection: Any,
        method: bytes,
        path: bytes,
        headers: Headers,
        body: IBodyProducer | None,
    ) -> Deferred[IResponse]:
        """
        Send one request on a connection from L{connect}.

        @return: fires with the response once its headers have arrived.
        """
        request = ClientRequest(method, path, headers, body, persistent=True)
        result: Deferred[IResponse] = connection.request(request)
        return result

    @staticmethod
    def connection_tokens(connection: Any) -> set[bytes]:
        """
        The header names that the response now arriving on C{connection}
        lists in its C{Connection} header (RFC 9110 section 7.6.1): they are
        hop-by-hop too. Twisted's parser files C{Connection} apart from the
        response's headers, so it is read from the parser; if a future
        Twisted stores it elsewhere this finds nothing, and only the
        standard hop-by-hop headers are removed.
        """
        protocol = getattr(connection, "_clientProtocol", connection)
        parser = getattr(protocol, "_parser", None)
        headers = getattr(parser, "connHeaders", None)
        return connection_tokens(headers) if headers is not None else set()

    def close(self) -> Deferred[None]:
        """
        Close every idle pooled connection.
        """
        return self.pool.closeCachedConnections()  # type: ignore[no-any-return]


class ProxyClientService(Service):
    """
    Closes the client's pooled connections when the process stops.
    """

    def __init__(self, client: ProxyClient) -> None:
        self.client = client

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.client.close()
