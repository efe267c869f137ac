"""
L{RouterChannel}: Twisted's C{HTTPChannel} with llhttp as its parser.

Every byte a client sends is parsed by llhttp (through C{httptools}), the
parser of Node.js, strict by default: obs-folded headers, bare CR or LF,
control characters, header names that are not tokens, any Content-Length /
Transfer-Encoding ambiguity and chunk sizes that overflow are a 400; other
transfer codings before C{chunked} a 501 and versions but HTTP/1.1 and
HTTP/1.0 a 505; each closes the connection. Its callbacks build
the L{txrouter.site.RouterRequest}s, so the site, the resource tree and the
requests stay Twisted's own; Twisted's line parser is not used.

The callbacks also keep the edge's limits (L{txrouter.limits.Limits}): the
size of the request line (414) and of the header fields (431), the time to
receive a head and the pauses in a body (408), a client that stops reading
(closed). C{max_body} is kept once the request's route is known, when its
head ends: a C{Content-Length} over it is a 413 sent instead of
C{100 Continue}, and a chunked body is counted as it arrives.

Requests are answered one at a time, in order. Once a request is whole,
what follows it is kept as bytes until it has been answered (reading pauses
when they pass C{_optimisticEagerReadSize}, as in Twisted), and only then
parsed: requests parsed ahead would take far more memory than their bytes.
Bytes are parsed a slice at a time (a body's bytes at once), so that a read
full of pipelined requests is not parsed whole either. A refusal waits for
the answers to the requests before it, since a client reads answers in
order.

A request that asks to switch protocols (C{Upgrade}) is answered like any
other, and what the client sends after it is kept meanwhile: when its
route's answer switches (L{RouterChannel.switch_protocols}, a WebSocket
through the proxy engine), those bytes and all that follow go to a
L{txrouter.tunnel.Tunnel}; otherwise they are parsed as the next request.

A head or body deadline counts only the time in which the router waits for
the client: it stands still while an earlier request of the connection is
being answered and while the router holds reading because the client takes
nothing of its response (then C{send_timeout} runs instead).
"""

from __future__ import annotations

from typing import Any

import httptools
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

from txrouter.limits import Limits

__all__ = ["RouterChannel"]

_log = Logger()

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    505: b"HTTP Version Not Supported",
}

_VERSIONS = {"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0"}

# What the callbacks do not see of a head's bytes, counted towards
# max_head so that it bounds about the head as sent: ": " and CRLF of each
# field, and the method, spaces, version and CRLFs around the target.
_FIELD_FRAMING = 4
_LINE_FRAMING = 16
# The most bytes parsed at once, but for a body's: what a pipelining client
# sends after a request is kept as bytes (see above), the requests in one
# slice (about 30 tiny ones) excepted.
_SLICE = 1024
# What that estimate may miss (spaces around values, a long method): llhttp
# buffers a header until it ends, so a raw count of the bytes of an
# unfinished head, bounded a little above C{max_head}, bounds the memory a
# never-ending header can take.
_RAW_SLACK = 128


def _never() -> float:
    return 0.0


class _Refused(Exception):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class _Stop(Exception):
    """
    Raised in a callback to stop llhttp: nothing more is read.
    """


