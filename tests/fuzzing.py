"""
The harness of the edge's fuzz run (C{tests/test_fuzz_edge.py}): the router's
real server side in memory, reference parsers, and the checks made of every
exchange.

    >>> data = b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n"
    >>> outcome = exchange([data[:9], data[9:]])
    >>> problems(outcome, llhttp_reference(data)), statuses(outcome.output)
    ([], ['200'])

L{exchange} sends bytes, in the reads it is given, to a real
L{txrouter.site.RouterSite} (real L{Limits}, small enough that every limit
is reachable) whose L{Router} routes to a L{Recorder}; it collects what the
client got, what reached the recorder and what was logged.
L{llhttp_reference} parses the same bytes with llhttp as the edge's
channel does, and L{problems} checks the outcome against both.
"""

from __future__ import annotations

import gc
import importlib
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httptools
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import ILogObserver, LogEvent, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from zope.interface import implementer

from txrouter.limits import Limits
from txrouter.router import Router
from txrouter.site import RouterSite

h11: Any
try:  # an optional second opinion, used when installed; not a dependency
    h11 = importlib.import_module("h11")
except ImportError:
    h11 = None

__all__ = [
    "ALLOWED_STATUSES",
    "EDGE_REFUSALS",
    "LIMITS",
    "Outcome",
    "Reference",
    "Seen",
    "comparable",
    "exchange",
    "h11_first_request",
    "head_size_depends_on_reads",
    "llhttp_reference",
    "max_body_of",
    "parse_responses_loose",
    "problems",
    "statuses",
]

#: Small limits, so that every oversize answer is reachable by short inputs.
LIMITS = Limits(
    head_timeout=5.0,
    body_timeout=5.0,
    send_timeout=60.0,
    keepalive_timeout=30.0,
    max_request_line=128,
    max_header=96,
    max_head=512,
    max_headers=12,
    max_body=24,
    max_connections=100,
)

#: The route with a C{max_body} of its own, and that size.
OWN_MAX_BODY_PREFIX = b"app"
OWN_MAX_BODY = 48

#: Seconds the clock moves after the input: past C{head_timeout} and
#: C{body_timeout}, short of C{keepalive_timeout}.
IDLE_AFTER_INPUT = 7

#: Every status this site can answer, and who answers it:
#:   - 100: the channel, to C{Expect: 100-continue} on HTTP/1.1;
#:   - 200: the recorder, or Twisted itself for C{OPTIONS *} (its C{Request}
#:     answers that without a resource);
#:   - 301: the router's L{txrouter.redirect.AddSlash} (C{/app} to C{/app/});
#:   - 404: the router, for a path no route of the host's table matches
#:     (C{*.wild.example} routes only C{/w/});
#:   - 400: the channel (llhttp refused) or the edge's checks
#:     (L{txrouter.edge}: target form, C{Host});
#:   - 408, 413, 414, 431: the channel's limits;
#:   - 501: the channel, for a transfer coding before C{chunked};
#:   - 505: the channel, for a version other than HTTP/1.0 and HTTP/1.1.
#: Not answerable here, so a failure if seen: 405 (every resource on this
#: tree renders any method), 500 (nothing may fail).
ALLOWED_STATUSES = frozenset({100, 200, 301, 400, 404, 408, 413, 414, 431, 501, 505})

#: The edge's refusals: each closes the connection, and nothing follows it.
EDGE_REFUSALS = frozenset({400, 408, 413, 414, 431, 501, 505})

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Written apart from txrouter.edge's own pattern on purpose: a reg-name or
# IPv4 (unreserved, sub-delims, pct-encoded) or a bracketed IP literal, and
# an optional port.
_HOST_VALUE = re.compile(
    rb"^(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+(?::[0-9]*)?\Z"
    rb"|^\[[0-9A-Fa-f:.]+\](?::[0-9]*)?\Z"
)
_CTL_BUT_HTAB = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

#: The address the test connections come to, as an HTTP/1.0 request without
#: C{Host} is given it.
SERVER_HOST = b"127.0.0.1"


#: The header of a response by the recorder: the number of what it saw.
RECORDED = b"x-recorded"


