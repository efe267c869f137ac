"""
Unit tests of L{txrouter.wsgi.WSGIResource}: the last chunk of a list or
tuple body goes to the reactor together with the finish, in one hand-off
the pool thread does not wait for; everything else behaves as Twisted's.

Everything runs synchronously in the test's thread: L{FakeReactor} runs
each C{callFromThread} at once and records it as a L{HandOff},
L{FakePool} runs the application at once, and the request is a real
C{twisted.web.server.Request} on a C{DummyChannel}, whose transport keeps
the bytes written. No threads, no sleeps.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any
from wsgiref.validate import validator

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import wsgi as stock
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.web.test.requesthelper import DummyChannel

import txrouter.wsgi
from tests.support import wait_until
from txrouter.wsgi import WSGIResource

pytestmark = pytest.mark.unit

StartResponse = Callable[..., Callable[[bytes], None]]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Boom(Exception):
    """
    The error the test applications raise.
    """


@dataclass
class HandOff:
    """
    One C{reactor.callFromThread} made by the pool thread.

    @ivar waited: whether the pool thread waited for it (it came from
        C{blockingCallFromThread}).
    @ivar name: the name of the function handed to the reactor.
    @ivar wrote: the bytes that reached the transport during the call.
    """

    waited: bool
    name: str
    wrote: bytes


class FakeReactor:
    """
    A reactor whose C{callFromThread} runs the call at once and records it.

    As a real reactor does, an exception from the call is not raised in the
    calling thread: it is kept in C{unhandled}.

    @ivar before_hand_off: called with the index of each hand-off before it
        runs, so a test can make the client leave at a chosen moment.
    """

    def __init__(self, written: BytesIO) -> None:
        self.written = written
        self.hand_offs: list[HandOff] = []
        self.unhandled: list[Failure] = []
        self.before_hand_off: Callable[[int], None] = lambda index: None

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.before_hand_off(len(self.hand_offs))
        start = len(self.written.getvalue())
        try:
            f(*args, **kw)
        except BaseException:
            self.unhandled.append(Failure())
        # blockingCallFromThread hands the reactor a function of its own.
        waited = f.__qualname__.startswith("blockingCallFromThread.")
        wrote = self.written.getvalue()[start:]
        self.hand_offs.append(HandOff(waited, f.__name__, wrote))


class FakePool:
    """
    A thread pool that runs each call at once, in the caller's thread.
    """

    def callInThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


class CountingRequest(Request):
    """
    A real C{Request} that records each C{finish} in a shared event list.
    """

    def __init__(self, channel: DummyChannel, events: list[str]) -> None:
        super().__init__(channel, False)
        self.events = events
        self.finish_calls = 0

    def finish(self) -> None:
        self.finish_calls += 1
        self.events.append("finish")
        super().finish()


class Body:
    """
    A response body with a C{close} method, which records each call to it.

    @param chunks: a list, tuple or generator of the chunks.
    """

    def __init__(self, chunks: Iterable[bytes], events: list[str]) -> None:
        self.chunks = chunks
        self.events = events
        self.close_calls = 0

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.close_calls += 1
        self.events.append("close")


@dataclass
class Response:
    """
    A parsed response: header names in lower case, body without chunked
    framing.

    @ivar complete: whether the body ended (the last chunk of a chunked
        body, or as many bytes as Content-Length says).
    """

    status: bytes
    headers: dict[bytes, list[bytes]] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = False


def parse_response(raw: bytes) -> Response:
    """
    Parse the raw bytes of one response.
    """
    head, _, rest = raw.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    response = Response(status)
    for line in lines:
        name, _, value = line.partition(b":")
        response.headers.setdefault(name.strip().lower(), []).append(value.strip())
    if response.headers.get(b"transfer-encoding") != [b"chunked"]:
        response.body = rest
        length = response.headers.get(b"content-length")
        response.complete = length is not None and int(length[0]) == len(rest)
        return response
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        response.body += rest[:size]
        rest = rest[size + 2 :]
        if size == 0:
            response.complete = True
            break
    return response


def simple_app(body: Iterable[bytes], headers: list[tuple[str, str]]) -> App:
    """
    A WSGI application answering C{200 OK} with C{headers} and C{body}.
    """

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", headers)
        return body

    return app


def length(*chunks: bytes) -> list[tuple[str, str]]:
    """
    Headers with a Content-Type and the Content-Length of C{chunks}.
    """
    size = sum(len(chunk) for chunk in chunks)
    return [("Content-Type", "text/plain"), ("Content-Length", str(size))]


def waiting_for_client(thread: threading.Thread) -> bool:
    """
    Whether C{thread} is parked in L{txrouter.wsgi}'s wait for the client to
    take more (an C{Event.wait} called from the response's C{write}).
    """
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        caller = frame.f_back
        if (
            frame.f_code.co_name == "wait"
            and caller is not None
            and caller.f_code.co_name == "write"
            and caller.f_code.co_filename == txrouter.wsgi.__file__
        ):
            return True
        frame = caller
    return False


class Exchange:
    """
    One request to a WSGI resource, with the fakes around it.
    """

    def __init__(self, method: bytes = b"GET") -> None:
        self.events: list[str] = []
        self.channel = DummyChannel()
        self.transport = self.channel.transport
        self.reactor = FakeReactor(self.transport.written)
        self.request = CountingRequest(self.channel, self.events)
        self.request.method = method
        self.request.uri = b"/app/page?q=1"
        self.request.clientproto = b"HTTP/1.1"
        self.request.prepath = [b"app"]
        self.request.postpath = [b"page"]
        self.request.content = BytesIO()
        self.request.requestHeaders.setRawHeaders(b"host", [b"example.com"])
        self.outcome: list[str] = []
        self.request.notifyFinish().addCallbacks(
            lambda _: self.outcome.append("finished"),
            lambda _: self.outcome.append("lost"),
        )

    def serve(self, app: App, resource: type[Any] = WSGIResource) -> None:
        """
        Render the request with C{resource} (ours unless told) on C{app}.
        """
        result = resource(self.reactor, FakePool(), app).render(self.request)
        assert result == NOT_DONE_YET

    def raw(self) -> bytes:
        """
        All bytes written to the client so far.
        """
        return self.transport.written.getvalue()

    def response(self) -> Response:
        """
        The response written to the client so far.
        """
        return parse_response(self.raw())

    def waits(self) -> list[bool]:
        """
        For each hand-off in order, whether the pool thread waited for it.
        """
        return [hand_off.waited for hand_off in self.reactor.hand_offs]

    def leave_before(self, index: int) -> None:
        """
        Make the client go away just before hand-off number C{index} runs.
        """

        def leave(current: int) -> None:
            if current == index:
                self.request.connectionLost(Failure(ConnectionDone()))

        self.reactor.before_hand_off = leave


class WSGITestCase(SynchronousTestCase):
    """
    Makes L{Exchange}s and checks, after each test, that no call handed to
    the reactor raised.
    """

    def exchange(self, method: bytes = b"GET") -> Exchange:
        exchange = Exchange(method)
        self.addCleanup(lambda: self.assertEqual(exchange.reactor.unhandled, []))
        return exchange


class ListBodyTests(WSGITestCase):
    """
    Bodies that are lists or tuples: the last chunk goes with the finish.
    """

    def test_one_chunk(self) -> None:
        """
        A one-chunk list is answered in full with one hand-off, not waited for.
        """
        exchange = self.exchange()
        headers = [*length(b"hello"), ("X-Custom", "yes")]
        exchange.serve(simple_app([b"hello"], headers))
        response = exchange.response()
        self.assertEqual(response.status, b"HTTP/1.1 200 OK")
        self.assertEqual(response.headers[b"content-type"], [b"text/plain"])
        self.assertEqual(response.headers[b"content-length"], [b"5"])
        self.assertEqual(response.headers[b"x-custom"], [b"yes"])
        self.assertNotIn(b"transfer-encoding", response.headers)
        self.assertEqual(exchange.raw().partition(b"\r\n\r\n")[2], b"hello")
        self.assertEqual(exchange.outcome, ["finished"])
        self.assertEqual(exchange.request.finish_calls, 1)
        self.assertEqual(exchange.waits(), [False])

    def test_stock_resource_needs_two_hand_offs(self) -> None:
        """
        Twisted's own resource, on the same app, waits for a write and then
        hands off the finish: the count above is a real difference.
        """
        exchange = self.exchange()
        exchange.serve(simple_app([b"hello"], length(b"hello")), stock.WSGIResource)
        self.assertEqual(exchange.response().body, b"hello")
        self.assertEqual(exchange.waits(), [True, False])

    def test_three_chunks(self) -> None:
        """
        The first chunks are written while the pool thread waits; the last
        is written by the one hand-off that finishes the request.
        """
        exchange = self.exchange()
        chunks = [b"one", b"two", b"three"]
        exchange.serve(simple_app(chunks, length(*chunks)))
        response = exchange.response()
        self.assertEqual(response.body, b"onetwothree")
        self.assertTrue(response.complete)
        self.assertEqual(exchange.outcome, ["finished"])
        self.assertEqual(exchange.waits(), [True, True, False])
        wrote = [hand_off.wrote for hand_off in exchange.reactor.hand_offs]
        self.assertTrue(wrote[0].endswith(b"\r\n\r\none"))
        self.assertEqual(wrote[1:], [b"two", b"three"])
        self.assertEqual(exchange.reactor.hand_offs[-1].name, "_finish")

    def test_tuple(self) -> None:
        """
        A tuple body is sent like a list: waited writes, then the last chunk
        with the finish.
        """
        exchange = self.exchange()
        chunks = (b"one", b"two")
        exchange.serve(simple_app(chunks, length(*chunks)))
        self.assertEqual(exchange.response().body, b"onetwo")
        self.assertEqual(exchange.outcome, ["finished"])
        self.assertEqual(exchange.waits(), [True, False])
        self.assertEqual(exchange.reactor.hand_offs[-1].wrote, b"two")

    def test_empty(self) -> None:
        """
        An empty list sends the headers and an empty body, in one hand-off.
        """
        exchange = self.exchange()
        exchange.serve(simple_app([], length()))
        response = exchange.response()
        self.assertEqual(response.status, b"HTTP/1.1 200 OK")
        self.assertEqual(response.headers[b"content-length"], [b"0"])
        self.assertEqual(exchange.raw().partition(b"\r\n\r\n")[2], b"")
        self.assertEqual(exchange.outcome, ["finished"])
        self.assertEqual(exchange.waits(), [False])

    def test_empty_chunks(self) -> None:
        """
        Empty chunks cost no hand-off, first or last.
        """
        exchange = self.exchange()
        exchange.serve(simple_app([b"", b"hello", b""], length(b"hello")))
        self.assertEqual(exchange.response().body, b"hello")
        self.assertEqual(exchange.outcome, ["finished"])
        self.assertEqual(exchange.waits(), [True, False])

    def test_write_callable_then_list(self) -> None:
        """
        Bytes given to C{start_response}'s C{write} come first, with the
        headers sent once.
        """

        def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
            write = start_response("200 OK", length(b"head", b"tail"))
            write(b"head")
            return [b"tail"]

        exchange = self.exchange()
        exchange.serve(app)
        self.assertEqual(exchange.raw().count(b"HTTP/1.1"), 1)
        self.assertEqual(exchange.response().body, b"headtail")
        self.assertEqual(exchange.outcome, ["finished"])
        self.assertEqual(exchange.waits(), [True, False])

    def test_head(self) -> None:
        """
        A HEAD request gets the app's headers, Content-Length included, and
        no body.
        """
        exchange = self.exchange(b"HEAD")
        exchange.serve(simple_app([b"hello"], length(b"hello")))
        body = exchange.raw().partition(b"\r\n\r\n")[2]
        response = exchange.response()
        self.assertEqual(response.status, b"HTTP/1.1 200 OK")
        self.assertEqual(response.headers[b"content-length"], [b"5"])
        self.assertEqual(body, b"")
        self.assertEqual(exchange.outcome, ["finished"])
        self.assertEqual(exchange.waits(), [False])


class StreamingTests(WSGITestCase):
    """
    Bodies that do not say how many chunks are left are streamed as
    Twisted streams them.
    """

    def test_generator(self) -> None:
        """
        Each chunk of a generator reaches the transport before the generator
        is resumed for the next one.
        """
        exchange = self.exchange()
        seen: list[bool] = []

        def chunks() -> Iterator[bytes]:
            for chunk in [b"one", b"two", b"three"]:
                yield chunk
                seen.append(exchange.raw().endswith(chunk + b"\r\n"))

        exchange.serve(simple_app(chunks(), [("Content-Type", "text/plain")]))
        response = exchange.response()
        self.assertEqual(seen, [True, True, True])
        self.assertEqual(response.headers[b"transfer-encoding"], [b"chunked"])
        self.assertEqual(response.body, b"onetwothree")
        self.assertTrue(response.complete)
        self.assertEqual(exchange.outcome, ["finished"])
        self.assertEqual(exchange.waits(), [True, True, True, False])
        self.assertEqual(exchange.reactor.hand_offs[-1].wrote, b"0\r\n\r\n")

    def test_other_iterator(self) -> None:
        """
        An iterator other than a list's or a tuple's (here a map) is streamed
        too: every chunk is a waited write.
        """
        exchange = self.exchange()
        chunks = [b"one", b"two"]
        exchange.serve(simple_app(map(bytes, chunks), length(*chunks)))
        self.assertEqual(exchange.response().body, b"onetwo")
        self.assertEqual(exchange.outcome, ["finished"])
        self.assertEqual(exchange.waits(), [True, True, False])


class BackPressureTests(WSGITestCase):
    """
    A streamed body is the request's streaming producer: while the client's
    connection is full, the pool thread waits before its next chunk.
    """

    def test_registered_while_streaming(self) -> None:
        """
        From the first streamed chunk until the finish, the response is the
        request's streaming producer; it is unregistered before the finish.
        """
        exchange = self.exchange()
        producers: list[object] = []

        def chunks() -> Iterator[bytes]:
            yield b"one"
            producers.append(exchange.request.producer)
            yield b"two"

        exchange.serve(simple_app(chunks(), [("Content-Type", "text/plain")]))
        self.assertIsNotNone(producers[0])
        self.assertTrue(exchange.request.streamingProducer)
        self.assertIsNone(exchange.request.producer)
        self.assertEqual(exchange.outcome, ["finished"])

    def test_no_producer_for_a_list(self) -> None:
        """
        A one-chunk list body is handed over whole: no producer is needed.
        """
        exchange = self.exchange()
        registered: list[object] = []
        exchange.request.registerProducer = (  # type: ignore[method-assign]
            lambda producer, streaming: registered.append(producer)
        )
        exchange.serve(simple_app([b"hello"], length(b"hello")))
        self.assertEqual(registered, [])
        self.assertEqual(exchange.response().body, b"hello")

    def test_paused_client_holds_the_thread(self) -> None:
        """
        While the client's connection is paused the pool thread writes
        nothing more; when it resumes, the rest follows.
        """
        exchange = self.exchange()
        between = threading.Event()
        go = threading.Event()

        def chunks() -> Iterator[bytes]:
            yield b"one"
            between.set()
            go.wait(10)
            yield b"two"

        app = simple_app(chunks(), [("Content-Type", "text/plain")])
        thread = threading.Thread(target=exchange.serve, args=(app,), daemon=True)
        thread.start()
        self.assertTrue(between.wait(10))
        exchange.request.producer.pauseProducing()
        go.set()
        wait_until(lambda: waiting_for_client(thread), "the pool thread to wait", 10)
        self.assertNotIn(b"two", exchange.raw())
        exchange.request.producer.resumeProducing()
        thread.join(10)
        self.assertFalse(thread.is_alive())
        self.assertEqual(exchange.response().body, b"onetwo")
        self.assertEqual(exchange.outcome, ["finished"])

    def test_client_gone_while_paused(self) -> None:
        """
        A client that goes away while paused releases the pool thread,
        which stops producing and closes the body.
        """
        exchange = self.exchange()
        between = threading.Event()
        go = threading.Event()
        events: list[str] = []

        def chunks() -> Iterator[bytes]:
            try:
                yield b"one"
                between.set()
                go.wait(10)
                yield b"two"
                yield b"three"
            finally:
                events.append("closed")

        app = simple_app(chunks(), [("Content-Type", "text/plain")])
        thread = threading.Thread(target=exchange.serve, args=(app,), daemon=True)
        thread.start()
        self.assertTrue(between.wait(10))
        exchange.request.producer.pauseProducing()
        go.set()
        wait_until(lambda: waiting_for_client(thread), "the pool thread to wait", 10)
        exchange.request.connectionLost(Failure(ConnectionDone()))
        thread.join(10)
        self.assertFalse(thread.is_alive(), "the pool thread is still waiting")
        self.assertNotIn(b"two", exchange.raw())
        self.assertEqual(events, ["closed"])
        self.assertEqual(exchange.outcome, ["lost"])


class CloseTests(WSGITestCase):
    """
    The body's C{close} is called once, whatever the body.
    """

    def test_list(self) -> None:
        """
        A list body is closed once, before the request is finished.
        """
        exchange = self.exchange()
        body = Body([b"one", b"two"], exchange.events)
        exchange.serve(simple_app(body, length(b"one", b"two")))
        self.assertEqual(exchange.response().body, b"onetwo")
        self.assertEqual(body.close_calls, 1)
        self.assertEqual(exchange.events, ["close", "finish"])
        self.assertEqual(exchange.waits(), [True, False])

    def test_generator(self) -> None:
        """
        A streamed body is closed once, before the request is finished.
        """
        exchange = self.exchange()
        body = Body((chunk for chunk in [b"one", b"two"]), exchange.events)
        exchange.serve(simple_app(body, length(b"one", b"two")))
        self.assertEqual(exchange.response().body, b"onetwo")
        self.assertEqual(body.close_calls, 1)
        self.assertEqual(exchange.events, ["close", "finish"])

    def test_client_gone(self) -> None:
        """
        A body whose client went away is still closed once.
        """
        exchange = self.exchange()
        body = Body([b"one", b"two", b"three"], exchange.events)
        exchange.leave_before(1)
        exchange.serve(simple_app(body, length(b"one", b"two", b"three")))
        self.assertEqual(body.close_calls, 1)
        self.assertEqual(exchange.events, ["close"])

    def test_error_while_iterating(self) -> None:
        """
        A body whose iteration raises is still closed once (PEP 3333; Django
        sends C{request_finished} from there).
        """

        def chunks() -> Iterator[bytes]:
            yield b"one"
            raise Boom()

        exchange = self.exchange()
        body = Body(chunks(), exchange.events)
        exchange.serve(simple_app(body, [("Content-Type", "text/plain")]))
        self.assertEqual(body.close_calls, 1)
        self.assertTrue(exchange.transport.disconnected)
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)


class ErrorTests(WSGITestCase):
    """
    Application errors are logged and end the response.
    """

    def test_before_start_response(self) -> None:
        """
        An application that raises before anything is written gets a 500,
        and the request is finished.
        """

        def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
            raise Boom()

        exchange = self.exchange()
        exchange.serve(app)
        response = exchange.response()
        self.assertEqual(response.status, b"HTTP/1.1 500 Internal Server Error")
        self.assertTrue(response.complete)
        self.assertEqual(exchange.outcome, ["finished"])
        self.assertEqual(exchange.request.finish_calls, 1)
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)

    def test_after_start_response(self) -> None:
        """
        Headers given to C{start_response} are dropped when the application
        raises before writing: the client gets a plain 500.
        """

        def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
            start_response("200 OK", [("X-Custom", "yes")])
            raise Boom()

        exchange = self.exchange()
        exchange.serve(app)
        response = exchange.response()
        self.assertEqual(response.status, b"HTTP/1.1 500 Internal Server Error")
        self.assertNotIn(b"x-custom", response.headers)
        self.assertEqual(exchange.outcome, ["finished"])
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)

    def test_after_first_chunk(self) -> None:
        """
        A generator that raises after its first chunk was written loses the
        connection: no 500, no finish.
        """

        def chunks() -> Iterator[bytes]:
            yield b"one"
            raise Boom()

        exchange = self.exchange()
        exchange.serve(simple_app(chunks(), [("Content-Type", "text/plain")]))
        response = exchange.response()
        self.assertEqual(response.status, b"HTTP/1.1 200 OK")
        self.assertEqual(response.body, b"one")
        self.assertFalse(response.complete)
        self.assertNotIn(b"500", exchange.raw())
        self.assertTrue(exchange.transport.disconnected)
        self.assertEqual(exchange.request.finish_calls, 0)
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)

    def test_client_gone(self) -> None:
        """
        An application that raises after its client went away is logged,
        and nothing is written or finished.
        """

        def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
            raise Boom()

        exchange = self.exchange()
        exchange.leave_before(0)
        exchange.serve(app)
        self.assertEqual(exchange.raw(), b"")
        self.assertEqual(exchange.outcome, ["lost"])
        self.assertEqual(exchange.request.finish_calls, 0)
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)

    def test_bad_last_chunk(self) -> None:
        """
        A last chunk that cannot be written (a str, not bytes) is logged as
        an application error and ends the response, as Twisted's resource
        does, instead of raising in the reactor and leaving the client
        waiting.
        """
        exchange = self.exchange()
        chunks = ["hello"]  # str, not bytes: an application bug
        exchange.serve(simple_app(chunks, length(b"hello")))  # type: ignore[arg-type]
        ended = exchange.transport.disconnected or exchange.outcome == ["finished"]
        self.assertTrue(ended, "the response was neither finished nor cut")
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)


class ClientGoneTests(WSGITestCase):
    """
    A client that went away gets nothing more, and the request is not
    finished.
    """

    def test_before_final_hand_off(self) -> None:
        """
        When the client leaves just before the one hand-off of a one-chunk
        list, that hand-off neither writes nor finishes nor raises.
        """
        exchange = self.exchange()
        exchange.leave_before(0)
        exchange.serve(simple_app([b"hello"], length(b"hello")))
        self.assertEqual(exchange.raw(), b"")
        self.assertEqual(exchange.outcome, ["lost"])
        self.assertEqual(exchange.request.finish_calls, 0)
        self.assertEqual(exchange.waits(), [False])

    def test_during_list(self) -> None:
        """
        When the client leaves after the first of three chunks, the rest is
        neither written nor finished, and the body is not iterated further.
        """
        exchange = self.exchange()
        exchange.leave_before(1)
        chunks = [b"one", b"two", b"three"]
        exchange.serve(simple_app(chunks, length(*chunks)))
        self.assertEqual(exchange.response().body, b"one")
        self.assertEqual(exchange.outcome, ["lost"])
        self.assertEqual(exchange.request.finish_calls, 0)
        self.assertEqual(exchange.waits(), [True, True, False])
        self.assertEqual([h.wrote for h in exchange.reactor.hand_offs[1:]], [b"", b""])

    def test_inside_app(self) -> None:
        """
        When the client leaves while the application runs, the response is
        dropped without a write or a finish.
        """
        exchange = self.exchange()

        def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
            start_response("200 OK", length(b"hello"))
            exchange.request.connectionLost(Failure(ConnectionDone()))
            return [b"hello"]

        exchange.serve(app)
        self.assertEqual(exchange.raw(), b"")
        self.assertEqual(exchange.outcome, ["lost"])
        self.assertEqual(exchange.request.finish_calls, 0)

    def test_before_a_thread_takes_it(self) -> None:
        """
        When the client leaves while the request waits for a thread, the
        application never sees it, and its slot is given back.
        """
        exchange = self.exchange()
        waiting: list[Callable[[], object]] = []
        called: list[dict[str, Any]] = []
        released: list[bool] = []

        class QueuingPool:
            def callInThread(self, f: Callable[..., Any], *args: Any) -> None:
                waiting.append(lambda: f(*args))

        def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
            called.append(environ)
            start_response("200 OK", length(b"hello"))
            return [b"hello"]

        resource = WSGIResource(exchange.reactor, QueuingPool(), app)
        resource.serve(exchange.request, lambda: released.append(True))
        exchange.request.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(released, [])
        [run] = waiting
        run()
        self.assertEqual(called, [])
        self.assertEqual(released, [True])
        self.assertEqual(exchange.raw(), b"")
        self.assertEqual(exchange.request.finish_calls, 0)


class ImmediateReactor(MemoryReactorClock):
    """
    A memory reactor whose C{callFromThread} runs the call at once.
    """

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


def serve_raw(app: App, raw: bytes) -> bytes:
    """
    Feed C{raw} request bytes to a real C{HTTPChannel} of a C{Site} whose
    root is our L{WSGIResource} on C{app}; return what the client got.
    """
    reactor = ImmediateReactor()
    site = Site(WSGIResource(reactor, FakePool(), app), reactor=reactor)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(raw)
    return transport.value()  # type: ignore[no-any-return]


def body_reporter(seen: dict[str, Any]) -> App:
    """
    An app that reads its body as Django does (C{CONTENT_LENGTH} bytes of
    C{wsgi.input}) and keeps its environ and body in C{seen}.
    """

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        seen.update(environ, body=environ["wsgi.input"].read(length))
        start_response("204 No Content", [])
        return []

    return app


class RequestBodyTests(SynchronousTestCase):
    """
    The request body as an application reads it, from real request bytes.
    """

    def test_chunked(self) -> None:
        """
        A chunked body reaches the app whole, described as a worker sees it
        (the proxy engine re-frames it): C{CONTENT_LENGTH} is its length and
        there is no C{HTTP_TRANSFER_ENCODING}.
        """
        seen: dict[str, Any] = {}
        answer = serve_raw(
            body_reporter(seen),
            b"POST /echo HTTP/1.1\r\nHost: example.com\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 204 "), answer)
        self.assertEqual(seen["body"], b"hello, world")
        self.assertEqual(seen["CONTENT_LENGTH"], "12")
        self.assertNotIn("HTTP_TRANSFER_ENCODING", seen)
        self.assertIs(seen["wsgi.input_terminated"], True)

    def test_content_length(self) -> None:
        """
        A body with a C{Content-Length} is read as it was sent, and the
        input is terminated there too.
        """
        seen: dict[str, Any] = {}
        serve_raw(
            body_reporter(seen),
            b"POST /echo HTTP/1.1\r\nHost: example.com\r\n"
            b"Content-Length: 5\r\n\r\nhello",
        )
        self.assertEqual(seen["body"], b"hello")
        self.assertEqual(seen["CONTENT_LENGTH"], "5")
        self.assertIs(seen["wsgi.input_terminated"], True)

    def test_empty_chunked(self) -> None:
        """
        A chunked body with no data is a C{CONTENT_LENGTH} of 0.
        """
        seen: dict[str, Any] = {}
        serve_raw(
            body_reporter(seen),
            b"POST /echo HTTP/1.1\r\nHost: example.com\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        self.assertEqual(seen["body"], b"")
        self.assertEqual(seen["CONTENT_LENGTH"], "0")


class ValidEnvironTests(SynchronousTestCase):
    """
    The environ passes the standard library's WSGI validator.
    """

    def test_wsgiref_validate(self) -> None:
        """
        C{wsgiref.validate} finds nothing wrong with the environ of a POST
        with a body, nor with a chunked one, and no header is doubled as
        C{HTTP_CONTENT_TYPE} or C{HTTP_CONTENT_LENGTH}.
        """
        seen: dict[str, Any] = {}
        inner = body_reporter(seen)
        app = validator(inner)
        for raw in (
            b"POST /echo HTTP/1.1\r\nHost: example.com\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /echo HTTP/1.1\r\nHost: example.com\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ):
            seen.clear()
            answer = serve_raw(app, raw)
            self.assertTrue(answer.startswith(b"HTTP/1.1 204 "), answer)
            self.assertEqual(seen["body"], b"hello")
            self.assertNotIn("HTTP_CONTENT_TYPE", seen)
            self.assertNotIn("HTTP_CONTENT_LENGTH", seen)
            self.assertEqual(seen["SERVER_SOFTWARE"], "txrouter")

    def test_same_as_twisted(self) -> None:
        """
        Apart from the keys this module adds and the two it leaves out, the
        environ has exactly the keys and values of Twisted's
        C{_WSGIResponse}, for requests of every shape: no query, an empty
        one, repeated headers, Latin-1 bytes in a value, no path below the mount, a
        bare mount, several Content-Types.
        """
        cases = [
            (b"GET", b"/app/page?q=1&r=%20", [b"app"], [b"page"], []),
            (b"GET", b"/app/", [b"app"], [b""], [(b"Accept", b"a"), (b"Accept", b"b")]),
            (b"HEAD", b"/", [], [b""], [(b"X-Cafe", b"cr\xe8me")]),
            (b"POST", b"/a/b/c?", [b"a", b"b"], [b"c"], [(b"Content-Type", b"x/y")]),
            (b"PUT", b"/app", [b"app"], [], [(b"Content-Length", b"0")]),
            (
                b"GET",
                b"/x",
                [],
                [b"x"],
                [(b"Content-Type", b"a"), (b"Content-Type", b"b")],
            ),
            (
                b"GET",
                b"/x",
                [],
                [b"x"],
                [(b"Dnt", b"1"), (b"X-Forwarded-For", b"1.2.3.4")],
            ),
        ]
        for method, uri, prepath, postpath, headers in cases:
            exchange = Exchange(method)
            request = exchange.request
            request.uri, request.prepath, request.postpath = uri, prepath, postpath
            for name, value in headers:
                request.requestHeaders.addRawHeader(name, value)
            theirs = stock._WSGIResponse(None, None, None, request).environ
            ours = txrouter.wsgi.wsgi_environ(request)
            for added in (
                "SERVER_SOFTWARE",
                "wsgi.input_terminated",
                "wsgi.file_wrapper",
            ):
                ours.pop(added)
            for left_out in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                theirs.pop(left_out, None)
            for stream in ("wsgi.errors", "wsgi.input"):
                self.assertIs(type(ours.pop(stream)), type(theirs.pop(stream)))
            self.assertEqual(ours, theirs, uri)


class ContentLengthTests(WSGITestCase):
    """
    An application's body that does not match its own Content-Length, or a
    header with CR or LF, never leaves a client waiting or misreading.
    """

    def test_short_body_closes(self) -> None:
        """
        Fewer bytes than the Content-Length: the connection is closed (the
        client would wait for the rest), not finished.
        """
        exchange = self.exchange()
        headers = [("Content-Type", "text/plain"), ("Content-Length", "10")]
        exchange.serve(simple_app([b"hello"], headers))
        self.assertTrue(exchange.transport.disconnected)
        self.assertEqual(exchange.request.finish_calls, 0)

    def test_short_streamed_body_closes(self) -> None:
        """
        The same for a body of several chunks.
        """

        def chunks() -> Iterator[bytes]:
            yield b"one"
            yield b"two"

        exchange = self.exchange()
        headers = [("Content-Type", "text/plain"), ("Content-Length", "10")]
        exchange.serve(simple_app(chunks(), headers))
        self.assertTrue(exchange.transport.disconnected)
        self.assertEqual(exchange.request.finish_calls, 0)

    def test_long_body_closes(self) -> None:
        """
        More bytes than the Content-Length: nothing past it is written and
        the connection is closed (the extra bytes would be read as the next
        response).
        """

        def chunks() -> Iterator[bytes]:
            yield b"abc"
            yield b"defgh"

        exchange = self.exchange()
        headers = [("Content-Type", "text/plain"), ("Content-Length", "4")]
        exchange.serve(simple_app(chunks(), headers))
        self.assertTrue(exchange.transport.disconnected)
        self.assertNotIn(b"defgh", exchange.raw())
        self.assertEqual(exchange.request.finish_calls, 0)

    def test_exact_body_finishes(self) -> None:
        """
        A body of exactly its Content-Length is finished normally.
        """
        exchange = self.exchange()
        exchange.serve(simple_app([b"hel", b"lo"], length(b"hello")))
        self.assertEqual(exchange.request.finish_calls, 1)
        self.assertFalse(exchange.transport.disconnected)

    def test_head_without_body(self) -> None:
        """
        A HEAD answer has the GET's Content-Length and no body: finished.
        """
        exchange = self.exchange(b"HEAD")
        headers = [("Content-Type", "text/plain"), ("Content-Length", "10")]
        exchange.serve(simple_app([], headers))
        self.assertEqual(exchange.request.finish_calls, 1)

    def test_newline_in_header(self) -> None:
        """
        CR or LF in a header the application sets is its error: a 500, and
        the header is not sent.
        """
        exchange = self.exchange()
        headers = [("X-Bad", "a\r\nSet-Cookie: evil=1"), *length(b"hello")]
        exchange.serve(simple_app([b"hello"], headers))
        response = exchange.response()
        self.assertEqual(response.status, b"HTTP/1.1 500 Internal Server Error")
        self.assertNotIn(b"evil", exchange.raw())
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class HeldPool:
    """
    A thread pool that keeps each call until the test runs it, as a pool
    whose threads are all busy (or stuck in the application) would.
    """

    def __init__(self) -> None:
        self.calls: list[Callable[[], Any]] = []

    def callInThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.calls.append(lambda: f(*args, **kw))


class TimeoutTests(SynchronousTestCase):
    """
    A route's C{timeout}: an application that has not started its answer
    in time gets its client a 504, and its thread is left to finish,
    holding its slot until then.
    """

    def setUp(self) -> None:
        self.exchange = Exchange()
        self.reactor = ImmediateReactor()
        self.pool = HeldPool()
        self.released: list[str] = []
        self.resource = WSGIResource(
            self.reactor,
            self.pool,
            simple_app([b"late"], length(b"late")),
            timeout=5.0,
        )
        self.resource.serve(self.exchange.request, lambda: self.released.append("x"))

    def test_too_slow(self) -> None:
        """
        At C{timeout}, the client gets a 504 saying the application did not
        answer; the thread still counts, and holds its slot.
        """
        self.reactor.advance(4.9)
        self.assertEqual(self.exchange.raw(), b"")
        self.reactor.advance(0.1)
        response = self.exchange.response()
        self.assertEqual(response.status[:12], b"HTTP/1.1 504")
        self.assertIn(b"application did not answer in time", response.body)
        self.assertEqual(self.exchange.outcome, ["finished"])
        self.assertEqual((self.resource.abandoned, self.released), (1, []))

    def test_thread_finishes_after_504(self) -> None:
        """
        When the application's thread is done, its late answer is dropped,
        the slot is released once and the thread no longer counts.
        """
        self.reactor.advance(5.0)
        sent = self.exchange.raw()
        self.pool.calls.pop()()
        self.assertEqual(self.exchange.raw(), sent)
        self.assertEqual((self.resource.abandoned, self.released), (0, ["x"]))
        self.assertEqual(self.exchange.request.finish_calls, 1)

    def test_answer_in_time(self) -> None:
        """
        An answer within C{timeout} is sent as usual, the timer is gone and
        the slot released once.
        """
        self.reactor.advance(4.0)
        self.pool.calls.pop()()
        self.assertEqual(self.exchange.response().body, b"late")
        self.assertEqual(self.resource.waiting, {})
        # The looks for late answers stop at the next one, nothing waiting.
        self.reactor.advance(WSGIResource.CHECK_EVERY)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual((self.resource.abandoned, self.released), (0, ["x"]))

    def test_streaming_answer_started_in_time(self) -> None:
        """
        Once the answer has started, the timeout no longer applies, however
        long the body takes.
        """
        reactor = ImmediateReactor()
        resource = WSGIResource(
            reactor, FakePool(), simple_app(iter([b"a", b"b"]), []), 5.0
        )
        exchange = Exchange()
        resource.serve(exchange.request, lambda: None)
        self.assertEqual(resource.waiting, {})
        reactor.advance(10)
        self.assertEqual(exchange.response().body, b"ab")
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_late_within_a_check(self) -> None:
        """
        A request that came between two looks gets its 504 at the first
        look past its deadline: at most L{WSGIResource.CHECK_EVERY} late.
        """
        self.reactor.advance(0.3)
        exchange = Exchange()
        self.resource.serve(exchange.request, lambda: None)
        self.reactor.advance(4.7)  # 5.0: the first request's 504 only
        self.assertEqual(exchange.raw(), b"")
        self.assertEqual(self.exchange.response().status[:12], b"HTTP/1.1 504")
        self.reactor.advance(CHECK := WSGIResource.CHECK_EVERY)
        self.assertEqual(exchange.response().status[:12], b"HTTP/1.1 504")
        self.assertEqual(self.resource.abandoned, 2)
        self.reactor.advance(CHECK)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_error_releases(self) -> None:
        """
        An application error releases the slot too.
        """

        def failing(environ: dict[str, Any], start_response: StartResponse) -> Any:
            raise Boom()

        resource = WSGIResource(self.reactor, FakePool(), failing, 5.0)
        released: list[bool] = []
        exchange = Exchange()
        resource.serve(exchange.request, lambda: released.append(True))
        self.assertEqual(exchange.response().status[:12], b"HTTP/1.1 500")
        self.assertEqual(released, [True])
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)


class FileWrapperTests(WSGITestCase):
    """
    The environ's C{wsgi.file_wrapper}: a file body sent in large blocks,
    and closed.
    """

    def test_file_in_large_blocks(self) -> None:
        """
        A 600 KiB file wrapped with Django's block size (4 KiB) is sent
        whole in three hand-offs of at most 256 KiB, then closed.
        """
        data = bytes(range(256)) * (600 * 4)
        opened = BytesIO(data)

        def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
            start_response("200 OK", length(data))
            return environ["wsgi.file_wrapper"](opened, 4096)

        exchange = self.exchange()
        exchange.serve(app)
        self.assertEqual(exchange.response().body, data)
        writes = [h for h in exchange.reactor.hand_offs if h.waited]
        self.assertEqual(len(writes), 3)
        self.assertTrue(opened.closed)
