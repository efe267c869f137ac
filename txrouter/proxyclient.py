"""
L{ProxyClient}: the one HTTP/1.1 client of a txrouter process, with a
persistent connection pool shared by every proxy route and by the routes
to worker processes (see L{txrouter.http1client}).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from txrouter.http1client import ConnectionPool

__all__ = ["ProxyClient", "ProxyClientService"]


class ProxyClient:
    """
    The upstream connections of one process.

    @ivar pool: idle persistent connections, keyed by L{Upstream.key}.
    """

    def __init__(self, reactor: Any) -> None:
        self.pool = ConnectionPool(reactor)

    def close(self) -> Deferred[None]:
        """
        Close every idle pooled connection.
        """
        return self.pool.close()


class ProxyClientService(Service):
    """
    Closes the client's pooled connections when the process stops.
    """

    def __init__(self, client: ProxyClient) -> None:
        self.client = client

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.client.close()