@dataclass(frozen=True)
class Seen:
    """
    What one request looked like when it reached the recorder.
    """

    method: bytes
    uri: bytes
    path: bytes
    version: bytes
    #: Lower-cased header name -> its values, in order; names sorted.
    headers: tuple[tuple[bytes, tuple[bytes, ...]], ...]
    #: The header names as the resource gets them.
    raw_names: tuple[bytes, ...]
    body: bytes
    prepath: tuple[bytes, ...]

    def values(self, name: bytes) -> tuple[bytes, ...]:
        return dict(self.headers).get(name, ())


class Recorder(Resource):
    """
    A leaf that records every request it renders and answers 200 C{ok},
    with the request's number in L{RECORDED} (sent for C{HEAD} too).
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Seen] = []

    def render(self, request: Any) -> bytes:
        headers: dict[bytes, list[bytes]] = {}
        names = []
        for name, values in request.requestHeaders.getAllRawHeaders():
            names.append(name)
            headers.setdefault(name.lower(), []).extend(values)
        request.content.seek(0)
        self.seen.append(
            Seen(
                method=request.method,
                uri=request.uri,
                path=request.path,
                version=request.clientproto,
                headers=tuple(sorted((n, tuple(v)) for n, v in headers.items())),
                raw_names=tuple(names),
                body=request.content.read(),
                prepath=tuple(request.prepath),
            )
        )
        request.setHeader(RECORDED, b"%d" % (len(self.seen) - 1))
        return b"ok"


@dataclass
class Outcome:
    """
    What one exchange gave.

    @ivar output: every byte the client got, in the end.
    @ivar before_idle: what it had got when the input ended, before the
        clock moved.
    @ivar closed_before_idle: whether the server was closing then.
    @ivar closed: whether it was closing in the end.
    @ivar raised: what an exception out of the protocol, or a warning,
        said, if any.
    @ivar logged: the failures and errors logged.
    """

    output: bytes
    before_idle: bytes
    closed_before_idle: bool
    closed: bool
    seen: list[Seen]
    raised: list[str] = field(default_factory=list)
    logged: list[str] = field(default_factory=list)


def build_site(reactor: MemoryReactorClock, recorder: Resource) -> RouterSite:
    """
    The router's real site: a default table routing C{/} and C{/app/} (the
    latter with its own C{max_body}), and a wildcard host routing only
    C{/w/}, all to C{recorder}.
    """
    router = Router(
        {
            "": {"/": recorder, "/app/": recorder},
            "*.wild.example": {"/w/": recorder},
        },
        {"": {"/app/": OWN_MAX_BODY}},
    )
    return RouterSite(router, reactor, None, LIMITS)


@implementer(ILogObserver)
class _Errors:
    """
    What is logged as a failure or an error.
    """

    def __init__(self) -> None:
        self.found: list[str] = []

    def __call__(self, event: LogEvent) -> None:
        failure = event.get("log_failure")
        if failure is not None:
            self.found.append(failure.getTraceback())
        elif event.get("log_level") in (LogLevel.error, LogLevel.critical):
            self.found.append(str(event.get("log_format")))


def exchange(reads: Iterable[bytes]) -> Outcome:
    """
    Send C{reads}, one C{dataReceived} each, to a new connection of a new
    site; stop sending once the server is closing (a real transport stops
    reading then). Then let the clock pass the deadlines, and the client
    go away.
    """
    reactor = MemoryReactorClock()
    recorder = Recorder()
    site = build_site(reactor, recorder)
    protocol = site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 5555))
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", SERVER_HOST.decode(), 8080),
        peerAddress=IPv4Address("TCP", "10.0.0.1", 5555),
    )
    logged = _Errors()
    raised: list[str] = []
    globalLogPublisher.addObserver(logged)
    try:
        with warnings.catch_warnings(record=True) as warned:
            # Twisted warns of what it takes for its caller's bug ("finish
            # called twice").
            warnings.simplefilter("always")
            protocol.makeConnection(transport)
            try:
                for data in reads:
                    if transport.disconnecting:
                        break
                    protocol.dataReceived(data)
            except Exception as e:
                raised.append(f"dataReceived raised {e!r}")
            before, closed_before = transport.value(), transport.disconnecting
            if not closed_before:
                try:
                    reactor.pump([1.0] * IDLE_AFTER_INPUT)
                except Exception as e:
                    raised.append(f"the deadlines raised {e!r}")
            closed = transport.disconnecting
            # A real transport told to close does once it has written what
            # it holds (at once, for responses this small); one that was not
            # is closed by its client now.
            try:
                protocol.connectionLost(Failure(ConnectionDone()))
            except Exception as e:
                raised.append(f"connectionLost raised {e!r}")
            site.stopFactory()
        output = transport.value()
        if _BODY_TOO_LARGE in output:
            # A request served after its 413 (a bug once) left a failed
            # Deferred (a page still rendering), logged only once collected:
            # let that be now, not in some later exchange.
            del protocol, transport, site, reactor
            gc.collect()
    finally:
        globalLogPublisher.removeObserver(logged)
    # A ResourceWarning comes when the garbage collector runs, for whatever
    # exchange left the garbage: not this one's to answer for.
    raised.extend(
        f"warned: {w.message}"
        for w in warned
        if not issubclass(w.category, ResourceWarning)
    )
    return Outcome(
        output=output,
        before_idle=before,
        closed_before_idle=bool(closed_before),
        closed=bool(closed),
        seen=recorder.seen,
        raised=raised,
        logged=logged.found,
    )


# -- the reference: llhttp, as the channel runs it


@dataclass
class Message:
    """
    One request as llhttp parsed it.
    """

    method: bytes = b""
    url: bytes = b""
    version: str = ""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    head_done: bool = False
    complete: bool = False
    #: llhttp takes it for an upgrade (C{CONNECT}, or C{Upgrade} with
    #: C{Connection: upgrade}): what follows its head is not its body.
    upgrade: bool = False

    @property
    def declares_body(self) -> bool:
        """
        Whether its head gives it a body (as Twisted reads it).
        """
        for name, value in self.headers:
            if name.lower() == b"transfer-encoding":
                return True
            if name.lower() == b"content-length" and value.strip(b" \t") != b"0":
                return True
        return False


@dataclass
class Reference:
    """
    The requests llhttp (strict, as the channel runs it) finds in some bytes,
    and why it stopped, if it refused them.
    """

    messages: list[Message]
    error: str | None

    @property
    def complete(self) -> list[Message]:
        return [m for m in self.messages if m.complete]


class _Collector:
    """
    The callbacks of llhttp, building L{Message}s.
    """

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.parser: Any = None

    def on_message_begin(self) -> None:
        self.messages.append(Message())

    def on_url(self, url: bytes) -> None:
        self.messages[-1].url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        message = self.messages[-1]
        (message.trailers if message.head_done else message.headers).append(
            (name, value)
        )

    def on_headers_complete(self) -> None:
        message = self.messages[-1]
        message.head_done = True
        message.method = self.parser.get_method()
        message.version = self.parser.get_http_version()
        message.upgrade = self.parser.should_upgrade()

    def on_body(self, body: bytes) -> None:
        self.messages[-1].body += body

    def on_message_complete(self) -> None:
        self.messages[-1].complete = True


def llhttp_reference(data: bytes) -> Reference:
    """
    Parse C{data} as the channel does: llhttp, strict; after an upgrade
    request, a new parser for what follows its head.
    """
    collector = _Collector()
    while True:
        collector.parser = httptools.HttpRequestParser(collector)
        try:
            collector.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            data = data[upgrade.args[0] :]
            if data:
                continue
        except httptools.HttpParserError as e:
            return Reference(collector.messages, f"{type(e).__name__}: {e}")
        return Reference(collector.messages, None)


def h11_first_request(data: bytes) -> bool | None:
    """
    Whether h11 reads a whole first request from C{data} (L{None} when h11
    is not installed).
    """
    if h11 is None:
        return None
    connection = h11.Connection(h11.SERVER)
    try:
        connection.receive_data(data)
        connection.receive_data(b"")
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return False
            if isinstance(event, h11.EndOfMessage):
                return True
    except h11.RemoteProtocolError:
        return False


def origin_form(method: bytes, url: bytes) -> bytes:
    """
    The origin-form a target as sent must reach an application as: without
    its fragment; the path (C{/} at least) and query of an absolute-form.
    """
    url = url.partition(b"#")[0]
    if url.startswith(b"/") or (method == b"OPTIONS" and url == b"*"):
        return url
    rest = url.partition(b"://")[2]
    cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=-1)
    path = b"" if cut < 0 else rest[cut:]
    return path if path.startswith(b"/") else b"/" + path


def absolute_host(url: bytes) -> bytes | None:
    """
    The authority of an absolute-form target, or L{None}.
    """
    if url.startswith(b"/") or b"://" not in url:
        return None
    rest = url.partition(b"://")[2]
    return re.split(rb"[/?#]", rest, maxsplit=1)[0]


# -- the responses


@dataclass(frozen=True)
class Response:
    """
    One response, as the client got it.
    """

    version: str
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    #: Its end is the connection's end (no length).
    until_close: bool
    #: Where it starts in the output.
    start: int = 0

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name]

    @property
    def closes(self) -> bool:
        """
        Whether the connection must end after it.
        """
        return (
            self.status in EDGE_REFUSALS
            or self.until_close
            or self.version == "1.0"
            or any(v.lower() == b"close" for v in self.header(b"connection"))
        )


class Malformed(Exception):
    """
    The output is not a sequence of well-formed responses.
    """


class _Head:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.done = True


def _dechunk(output: bytes, at: int) -> tuple[bytes, int]:
    """
    The chunked body of a response that starts at C{at}, and where it ends.
    """
    body = b""
    while True:
        end = output.find(b"\r\n", at)
        size = output[at:end]
        if end < 0 or not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size):
            raise Malformed(f"a bad chunk size at {at}: {output[at : at + 20]!r}")
        at = end + 2
        if int(size, 16) == 0:
            if output[at : at + 2] != b"\r\n":
                raise Malformed(f"a chunked body without its end at {at}")
            return body, at + 2
        chunk = output[at : at + int(size, 16)]
        at += len(chunk)
        if len(chunk) != int(size, 16) or output[at : at + 2] != b"\r\n":
            raise Malformed(f"a chunk shorter than its size at {at}")
        body += chunk
        at += 2


def parse_responses(output: bytes, head_requests: Sequence[bool]) -> list[Response]:
    """
    Split C{output} into responses: each head parsed by llhttp, each body
    framed by its C{Content-Length} (none for 1xx, nor after C{HEAD}), or
    to the end without one.

    @param head_requests: for the n-th final (not 1xx) response, whether it
        answers a C{HEAD} (as far as llhttp knows).
    @raise Malformed: with what is wrong, and where.
    """
    responses: list[Response] = []
    at = 0
    while at < len(output):
        start = at
        end = output.find(b"\r\n\r\n", at)
        if end < 0:
            raise Malformed(f"an unfinished head at {at}: {output[at:]!r}")
        head = output[at : end + 4]
        collected = _Head()
        parser = httptools.HttpResponseParser(collected)
        try:
            parser.feed_data(head)
        except httptools.HttpParserError as e:
            raise Malformed(f"llhttp refuses the head at {at} ({e}): {head!r}") from e
        if not collected.done:
            raise Malformed(f"llhttp found no whole head at {at}: {head!r}")
        status = parser.get_status_code()
        version = parser.get_http_version()
        at = end + 4
        lengths = [v for n, v in collected.headers if n.lower() == b"content-length"]
        codings = [v for n, v in collected.headers if n.lower() == b"transfer-encoding"]
        finals = sum(1 for r in responses if r.status >= 200)
        is_head = finals < len(head_requests) and head_requests[finals]
        until_close = False
        if status < 200:
            body = b""
        elif is_head and (at == len(output) or output[at:].startswith(b"HTTP/1.")):
            # The answer to a HEAD has no body (and none of the bodies this
            # site sends starts like a response).
            body = b""
        elif codings:
            if lengths or codings != [b"chunked"]:
                raise Malformed(f"a bad Transfer-Encoding: {head!r}")
            body, at = _dechunk(output, at)
        elif lengths:
            if len(lengths) != 1 or not lengths[0].isdigit():
                raise Malformed(f"a bad Content-Length: {head!r}")
            size = int(lengths[0])
            body = output[at : at + size]
            if len(body) != size:
                raise Malformed(f"a body shorter than its length: {head!r}")
            at += size
        else:
            body, at, until_close = output[at:], len(output), True
        responses.append(
            Response(
                version, status, tuple(collected.headers), body, until_close, start
            )
        )
    return responses


# -- the checks


def comparable(outcome: Outcome) -> tuple[Any, ...]:
    """
    What of an outcome must not depend on how its input was split into
    reads: the status of each response, before the clock moved and in the
    end, whether the connection was closing then, what reached the
    recorder, and what raised.

    The edge's refusals (but 408) count as one: when an input has two
    faults, which one is named can depend on the reads. llhttp reports a
    header field only once the next one begins, so C{max_headers} is
    passed (431) or the next name's bad byte is found first (400)
    depending on where a read ends. Either way the input is
    refused at that request and the connection closed.
    """
    return (
        statuses(outcome.before_idle),
        outcome.closed_before_idle,
        statuses(outcome.output),
        outcome.closed,
        outcome.seen,
        outcome.raised,
    )


def statuses(output: bytes) -> list[str]:
    """
    The statuses in C{output}, each refusal but 408 as C{"refused"}.
    """
    # Found loosely: a malformed output is reported by problems().
    found = [int(s) for s in re.findall(rb"HTTP/1\.[01] (\d\d\d) ", output)]
    return ["refused" if s in EDGE_REFUSALS - {408} else str(s) for s in found]


_NO_UPGRADE_BODY = b"a request to switch protocols cannot have a body here"


def went_past_refusal(coarse: Outcome, fine: Outcome, refusal: bytes) -> bool:
    """
    Whether C{coarse} differs from C{fine} (the same input, in smaller
    reads) only in going on where C{fine} was refused with C{refusal}:
    the same answers before it, and what reached the app then too.
    """
    full = statuses(fine.output)
    return (
        refusal in fine.output
        and statuses(coarse.output)[: len(full) - 1] == full[:-1]
        and coarse.seen[: len(fine.seen)] == fine.seen
        and not coarse.raised
    )


def head_size_depends_on_reads(coarse: Outcome, fine: Outcome) -> bool:
    """
    Whether C{coarse} differs from C{fine} only as the known bug of the
    channel: a head read whole is measured by what llhttp reports of it, one
    still arriving by its raw bytes (C{max_head} + 128), so a head with
    enough whitespace around its values is taken in one read and refused
    in smaller ones (see C{test_head_size_in_any_reads}).
    """
    return went_past_refusal(coarse, fine, _HEAD_TOO_LARGE)


_HEAD_TOO_LARGE = b"431 Request Header Fields Too Large: the request head is too large"


_BODY_TOO_LARGE = b"413 Content Too Large: the body is larger than this URL takes.\n"


def max_body_of(seen: Seen) -> int:
    """
    The C{max_body} of the route a request reached.
    """
    if seen.prepath[:1] == (OWN_MAX_BODY_PREFIX,):
        return OWN_MAX_BODY
    return LIMITS.max_body


def _header_problems(seen: Seen) -> list[str]:
    out = []
    hosts = seen.values(b"host")
    if len(hosts) != 1:
        out.append(f"{len(hosts)} Host values reached the app: {hosts!r}")
    elif not _HOST_VALUE.match(hosts[0]):
        out.append(f"a Host that is no host reached the app: {hosts[0]!r}")
    for name in seen.raw_names:
        if not _TOKEN.match(name):
            out.append(f"a header name that is no token reached the app: {name!r}")
        if b"_" in name:
            out.append(f"a header name with '_' reached the app: {name!r}")
    for name, values in seen.headers:
        for value in values:
            if _CTL_BUT_HTAB.search(value):
                out.append(f"a control byte in {name!r} reached the app: {value!r}")
    lengths = seen.values(b"content-length")
    codings = seen.values(b"transfer-encoding")
    if lengths and codings:
        out.append(f"both Content-Length and Transfer-Encoding: {seen.headers!r}")
    if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
        out.append(f"an ambiguous Content-Length reached the app: {lengths!r}")
    if codings and [c.lower() for c in codings] != [b"chunked"]:
        out.append(f"a Transfer-Encoding but chunked reached the app: {codings!r}")
    return out


def _request_problems(seen: Seen, message: Message) -> list[str]:
    """
    What is wrong with C{seen}, alone and as the request llhttp (the channel's parser)
    read, C{message}.
    """
    out = _header_problems(seen)
    if not seen.uri.startswith(b"/") and not (
        seen.method == b"OPTIONS" and seen.uri == b"*"
    ):
        out.append(f"a target not in origin-form reached the app: {seen.uri!r}")
    if b"#" in seen.uri:
        out.append(f"a fragment reached the app: {seen.uri!r}")
    if seen.version not in (b"HTTP/1.0", b"HTTP/1.1"):
        out.append(f"a version reached the app: {seen.version!r}")
    lengths = seen.values(b"content-length")
    if lengths and lengths[0].isdigit() and len(seen.body) != int(lengths[0]):
        out.append(f"a body of {len(seen.body)} bytes, Content-Length {lengths[0]!r}")
    if not lengths and not seen.values(b"transfer-encoding") and seen.body:
        out.append(f"a body without framing reached the app: {seen.body!r}")
    limit = max_body_of(seen)
    if len(seen.body) > limit:
        out.append(f"a body of {len(seen.body)} bytes, over max_body ({limit})")
    # The same request as llhttp read: nothing read differently may reach
    # an application.
    if (seen.method, seen.version) != (
        message.method,
        b"HTTP/" + message.version.encode(),
    ):
        out.append(
            f"{seen.method!r} {seen.version!r} reached the app; llhttp read "
            f"{message.method!r} HTTP/{message.version}"
        )
    if seen.uri != origin_form(message.method, message.url):
        out.append(f"target {seen.uri!r} reached the app; llhttp read {message.url!r}")
    if seen.body != message.body:
        out.append(f"body {seen.body!r} reached the app; llhttp read {message.body!r}")
    expected: dict[bytes, list[bytes]] = {}
    for name, value in message.headers:
        if b"_" not in name:  # dropped by the edge, on purpose
            expected.setdefault(name.lower(), []).append(value.strip(b" \t"))
    host = absolute_host(message.url)
    if host is not None:
        expected[b"host"] = [host]
    elif b"host" not in expected and message.version == "1.0":
        expected[b"host"] = [SERVER_HOST]
    got = {name: list(values) for name, values in seen.headers}
    if got != expected:
        out.append(f"headers {got!r} reached the app; llhttp read {expected!r}")
    return out


def problems(outcome: Outcome, reference: Reference) -> list[str]:
    """
    Everything wrong with C{outcome}, the exchange of some bytes;
    C{reference} is llhttp's reading of the same bytes.
    """
    out = [*outcome.raised, *(f"logged: {entry}" for entry in outcome.logged)]
    head_requests = [m.method == b"HEAD" for m in reference.messages]
    try:
        responses = parse_responses(outcome.output, head_requests)
    except Malformed as e:
        return [*out, f"malformed output: {e}"]
    finals = [r for r in responses if r.status >= 200]
    for r in responses:
        if r.status not in ALLOWED_STATUSES:
            out.append(f"status {r.status} is not one this site can answer")
        if r.status < 200 and r.status != 100:
            out.append(f"an interim response {r.status}")
    for i, r in enumerate(finals):
        if r.closes and i != len(finals) - 1:
            out.append(
                f"response {i} ({r.status}) closes, and {finals[i + 1 :]!r} follow"
            )
        if r.closes and not outcome.closed:
            out.append(f"response {i} ({r.status}) closes, and the connection is open")
    if outcome.closed and not (finals and finals[-1].closes):
        out.append("the connection closed without a response that says so")
    refused_early = any(
        r.status in EDGE_REFUSALS
        for r in parse_responses_loose(outcome.before_idle, head_requests)
    )
    if refused_early and not outcome.closed_before_idle:
        out.append("refused, and the connection stayed open until the clock moved")
    if len(finals) > len(reference.messages) + 1:
        out.append(f"{len(finals)} responses to {len(reference.messages)} requests")
    # Each final response answers the request llhttp read at its place (the
    # last may instead be the channel's refusal); the recorder's say which of
    # the requests it saw they answer.
    recorded = []
    for i, r in enumerate(finals):
        numbers = r.header(RECORDED)
        if not numbers:
            continue
        recorded.append(int(numbers[0]))
        if recorded[-1] >= len(outcome.seen):
            continue  # reported below
        seen = outcome.seen[recorded[-1]]
        if i >= len(reference.messages) or not reference.messages[i].complete:
            out.append(f"request {i} reached the app, unread by llhttp: {seen!r}")
        else:
            out.extend(_request_problems(seen, reference.messages[i]))
    if recorded != list(range(len(outcome.seen))):
        out.append(f"answers from the recorder {recorded} to {len(outcome.seen)} seen")
    return out


def parse_responses_loose(
    output: bytes, head_requests: Sequence[bool]
) -> list[Response]:
    """
    The responses of C{output}, or none if it is malformed (reported apart).
    """
    try:
        return parse_responses(output, head_requests)
    except Malformed:
        return []
