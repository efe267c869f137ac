"""
L{RouterChannel}: Twisted's C{HTTPChannel} behind a strict gate.

Every byte a client sends is first parsed by llhttp (through C{httptools}),
the parser of Node.js, strict by default: obs-folded headers, bare CR or LF,
control characters, header names that are not tokens, any Content-Length /
Transfer-Encoding ambiguity, transfer codings but C{chunked} and chunk sizes
that overflow are a 400, and the connection is closed, before Twisted's own
parser sees the bytes. The gate also keeps the edge's limits
(L{txrouter.limits.Limits}): the size of the request line (414) and of the
header fields (431), the time to receive a head and the pauses in a body
(408), a client that stops reading (closed). C{max_body} is kept once the
request's route is known (L{RouterChannel.allHeadersReceived}): a
C{Content-Length} over it is a 413 sent instead of C{100 Continue}, and a
chunked body is counted as it arrives.

A head or body deadline counts only the time in which the router waits for
the client: it stands still while an earlier request of the connection is
being answered (the gate reads pipelined bytes ahead of Twisted, which
turns to them only then) and while the router holds reading because the
client takes nothing of its response (then C{send_timeout} runs instead).

Twisted's parser then builds the L{txrouter.site.RouterRequest}s as before,
so the site, the resource tree and the requests are Twisted's own.
"""

from __future__ import annotations

from collections import deque
from contextlib import suppress
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
}


def _never() -> float:
    return 0.0


