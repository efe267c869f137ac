"""
HTTP/2 on TLS listeners (negotiated over ALPN): Twisted's C{H2Connection},
on the C{h2} package, within the edge's limits (L{txrouter.limits.Limits}),
as the HTTP/1.1 channel (L{txrouter.channel}) keeps them.

Each request of a connection is a stream; its request is a
L{txrouter.site.RouterRequest} as over HTTP/1.1, so the routes, the edge's
checks of C{Host} and the target, and the access log are the same. The
C{h2} package refuses what RFC 9113 calls malformed (upper-case or
control characters in names, CR, LF or NUL in values, connection-specific
fields, a body longer or shorter than its C{Content-Length}) by closing
the connection with C{GOAWAY}; on top of it, a stream is answered, and
reset without closing the connection:

  - 431 for a header field over C{max_header}, more than C{max_headers}
    fields or a head over C{max_head}; 414 for a C{:path} over
    C{max_request_line}; 400 for a field name that is not an RFC 9110
    token or a C{Content-Length} that is not a number. Names with C{_}
    are dropped, as over HTTP/1.1;
  - 413 for a body over its route's C{max_body}: at once, instead of
    C{100 Continue}, when its C{Content-Length} says so; else as it
    arrives;
  - 408 for a body that pauses for C{body_timeout}.

The connection advertises C{max_streams} (C{SETTINGS_MAX_CONCURRENT_STREAMS};
a client that opens more is closed) and a header list size that fits the
head limits (the decoder closes a connection whose list is far larger).
Twisted limits stream resets (Rapid Reset, CVE-2023-44487, with a token
bucket that closes a connection resetting more than about 33 a second
after a burst of 1,000) and the control frames a client that reads
nothing makes it buffer (C{PING} and C{SETTINGS} floods).

A client that takes nothing of a response is dropped after C{send_timeout}
(the connection, when the transport is full; one stream, with C{RST_STREAM},
when the client keeps that stream's flow-control window shut).
C{keepalive_timeout} closes a connection with no stream open. A draining
router sends C{GOAWAY} (after which new streams are refused with
C{REFUSED_STREAM}, which a client retries on a new connection), and
closes the connection once its streams are answered.
"""

from __future__ import annotations

from collections import deque
from contextlib import suppress
from typing import Any

import h2.errors
import h2.exceptions
import priority  # type: ignore[import-untyped]
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._http2 import H2Connection, H2Stream

from txrouter.limits import Limits

__all__ = ["RouterH2Connection", "take_over"]

_log = Logger()

_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
}