class _Head:
    """
    What llhttp found in a request's head, kept with the request until it
    is its turn to be answered.
    """

    __slots__ = ("closes", "expects_continue", "method", "target", "version", "whole")

    def __init__(
        self, method: bytes, target: bytes, version: bytes, closes: bool
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        #: Whether the connection ends with this request.
        self.closes = closes
        self.expects_continue = False
        #: Whether its body has been received whole.
        self.whole = False


class RouterChannel(HTTPChannel):
    """
    An C{HTTPChannel} whose requests llhttp parses, within the edge's limits.
    """

    limits = Limits()
    #: Set by the site that builds it.
    site: Any = None
    #: The listening port's count of open connections this one is part of
    #: (set by the site that builds it).
    listener: Any = None

    # Whether the connection is being refused, or reads no more (its last
    # request has been received).
    _refusing = False
    _read_all = False
    # A refusal waiting for the requests before it to be answered.
    _held: _Refused | None = None
    # The bytes received after a whole request, kept until it is answered.
    _kept_size = 0
    # Whether the loop that answers requests in turn is running.
    _turning = False
    # Once the connection has switched protocols: the tunnel that carries
    # its bytes (L{switch_protocols}).
    _tunnel: Any = None

    # The request whose head or body is being parsed, and what is left of
    # the body its route takes.
    _parsing: Any = None
    _body_left = 0

    # When the head or body now being received must have arrived or moved
    # (and which), and when a client that takes nothing is dropped: checked
    # by the site's sweep (L{check_deadlines}) rather than a timer per
    # request, which would cost more than the rest of the channel.
    _deadline: float | None = None
    _waiting_for = ""
    _send_deadline: float | None = None
    # The seconds left of the head or body deadline while the router does
    # not wait for the client (answering, or holding reading while the
    # client takes nothing): C{_deadline} is then L{None}, and set again
    # from this when the router waits for the client once more.
    _left: float | None = None

    def connectionMade(self) -> None:
        self._now = self.site.reactor.seconds if self.site is not None else _never
        self._parser = httptools.HttpRequestParser(self)
        self._raw_limit = self.limits.max_head + _RAW_SLACK
        self._in_body = False
        self._raw = 0
        # What is left to receive of a body with a Content-Length.
        self._content_left = 0
        self._kept: list[bytes] = []
        super().connectionMade()

    # -- reading

    def dataReceived(self, data: bytes) -> None:
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.from_client(data)
            return
        if self._refusing or self._read_all or self._held is not None:
            return
        self.resetTimeout()
        if self._kept or self._whole_waiting():
            self._keep(data)
        else:
            self._read(data)

    def _whole_waiting(self) -> bool:
        """
        Whether a whole request waits for its answer, or is being answered.
        """
        requests = self.requests
        return bool(requests) and requests[0] is not self._parsing

    def _keep(self, data: bytes) -> None:
        self._kept.append(data)
        self._kept_size += len(data)
        if (
            self._kept_size > self._optimisticEagerReadSize
            and not self._waitingForTransport
        ):
            self._networkProducer.pauseProducing()

    def _read(self, data: bytes) -> None:
        """
        Parse C{data}, a slice at a time, until a request is whole: keep
        the rest until it is answered.
        """
        start, size = 0, len(data)
        try:
            while start < size:
                if self._whole_waiting():
                    self._keep(data[start:])
                    return
                left = size - start
                if self._in_body and self._content_left >= left:
                    end = size  # all of it is body
                else:
                    end = start + min(left, _SLICE)
                # Set back to 0 when a head, a chunk's size line or a message
                # ends, less the body: what is left is the bytes of a head, a
                # chunk's size line or trailer fields still arriving, which
                # llhttp keeps until they end.
                self._raw += end - start
                self._feed(data[start:end] if start or end < size else data)
                start = end
                if self._refusing or self._read_all or self._held is not None:
                    return
            if self._raw > self._raw_limit and not self._read_all:
                what = "trailer fields are" if self._in_body else "request head is"
                raise _Refused(431, f"the {what} too large")
        except _Refused as refused:
            self._refuse_in_turn(refused)

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            # One of our callbacks raised (llhttp wraps what they raise).
            if isinstance(e.__context__, _Stop):
                return
            raise (e.__context__ or e) from None
        except httptools.HttpParserUpgrade as upgrade:
            # What follows a request asking to switch protocols belongs to
            # the new protocol if its answer switches (L{switch_protocols}),
            # and is the next request if not: kept until it is answered.
            self._parser = httptools.HttpRequestParser(self)
            rest = data[upgrade.args[0] :]
            if not rest or self._read_all:
                return
            if self._whole_waiting():
                self._keep(rest)
            else:
                self._feed(rest)  # answered already, as a plain request
        except httptools.HttpParserError as e:
            raise _Refused(400, f"not valid HTTP/1.1 ({e})") from None

    # -- llhttp's callbacks

    def on_message_begin(self) -> None:
        if self._refusing or self._read_all:
            raise _Stop()
        # Never "queued" (a deprecated mode of Twisted's): a request writes
        # nothing before its turn, since it is answered only then.
        request = self.requestFactory(self)
        self.requests.append(request)
        self._parsing = request
        self._url: list[bytes] = []
        self._url_size = self._head_size = self._fields = 0
        self._underscored = False
        self._length: bytes | None = None
        self._chunked = False
        self._expect = False
        self._head_started()

    def on_url(self, url: bytes) -> None:
        self._url_size += len(url)
        if self._url_size > self.limits.max_request_line:
            raise _Refused(414, "the request target is too long")
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self.limits
        size = len(name) + len(value)
        self._head_size += size + _FIELD_FRAMING
        self._fields += 1
        if size > limits.max_header:
            raise _Refused(431, "a header field is too large")
        if self._fields > limits.max_headers:
            raise _Refused(431, "too many header fields")
        if self._head_size + self._url_size + _LINE_FRAMING > limits.max_head:
            raise _Refused(431, "the request head is too large")
        if self._in_body:
            return  # a trailer field: counted, and dropped as Twisted does
        value = value.strip(b" \t")
        named = len(name)
        if named == 14 or named == 17 or named == 6:
            lower = name.lower()
            if lower == b"content-length":
                self._length = value
            elif lower == b"transfer-encoding":
                self._transfer_coding(value)
            elif lower == b"expect":
                self._expect = value.lower() == b"100-continue"
        if b"_" in name:
            self._underscored = True
        self._parsing.requestHeaders.addRawHeader(name, value)

    def _transfer_coding(self, value: bytes) -> None:
        # llhttp takes other codings before a final "chunked", but the
        # router decodes none (RFC 9112 section 6.1: 501); without a final
        # "chunked", or with it twice, the body has no known length (400).
        if self._chunked or value.rpartition(b",")[2].strip().lower() != b"chunked":
            raise _Refused(400, "not valid HTTP/1.1 (the body's length is unknown)")
        if value.lower() != b"chunked":
            raise _Refused(501, "no transfer coding but 'chunked' is served")
        self._chunked = True

    def on_headers_complete(self) -> None:
        parser = self._parser
        request = self._parsing
        version = _VERSIONS.get(parser.get_http_version())
        if version is None:
            raise _Refused(505, "only HTTP/1.1 and HTTP/1.0 are served")
        length = None if self._chunked else int(self._length or 0)
        head = _Head(
            parser.get_method(),
            b"".join(self._url),
            version,
            not (version == b"HTTP/1.1" and parser.should_keep_alive()),
        )
        if parser.should_upgrade():
            if length != 0:
                # llhttp takes what follows the head for the new protocol,
                # where the request says it is its body.
                raise _Refused(
                    400, "a request to switch protocols cannot have a body here"
                )
            if version == b"HTTP/1.1" and not head.closes:
                # A route that tunnels may switch (L{txrouter.proxy}).
                asked = request.requestHeaders.getRawHeaders(b"upgrade")
                if asked:
                    request.upgrade = b",".join(asked).lower()
        # The edge drops header names with "_": say whether there are any.
        request.underscored_names = self._underscored
        limit = self.limits.max_body
        site = self.site
        if site is not None and getattr(site.resource, "has_own_max_body", False):
            host = request.requestHeaders.getRawHeaders(b"host", [b""])[-1]
            limit = site.max_body_for(host, head.target)
        if length is not None and length > limit:
            raise _Refused(
                413, f"the body is larger than this URL takes ({limit} bytes)"
            )
        head.expects_continue = self._expect and version == b"HTTP/1.1"
        request.head = head
        request.gotLength(length)
        self._body_left = limit
        self._content_left = length or 0
        self._in_body = True
        self._raw = 0
        self._head_done()
        if not self._handlingRequest:
            self._answer_in_turn()

    def on_chunk_header(self) -> None:
        self._raw = 0

    def on_body(self, body: bytes) -> None:
        self._raw -= len(body)
        self._content_left -= len(body)
        self._body_left -= len(body)
        if self._body_left < 0:
            raise _Refused(413, "the body is larger than this URL takes")
        self._parsing.handleContentChunk(body)
        self._body_moved()

    def on_message_complete(self) -> None:
        request, self._parsing = self._parsing, None
        head = request.head
        head.whole = True
        self._in_body = False
        self._raw = 0
        self._message_done()
        if head.closes:
            # What a client sends after a request that ends the connection
            # is not read.
            self._read_all = True
        if not self._handlingRequest:
            self._answer_in_turn()
        if self._read_all or self._refusing:
            raise _Stop()

    # -- answering in turn

    def _answer_in_turn(self) -> None:
        """
        Start the turn of the first request waiting, answer it once it is
        whole, and go on with the next while they are answered at once; if
        none is left before a refusal, refuse.
        """
        if self._turning:
            return  # the loop below, further up the stack, goes on
        self._turning = True
        try:
            while not self._handlingRequest and not self._refusing:
                if self._kept and not self._whole_waiting():
                    # What arrived while the requests before were answered,
                    # read now (up to the next whole request).
                    data = b"".join(self._kept)
                    self._kept, self._kept_size = [], 0
                    self._read(data)
                    continue
                if not self.requests:
                    held = self._held
                    if held is not None:
                        self._held = None
                        self.refuse(held.code, str(held))
                    return
                request = self.requests[0]
                head = request.head
                if head is None:
                    return  # its head is still arriving
                if not request.turn_started:
                    request.turn_started = True
                    request.parseCookies()
                    self.persistent = self._persists(request, head)
                    if head.expects_continue and not head.whole:
                        self._send100Continue()
                if not head.whole:
                    return  # its body is still arriving
                self._answer(request, head)
        finally:
            self._turning = False

    def _answer(self, request: Any, head: _Head) -> None:
        self._handlingRequest = True
        self._stand_still()
        request.requestReceived(head.method, head.target, head.version)

    def _persists(self, request: Any, head: _Head) -> bool:
        """
        Whether the connection stays open after C{request}, as Twisted's
        C{checkPersistence} decides (only HTTP/1.1 without C{close}), with
        llhttp's reading of C{Connection}, which finds C{close} in any list.
        """
        if not head.closes:
            return True
        if head.version == b"HTTP/1.1":
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
        return False

    # -- switching protocols

    @property
    def tunnelled(self) -> bool:
        """
        Whether the connection has switched protocols (it carries no more
        HTTP requests).
        """
        return self._tunnel is not None

    def switch_protocols(
        self, request: Any, reason: bytes, headers: Any, tunnel: Any
    ) -> None:
        """
        Answer C{request} C{101 Switching Protocols} with C{headers} (a
        L{Headers}), and from then on carry the connection's bytes both
        ways through C{tunnel} (a L{txrouter.tunnel.Tunnel}): the bytes the
        client sent after the request first.
        """
        self._tunnel = tunnel
        self._deadline = self._left = None
        self._waiting_for = ""
        self.setTimeout(None)  # the tunnel's own idle timeout runs instead
        request.setResponseCode(101, reason)
        # Written here, without Twisted's framing of a body: none follows.
        request.startedWriting = 1
        self.writeHeaders(b"HTTP/1.1", b"101", reason, headers)
        site = self.site
        if site is not None:
            site.tunnel_opened(tunnel)
        request.finish()  # logged and counted as a 101; see requestDone

    def _start_tunnel(self) -> None:
        early = b"".join(self._kept)
        self._kept, self._kept_size = [], 0
        self._handlingRequest = False
        self._networkProducer.resumeProducing()
        self._tunnel.start(early)

    def requestDone(self, request: Any) -> None:
        if request is not self.requests[0]:
            raise TypeError(request)
        del self.requests[0]
        if self._tunnel is not None:
            self._start_tunnel()
            return
        if not self._waitingForTransport:
            self._networkProducer.resumeProducing()
        if not self.persistent:
            # After an answer that closes the connection, no request is
            # read: none is late.
            self._left = None
            self.loseConnection()
            return
        self._handlingRequest = False
        self.resetTimeout()  # idle from now
        if self._left is not None and self._send_deadline is None:
            self._go_on()
        self._answer_in_turn()

    def _refuse_in_turn(self, refused: _Refused) -> None:
        """
        Refuse once the requests received before the refused one are
        answered: a pipelining client reads answers in order, and an early
        error would read as the answer to an earlier request.
        """
        parsing, self._parsing = self._parsing, None
        if parsing is not None:
            # The refused request: never answered.
            self.requests.remove(parsing)
            content = getattr(parsing, "content", None)
            if content is not None:
                content.close()
        if self._refusing:
            return
        if self.requests or self._handlingRequest:
            self._held = refused
            self._deadline = self._left = None
            return
        self.refuse(refused.code, str(refused))

    # -- deadlines

    # While the router does not wait for the client, a deadline that starts
    # is kept in C{_left}, counted once it waits again.

    def _head_started(self) -> None:
        if self._waiting_for != "head":
            self._waiting_for = "head"
            if self._handlingRequest or self._send_deadline is not None:
                self._left = self.limits.head_timeout
            else:
                self._deadline = self._now() + self.limits.head_timeout

    def _head_done(self) -> None:
        self._waiting_for = "body"
        if self._handlingRequest or self._send_deadline is not None:
            self._left = self.limits.body_timeout
        else:
            self._deadline = self._now() + self.limits.body_timeout

    def _body_moved(self) -> None:
        if self._handlingRequest or self._send_deadline is not None:
            self._left = self.limits.body_timeout
        else:
            self._deadline = self._now() + self.limits.body_timeout

    def _message_done(self) -> None:
        self._waiting_for = ""
        self._deadline = None
        self._left = None

    def _stand_still(self) -> None:
        """
        The router stops waiting for the client: keep what is left of the
        running deadline, if any.
        """
        if self._deadline is not None:
            self._left = self._deadline - self._now()
            self._deadline = None

    def _go_on(self) -> None:
        """
        The router waits for the client again: the deadline runs on.
        """
        if self._left is not None:
            self._deadline = self._now() + self._left
            self._left = None

    def check_deadlines(self, now: float) -> None:
        """
        Refuse a head or body that is late, drop a client that has taken
        nothing for too long, close an idle tunnel (called by the site's
        sweep).
        """
        if self._tunnel is not None:
            if self._send_deadline is not None and now >= self._send_deadline:
                self._not_reading()
            else:
                self._tunnel.check(now)
            return
        if self._deadline is not None and now >= self._deadline:
            if self._waiting_for == "head":
                why = (
                    f"the request head did not arrive in {self.limits.head_timeout:g}s"
                )
            else:
                why = f"the body paused for {self.limits.body_timeout:g}s"
            self.refuse(408, why)
        elif self._send_deadline is not None and now >= self._send_deadline:
            self._not_reading()

    # -- a client that stops reading

    def pauseProducing(self) -> None:
        # The transport takes no more: Twisted stops reading (unless it is
        # answering), and the time is no longer the sender's to count. A
        # tunnel stops reading its upstream instead: the client may still
        # send.
        if self._tunnel is not None:
            self._tunnel.client_full()
        else:
            super().pauseProducing()
        if self._send_deadline is None:
            self._send_deadline = self._now() + self.limits.send_timeout
            self._stand_still()

    def resumeProducing(self) -> None:
        if self._tunnel is not None:
            self._send_deadline = None
            self._tunnel.client_drained()
            return
        if self._send_deadline is not None:
            self._send_deadline = None
            if not self._handlingRequest:
                self._go_on()
            # Idle, if it is, from now: the response has gone out.
            self.resetTimeout()
        super().resumeProducing()

    # -- addresses

    _host: Any = None

    def getHost(self) -> Any:
        # Twisted asks at every request; a connection's own address does
        # not change, and each ask is a getsockname() system call.
        host = self._host
        if host is None:
            host = self._host = super().getHost()
        return host

    # -- keep-alive

    def timeoutConnection(self) -> None:
        # Twisted's idle timer runs from the last bytes received or the
        # last answer; it closes only a connection that is idle, not one
        # whose request is being answered (however long that takes) or
        # received (its own deadlines run), or whose response the client
        # is still taking (C{send_timeout} runs). It is set again rather
        # than stopped and started for each request, which costs more.
        if (
            self._handlingRequest
            or self._waiting_for
            or self._send_deadline is not None
        ):
            self.setTimeout(self.timeOut)
            return
        super().timeoutConnection()

    def _not_reading(self) -> None:
        self._send_deadline = None
        _log.info(
            "Closing a client that took nothing for {timeout}s: {peer}",
            timeout=self.limits.send_timeout,
            peer=str(self.transport.getPeer()),  # type: ignore[union-attr]
        )
        self.transport.abortConnection()  # type: ignore[union-attr]

    # -- refusing

    def refuse(self, code: int, why: str) -> None:
        """
        Answer C{code} with C{why} and close, reading nothing more; if a
        response is already under way, just close once it can.
        """
        if self._refusing:
            return
        self._refusing = True
        self._deadline = self._left = None
        self.setTimeout(None)
        answered = any(r.startedWriting for r in self.requests)
        if self.transport is None or getattr(self.transport, "disconnecting", False):
            return  # closing after an answer: what followed is not read
        if not answered:
            body = f"{code} {_REASONS[code].decode()}: {why}.\n".encode()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (code, _REASONS[code], len(body), body)
            )
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._deadline = self._send_deadline = self._left = None
        super().connectionLost(reason)
        if self._tunnel is not None:
            self._tunnel.client_lost()
        listener = self.listener
        if listener is not None:
            listener.open -= 1