class _Refused(Exception):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class RouterChannel(HTTPChannel):
    """
    An C{HTTPChannel} whose input passes L{_Gate} first.
    """

    limits = Limits()
    #: Set by the site that builds it.
    site: Any = None
    # Twisted's own limits, above ours: the gate answers first, with the
    # right status.
    MAX_LENGTH = 1 << 20
    totalHeadersSize = 1 << 20
    maxHeaders = 1 << 16

    _refusing = False
    _body_left: int | None = None
    # When the head or body now being received must have arrived or moved
    # (and which), and when a client that takes nothing is dropped: checked
    # by the site's sweep (L{check_deadlines}) rather than a timer per
    # request, which would cost more than the rest of the gate.
    _deadline: float | None = None
    _waiting_for = ""
    _send_deadline: float | None = None
    # Whether a request of this connection is being answered (Twisted reads
    # no further request until it is).
    _answering = False
    # The seconds left of the head or body deadline while the router does
    # not wait for the client (answering, or holding reading while the
    # client takes nothing): C{_deadline} is then L{None}, and set again
    # from this when the router waits for the client once more.
    _left: float | None = None
    #: The listening port's count of open connections this one is part of
    #: (set by the site that builds it).
    listener: Any = None

    def connectionMade(self) -> None:
        self._gate = _Gate(self)
        self._now = self.site.reactor.seconds if self.site is not None else _never
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if self._refusing or self._held is not None:
            return
        gate = self._gate
        between, completed = gate.between, gate.completed
        try:
            gate.feed(data)
        except _Refused as refused:
            # Requests that ended in this read before the refused one are
            # served first: Twisted gets their bytes, and no more.
            done = gate.completed - completed
            end = _end_of(data, done) if done and between else None
            if end is not None:
                super().dataReceived(data[:end])
            self._refuse_in_turn(refused)
            return
        super().dataReceived(data)

    # A refusal waiting for the requests before it to be answered.
    _held: _Refused | None = None

    def _refuse_in_turn(self, refused: _Refused) -> None:
        """
        Refuse once the requests received before the refused one are
        answered: a pipelining client reads answers in order, and an early
        error would read as the answer to an earlier request.
        """
        if self._answering and not self._refusing:
            self._held = refused
            self._deadline = self._left = None
            return
        self.refuse(refused.code, str(refused))

    def setLineMode(self, extra: bytes = b"") -> Any:
        # Twisted calls this when a request has been answered, with the
        # bytes it kept meanwhile: they passed the gate as they arrived, and
        # must not again (llhttp would read them twice, and the targets it
        # queues would belong to the wrong requests). Nothing more is read
        # from a connection being refused.
        self.line_mode = 1
        if extra and not self._refusing:
            return super().dataReceived(extra)
        return None

    # -- max_body, once the route is known

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        target, underscored = (
            self._gate.targets.popleft() if self._gate.targets else (b"/", True)
        )
        # The edge drops header names with "_"; the gate saw whether any.
        request.underscored_names = underscored
        limit = self.limits.max_body
        site = self.site
        if site is not None and getattr(site.resource, "has_own_max_body", False):
            host = request.requestHeaders.getRawHeaders(b"host", [b""])[-1]
            limit = site.max_body_for(host, target)
        if self.length is not None and self.length > limit:
            self.refuse(413, f"the body is larger than this URL takes ({limit} bytes)")
            return
        self._body_left = limit
        super().allHeadersReceived()

    def body_received(self, size: int) -> None:
        """
        C{size} more bytes of a request body arrived.
        """
        if self._body_left is not None:
            self._body_left -= size
            if self._body_left < 0:
                self.refuse(413, "the body is larger than this URL takes")

    # -- deadlines

    # While the router does not wait for the client, a deadline that starts
    # is kept in C{_left}, counted once it waits again.

    def head_started(self) -> None:
        if self._waiting_for != "head":
            self._waiting_for = "head"
            if self._answering or self._send_deadline is not None:
                self._left = self.limits.head_timeout
            else:
                self._deadline = self._now() + self.limits.head_timeout

    def head_done(self) -> None:
        self._waiting_for = "body"
        if self._answering or self._send_deadline is not None:
            self._left = self.limits.body_timeout
        else:
            self._deadline = self._now() + self.limits.body_timeout

    def body_moved(self) -> None:
        if self._answering or self._send_deadline is not None:
            self._left = self.limits.body_timeout
        else:
            self._deadline = self._now() + self.limits.body_timeout

    def message_done(self) -> None:
        self._waiting_for = ""
        self._deadline = None
        if self._left is not None:
            self._left = None
        # The count of the body (_body_left) goes on: the gate reads ahead
        # of Twisted, which may not have been given the body's end yet;
        # the next request's head sets it anew.

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

    def allContentReceived(self) -> None:
        if self._refusing:
            return  # refused while its body was read (a 413): not served
        # Set before Twisted answers: an answer may end within this call.
        self._answering = True
        if self._deadline is not None:
            self._stand_still()
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        # Set before Twisted turns to the requests the gate has read ahead
        # (within this call), which may be answered at once in turn. After
        # an answer that closes the connection, none is read: none is late.
        self._answering = False
        if not self.persistent:
            self._left = None
        elif self._left is not None and self._send_deadline is None:
            self._go_on()
        super().requestDone(request)
        held = self._held
        if held is not None and not self._answering:
            self._held = None
            self.refuse(held.code, str(held))

    def check_deadlines(self, now: float) -> None:
        """
        Refuse a head or body that is late, drop a client that has taken
        nothing for too long (called by the site's sweep).
        """
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
        # answering), and the time is no longer the sender's to count.
        super().pauseProducing()
        if self._send_deadline is None:
            self._send_deadline = self._now() + self.limits.send_timeout
            self._stand_still()

    def resumeProducing(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline = None
            if not self._answering:
                self._go_on()
            # Idle, if it is, from now: the response has gone out.
            self.resetTimeout()
        super().resumeProducing()

    # -- keep-alive

    def timeoutConnection(self) -> None:
        # Twisted's idle timer runs from the last bytes received; it closes
        # only a connection that is idle, not one whose request is being
        # received (its own deadlines run) or whose response the client is
        # still taking (C{send_timeout} runs).
        if self._waiting_for or self._send_deadline is not None:
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
        listener = self.listener
        if listener is not None:
            listener.open -= 1


# What the callbacks do not see of a head's bytes, counted towards
# max_head so that it bounds about the head as sent: ": " and CRLF of each
# field, and the method, spaces, version and CRLFs around the target.
_FIELD_FRAMING = 4
_LINE_FRAMING = 16
# The header fields that say a request has a body.
_FRAMING_NAMES = (b"content-length", b"transfer-encoding")
_FRAMING_LENGTHS = (14, 17)
# What the estimate above may miss (spaces around values, a long method).
_RAW_SLACK = 128


class _MessageCounter:
    def __init__(self) -> None:
        self.done = 0

    def on_message_complete(self) -> None:
        self.done += 1


def _messages_in(data: bytes) -> int:
    counter = _MessageCounter()
    with suppress(httptools.HttpParserError, httptools.HttpParserUpgrade):
        httptools.HttpRequestParser(counter).feed_data(data)
    return counter.done


def _end_of(data: bytes, count: int) -> int | None:
    """
    The length of the shortest start of C{data} (which starts between two
    messages) in which C{count} messages end, found by bisection with
    fresh parsers; L{None} if it has fewer. Only a refused read pays this.
    """
    if _messages_in(data) < count:
        return None
    low, high = 1, len(data)
    while low < high:
        middle = (low + high) // 2
        if _messages_in(data[:middle]) >= count:
            high = middle
        else:
            low = middle + 1
    return low


class _Gate:
    """
    llhttp over the raw input, with the limits counted in its callbacks.
    """

    def __init__(self, channel: RouterChannel) -> None:
        self._channel = channel
        self._limits = channel.limits
        self._parser = httptools.HttpRequestParser(self)
        # The bytes of an unfinished head are bounded here, a little above
        # what the callbacks count (so that a head they would take is not
        # cut by this, however its bytes arrive): a header that never ends
        # is refused before it takes more memory than this.
        self._raw_limit = self._limits.max_head + _RAW_SLACK
        # The target of each head parsed here and not yet by Twisted (the
        # gate reads pipelined requests ahead of it).
        self.targets: deque[tuple[bytes, bool]] = deque()
        self._url_parts: list[bytes] = []
        #: Whether no message is being parsed, and how many have ended.
        self.between = True
        self.completed = 0
        self._start()

    _underscored = False

    def _start(self) -> None:
        self._url = 0
        self._head = 0
        self._fields = 0
        # Bytes received since the last head ended, while no body is being
        # read: llhttp buffers a header until it ends, so this, not the
        # callbacks, bounds the memory a never-ending header can take.
        self._raw = 0
        self._in_body = False

    def feed(self, data: bytes) -> None:
        if not self._in_body:
            self._raw += len(data)  # set back to 0 when a head ends in it
        self._feed(data)
        if not self._in_body and self._raw > self._raw_limit:
            raise _Refused(431, "the request head is too large")

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            # One of our callbacks refused (llhttp wraps what they raise).
            refused, self._refused = self._refused, None
            if refused is None:
                raise
            raise refused from None
        except httptools.HttpParserUpgrade as upgrade:
            if self._with_body:
                # llhttp takes what follows the head for the new protocol,
                # so the gate would read the body as the next request,
                # where Twisted reads it as the body.
                self.completed -= 1  # llhttp ended it at its head: it is not whole
                raise _Refused(
                    400, "a request to switch protocols cannot have a body here"
                ) from None
            # Answered as a plain request (nothing is tunnelled yet): go on
            # with what follows its head as the next request.
            self._parser = httptools.HttpRequestParser(self)
            self._start()
            rest = data[upgrade.args[0] :]
            if rest:
                self._feed(rest)
        except httptools.HttpParserError as e:
            raise _Refused(400, f"not valid HTTP/1.1 ({e})") from None

    _refused: _Refused | None = None

    def _refuse(self, code: int, why: str) -> None:
        self._refused = _Refused(code, why)
        raise self._refused

    # -- llhttp's callbacks

    _with_body = False

    def on_message_begin(self) -> None:
        self.between = False
        self._with_body = False
        self._url = self._head = self._fields = 0
        self._url_parts = []
        self._underscored = False
        self._channel.head_started()

    def on_url(self, url: bytes) -> None:
        self._url += len(url)
        if self._url > self._limits.max_request_line:
            self._refuse(414, "the request target is too long")
        self._url_parts.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if b"_" in name:
            self._underscored = True
        if len(name) in _FRAMING_LENGTHS and name.lower() in _FRAMING_NAMES:
            self._with_body = value.strip() != b"0"
        size = len(name) + len(value)
        self._head += size + _FIELD_FRAMING
        self._fields += 1
        if size > self._limits.max_header:
            self._refuse(431, "a header field is too large")
        if self._fields > self._limits.max_headers:
            self._refuse(431, "too many header fields")
        if self._head + self._url + _LINE_FRAMING > self._limits.max_head:
            self._refuse(431, "the request head is too large")

    def on_headers_complete(self) -> None:
        self.targets.append((b"".join(self._url_parts), self._underscored))
        self._in_body = True
        self._raw = 0
        self._channel.head_done()

    def on_body(self, body: bytes) -> None:
        self._channel.body_moved()

    def on_message_complete(self) -> None:
        self.between = True
        self.completed += 1
        self._in_body = False
        self._channel.message_done()