# The bytes a field name may have (RFC 9110 tchar, lower case: the h2
# package refuses upper case): what translate() leaves of a name is not.
_TOKEN_BYTES = (
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

# What the decoder counts per field beyond its name and value (RFC 9113
# section 6.5.2), and what L{Limits.max_head} counts: see
# L{_header_list_size}.
_HPACK_OVERHEAD = 32
_FIELD_FRAMING = 4


def _header_list_size(limits: Limits) -> int:
    """
    The C{SETTINGS_MAX_HEADER_LIST_SIZE} that takes every head the limits
    take (the decoder counts 32 bytes a field, where C{max_head} counts 4),
    and the C{:path} line.
    """
    return limits.max_head + limits.max_headers * _HPACK_OVERHEAD + 4 * _HPACK_OVERHEAD


class RouterH2Stream(H2Stream):
    """
    One request of a L{RouterH2Connection}, checked against the limits as
    its head arrives and as its body does.

    @ivar refused: the stream has been answered with a refusal, and what
        still arrives for it is dropped.
    """

    _conn: RouterH2Connection
    refused = False
    # A refusal found in the head, answered once the stream is registered.
    _refusal: tuple[int, str] | None = None
    # Whether the request has been received whole, when its body last
    # moved (reactor time), what is left of the body its route takes, and
    # since when the client has kept this stream's window shut.
    whole = False
    moved_at = 0.0
    _body_left = 0
    stalled_since: float | None = None

    def _convertHeaders(self, headers: list[tuple[bytes, bytes]]) -> None:
        conn = self._conn
        limits = conn.limits
        request = self._request
        fields = request.requestHeaders
        count = size = 0
        authority = host = length = None
        underscored = False
        refusal: tuple[int, str] | None = None
        for name, value in headers:
            if name[:1] == b":":
                if name == b":method":
                    self.command = value
                elif name == b":path":
                    self.path = value
                elif name == b":authority":
                    authority = value
                continue
            count += 1
            field = len(name) + len(value)
            size += field + _FIELD_FRAMING
            if field > limits.max_header:
                refusal = refusal or (431, "a header field is too large")
            if name.translate(None, _TOKEN_BYTES):
                # Twisted's Headers would raise, and drop the connection.
                refusal = refusal or (400, "a header field name is not a token")
                continue
            if name == b"host":
                host = value
                continue
            if name == b"content-length":
                length = value
            elif b"_" in name:
                underscored = True
            fields.addRawHeader(name, value)
        path = self.path or b""
        if len(path) > limits.max_request_line:
            refusal = (414, "the request target is too long")
        elif count > limits.max_headers:
            refusal = (431, "too many header fields")
        elif size + len(path) > limits.max_head:
            refusal = (431, "the request head is too large")
        # The h2 package has checked that :authority and Host agree.
        host = authority or host
        if host is not None:
            fields.setRawHeaders(b"host", [host])
        request.underscored_names = underscored
        self.moved_at = conn.now()
        self._body_left = limit = conn.max_body_for(host or b"", path)
        if length is not None and not length.isdigit():
            refusal = refusal or (400, "the Content-Length is not a number")
        elif length is not None and int(length) > limit:
            refusal = refusal or (
                413,
                f"the body is larger than this URL takes ({limit} bytes)",
            )
        if refusal is not None:
            self._refusal = refusal
            return
        if length is not None:
            request.gotLength(int(length))
        elif self.command in (b"GET", b"HEAD"):
            request.gotLength(0)
        else:
            request.gotLength(None)
        request.parseCookies()
        expect = fields.getRawHeaders(b"expect")
        if expect and expect[0].lower() == b"100-continue":
            self._send100Continue()

    def registered(self) -> None:
        """
        The connection knows the stream: answer a refusal its head earned.
        """
        if self._refusal is not None:
            self.refuse(*self._refusal)

    def receiveDataChunk(self, data: bytes, flowControlledLength: int) -> None:
        if self.refused:
            # Dropped, and handed back to the connection's window.
            self._conn.openStreamWindow(self.streamID, flowControlledLength)
            return
        self._body_left -= len(data)
        if self._body_left < 0:
            self._conn.openStreamWindow(self.streamID, flowControlledLength)
            self.refuse(413, "the body is larger than this URL takes")
            return
        self.moved_at = self._conn.now()
        super().receiveDataChunk(data, flowControlledLength)

    def requestComplete(self) -> None:
        if self.refused:
            return
        self.whole = True
        super().requestComplete()

    def check(self, now: float) -> None:
        """
        Refuse a body that is late; reset a stream whose window the client
        has kept shut for C{send_timeout} while its response waits.
        """
        if self.refused:
            return
        conn = self._conn
        limits = conn.limits
        if not self.whole and self.producing:
            if now - self.moved_at >= limits.body_timeout:
                self.refuse(408, f"the body paused for {limits.body_timeout:g}s")
            return
        if conn.stalled(self.streamID):
            if self.stalled_since is None:
                self.stalled_since = now
            elif now - self.stalled_since >= limits.send_timeout:
                _log.info(
                    "Resetting an HTTP/2 stream whose client took nothing for "
                    "{timeout}s: {peer}",
                    timeout=limits.send_timeout,
                    peer=str(conn.getPeer()),
                )
                self.abortConnection()
        else:
            self.stalled_since = None

    def refuse(self, code: int, why: str) -> None:
        """
        Answer C{code} with C{why}, and reset the stream if the client may
        still send on it; the connection goes on.
        """
        if self.refused:
            return
        self.refused = True
        body = f"{code} {_REASONS[code]}: {why}.\n".encode()
        self._conn.refuse_stream(self.streamID, code, body)
        self._request.connectionLost(Failure(ConnectionLost(why)))


class RouterH2Connection(H2Connection):
    """
    An HTTP/2 connection of the router's site, within its limits.

    @ivar listener: the listening port's count of open connections this
        one is part of (taken over from the HTTP/1.1 channel it replaced).
    """

    listener: Any = None
    site: Any = None
    requestFactory: Any = None
    _goaway_sent = False
    # Since when the transport has taken nothing (reactor time).
    _blocked_since: float | None = None

    def __init__(self, reactor: Any, limits: Limits) -> None:
        super().__init__(reactor)
        self.limits = limits
        self.now = reactor.seconds
        listed = _header_list_size(limits)
        self.conn.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: listed,
            },
        )
        self.conn.decoder.max_header_list_size = listed

    def connectionMade(self) -> None:
        # Frames go out as they are ready (a response's HEADERS, then its
        # DATA): without TCP_NODELAY under TLS, Nagle's algorithm holds
        # each small write behind the client's delayed ACK. Twisted sets it
        # only on a TCP transport it is given directly.
        transport: Any = self.transport
        for _ in range(4):  # TLS, then the PROXY protocol's wrapper, if any
            if transport is None or ITCPTransport.providedBy(transport):
                break
            transport = getattr(transport, "transport", None)
        if transport is not None and ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)
        super().connectionMade()

    def max_body_for(self, host: bytes, target: bytes) -> int:
        return int(self.site.max_body_for(host, target))

    # -- streams

    def _requestReceived(self, event: Any) -> None:
        if self._goaway_sent:
            # Draining: the client tries again on a new connection.
            self.conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            self._tryToWriteControlData()
            return
        stream = RouterH2Stream(
            event.stream_id,
            self,
            event.headers,
            self.requestFactory,
            self.site,
            self.factory,
        )
        # As Twisted sets a stream up: its queue, its cleanup, and its
        # place in the priority tree (where a PRIORITY frame may have put
        # it already).
        stream_id = event.stream_id
        self.streams[stream_id] = stream
        self._streamCleanupCallbacks[stream_id] = Deferred()
        self._outboundStreamQueues[stream_id] = deque()
        try:
            self.priority.insert_stream(stream_id)
        except priority.DuplicateStreamError:
            pass
        else:
            self.priority.block(stream_id)
        stream.registered()

    def _requestDataReceived(self, event: Any) -> None:
        if event.stream_id in self.streams:
            super()._requestDataReceived(event)
        else:
            # A stream refused and forgotten in this same read.
            self.openStreamWindow(event.stream_id, event.flow_controlled_length)

    def _requestEnded(self, event: Any) -> None:
        if event.stream_id in self.streams:
            super()._requestEnded(event)

    def _requestAborted(self, event: Any) -> None:
        # A stream refused while draining was never set up.
        if event.stream_id in self.streams:
            super()._requestAborted(event)

    def refuse_stream(self, stream_id: int, code: int, body: bytes) -> None:
        """
        Answer stream C{stream_id} with C{code} and C{body} (when its window
        takes it), reset it with C{NO_ERROR} if the client may still send
        on it (RFC 9113 section 8.1), and forget it once this read is done.
        """
        conn = self.conn
        try:
            sends_body = conn.local_flow_control_window(stream_id) >= len(body)
            head = [(b":status", b"%d" % code)]
            if sends_body:
                head += [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"%d" % len(body)),
                ]
            conn.send_headers(stream_id, head, end_stream=not sends_body)
            if sends_body:
                conn.send_data(stream_id, body, end_stream=True)
            if not conn.streams[stream_id].closed:
                conn.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        except (h2.exceptions.ProtocolError, KeyError):
            pass  # closed meanwhile (by the client, or the connection)
        self._tryToWriteControlData()
        self._reactor.callLater(0, self._forget, stream_id)

    def _forget(self, stream_id: int) -> None:
        if stream_id in self.streams:
            self._requestDone(stream_id)

    def _requestDone(self, streamID: int) -> None:
        super()._requestDone(streamID)
        if self._goaway_sent and not self.streams:
            self._close()

    def _close(self) -> None:
        """
        Close the connection once what is written has gone out.
        """
        transport = self.transport
        if transport is not None:
            transport.loseConnection()
            self._let_go()

    def _let_go(self) -> None:
        # The connection produces for its transport, and a TLS transport
        # closes only once its producer is unregistered: Twisted's closes
        # (a GOAWAY for a protocol error or a reset flood, the idle timeout)
        # would wait for abortTimeout.
        transport: Any = self.transport
        if transport is not None and getattr(transport, "disconnecting", False):
            transport.unregisterProducer()

    def _terminate(self, reason: Failure) -> None:
        super()._terminate(reason)
        self._let_go()

    def abortRequest(self, streamID: int) -> None:
        # A response cut short (its upstream failed, or its client took
        # nothing): INTERNAL_ERROR, where Twisted says NO_ERROR.
        # Its request learns it, as when a client resets a stream (Twisted
        # forgets the stream only, and the request would stay in flight).
        with suppress(h2.exceptions.ProtocolError):  # closed meanwhile
            self.conn.reset_stream(streamID, h2.errors.ErrorCodes.INTERNAL_ERROR)
        if self._tryToWriteControlData() and streamID in self.streams:
            self.streams[streamID].connectionLost(
                Failure(ConnectionLost("HTTP/2 stream reset by the router"))
            )
            self._requestDone(streamID)

    def stalled(self, stream_id: int) -> bool:
        """
        Whether a response waits on stream C{stream_id} for the client to
        open its flow-control window.
        """
        return bool(self._outboundStreamQueues.get(stream_id)) and (
            self.conn.local_flow_control_window(stream_id) <= 0
        )

    # -- deadlines (the site's sweep)

    def check_deadlines(self, now: float) -> None:
        blocked = self._blocked_since
        if blocked is not None and now - blocked >= self.limits.send_timeout:
            self._blocked_since = None
            _log.info(
                "Closing an HTTP/2 client that took nothing for {timeout}s: {peer}",
                timeout=self.limits.send_timeout,
                peer=str(self.getPeer()),
            )
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        for stream in list(self.streams.values()):
            stream.check(now)

    def pauseProducing(self) -> None:
        super().pauseProducing()
        if self._blocked_since is None:
            self._blocked_since = self.now()

    def resumeProducing(self) -> None:
        self._blocked_since = None
        super().resumeProducing()

    def timeoutConnection(self) -> None:
        # Idle means no stream open: one being answered, however long it
        # takes, keeps the connection (its own deadlines run).
        if self.streams:
            self.setTimeout(self.timeOut)
            return
        super().timeoutConnection()
        self._let_go()

    # -- draining

    def close_if_idle(self) -> None:
        """
        Tell the client to open no more streams here (C{GOAWAY}, once), and
        close the connection once its streams are answered.
        """
        if not self._goaway_sent and self.transport is not None:
            self._goaway_sent = True
            frame = GoAwayFrame(0)
            frame.last_stream_id = self.conn.highest_inbound_stream_id
            frame.error_code = h2.errors.ErrorCodes.NO_ERROR
            self.transport.write(self.conn.data_to_send() + frame.serialize())
        if not self.streams:
            self._close()

    def connectionLost(
        self, reason: Failure = connectionDone, _cancelTimeouts: bool = True
    ) -> None:
        self._blocked_since = None
        super().connectionLost(reason, _cancelTimeouts)
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.open -= 1


def take_over(channel: Any) -> RouterH2Connection:
    """
    The HTTP/2 connection that replaces C{channel}, an HTTP/1.1
    L{txrouter.channel.RouterChannel} of the router's site, once ALPN
    chose C{h2}: it keeps the site's limits, is swept for its deadlines,
    and counts on the channel's listener.
    """
    site = channel.site
    connection = RouterH2Connection(site.reactor, channel.limits)
    connection.listener, channel.listener = channel.listener, None
    site.connection_replaced(channel, connection)
    return connection
