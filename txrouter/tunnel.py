"""
L{Tunnel}: a client connection and an upstream connection joined byte for
byte, once the upstream has answered C{101 Switching Protocols} to a
request that asked to switch (a WebSocket handshake); L{Tunnels}, the open
tunnels of one route and their limit.

    tunnel = Tunnel(reactor, channel, connection, idle_timeout, tunnels)
    channel.switch_protocols(request, reason, headers, tunnel)
    connection.join(tunnel)

Each direction has back-pressure: while one side's transport holds more
than it can send, the router stops reading the other side, so a peer that
stops reading holds a transport's buffer in the router, not its stream.
A side that closes closes the other, once what is buffered for it has been
written (or after L{CLOSE_GRACE} seconds, if it takes nothing). A tunnel
with no byte either way for C{idle_timeout} seconds is closed (by the
site's sweep, L{Tunnel.check}), and so is one whose client takes nothing
for the edge's C{send_timeout} (the channel's own deadline).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

__all__ = ["CLOSE_GRACE", "Tunnel", "Tunnels"]

_log = Logger()

#: Seconds a side that is closing has to take what is left for it, once
#: the other side has closed.
CLOSE_GRACE = 30.0


class Tunnels:
    """
    The tunnels of one route: those open and those being opened (a
    handshake sent upstream), against the route's C{max_tunnels}.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: set[Tunnel] = set()
        self.opening = 0
        #: Tunnels opened so far (a counter for the metrics).
        self.opened = 0

    def full(self) -> bool:
        """
        Whether no other tunnel may be opened now.
        """
        return len(self.open) + self.opening >= self.limit

    def close_all(self) -> None:
        """
        Close every open tunnel (its route is gone, after a reload).
        """
        if self.open:
            _log.info(
                "Closing {count} tunnel(s) of a retired route", count=len(self.open)
            )
        for tunnel in list(self.open):
            tunnel.close()


@implementer(IPushProducer)
class _ClientReading:
    """
    The client side's reading, as a producer for the upstream's transport:
    while the upstream takes no more, nothing more is read from the client.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def pauseProducing(self) -> None:
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._transport.resumeProducing()

    def stopProducing(self) -> None:
        pass  # the tunnel hears of the upstream's end from its protocol


class Tunnel:
    """
    One client connection (a L{txrouter.channel.RouterChannel}'s transport)
    joined to one upstream connection (a
    L{txrouter.http1client.HTTP1Connection}).

    @ivar sent: bytes from the client to the upstream.
    @ivar received: bytes from the upstream to the client.
    """

    def __init__(
        self,
        reactor: Any,
        channel: Any,
        connection: Any,
        idle_timeout: float,
        tunnels: Tunnels,
    ) -> None:
        """
        @param tunnels: the route's; the tunnel is in it, and in its
            site's (for the drain on SIGTERM), until both sides are closed.
        """
        self._reactor = reactor
        self.channel = channel
        self.connection = connection
        self.idle_timeout = idle_timeout
        self._tunnels = tunnels
        self.sent = self.received = 0
        self.last_active = reactor.seconds()
        self._client_open = self._upstream_open = True
        self._client_closing = self._upstream_closing = False
        self._grace: IDelayedCall | None = None
        tunnels.open.add(self)
        tunnels.opened += 1

    def start(self, early: bytes) -> None:
        """
        Start carrying bytes both ways.

        @param early: what the client sent after its request, before the
            switch: the first bytes of the new protocol.
        """
        upstream = self.connection.transport
        upstream.registerProducer(_ClientReading(self.channel.transport), True)
        if early:
            self.from_client(early)

    # -- the bytes

    def from_client(self, data: bytes) -> None:
        self.sent += len(data)
        self.last_active = self._reactor.seconds()
        self.connection.transport.write(data)

    def from_upstream(self, data: bytes) -> None:
        self.received += len(data)
        self.last_active = self._reactor.seconds()
        self.channel.transport.write(data)

    # -- back-pressure from the client's side

    def client_full(self) -> None:
        """
        The client takes no more for now: stop reading the upstream.
        """
        self.connection.pauseProducing()

    def client_drained(self) -> None:
        self.connection.resumeProducing()

    # -- the ends

    def check(self, now: float) -> None:
        """
        Close the tunnel if nothing went either way for C{idle_timeout}.
        """
        if now - self.last_active >= self.idle_timeout:
            _log.info(
                "Closing a tunnel idle for {timeout:g}s: {peer}",
                timeout=self.idle_timeout,
                peer=str(self.channel.transport.getPeer()),
            )
            self.close()

    def close(self) -> None:
        """
        Close both sides, each once what is buffered for it is written.
        """
        if self._client_open:
            self._close_client()
        if self._upstream_open:
            self._close_upstream()
        self._start_grace()

    # A TLS transport does not close while a producer is registered with
    # it: each side's is let go first.

    def _close_client(self) -> None:
        if not self._client_closing:
            self._client_closing = True
            self.channel.loseConnection()

    def _close_upstream(self) -> None:
        if not self._upstream_closing:
            self._upstream_closing = True
            transport = self.connection.transport
            transport.unregisterProducer()
            transport.loseConnection()

    def abort(self) -> None:
        """
        Close both sides at once.
        """
        if self._client_open:
            self.channel.transport.abortConnection()
        if self._upstream_open:
            self.connection.transport.abortConnection()

    def client_lost(self) -> None:
        self._client_open = False
        if self._upstream_open:
            self._close_upstream()
            self._start_grace()
        else:
            self._ended()

    def upstream_lost(self) -> None:
        self._upstream_open = False
        if self._client_open:
            self._close_client()
            self._start_grace()
        else:
            self._ended()

    def _start_grace(self) -> None:
        if self._grace is None:
            self._grace = self._reactor.callLater(CLOSE_GRACE, self.abort)

    def _ended(self) -> None:
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._tunnels.open.discard(self)
        site = getattr(self.channel, "site", None)
        if site is not None:
            site.tunnel_ended(self)
