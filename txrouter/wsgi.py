"""
L{WSGIResource}: Twisted's WSGI resource, with one hand-off fewer each way
for the common response whose body is a list.

Twisted runs the application in a pool thread and then, for every chunk of
the body, waits in that thread until the reactor has written it
(C{blockingCallFromThread}), and finally asks the reactor to finish the
request. A Django response is a list of one chunk, so each request wakes
the reactor twice and the pool thread once more than it needs to, and on
two CPUs each wake-up is a cross-CPU switch. Here, when the body iterator
says how many chunks are left (a list or tuple), the last chunk goes to the
reactor together with the finish, in one call that the thread does not wait
for. Measured with C{sites/blog}'s C{/hello/} and C{wrk -c32}: about 15 %
more requests per second in-process and in worker processes.

A body of several chunks (a generator, C{StreamingHttpResponse}, a
C{FileResponse}) is written chunk by chunk as in Twisted, with one thing
added: back-pressure. Twisted's pool thread waits only until the reactor has
buffered each chunk, so a large download to a slow client ends up entirely
in memory. Here the response is the request's streaming producer, and while
the client's connection is full the pool thread waits before producing the
next chunk.

The environ is made here (L{_environ}), with Twisted's keys and values and
a few more (a differential test holds them to Twisted's), in about half
Twisted's time. C{start_response} and error handling are Twisted's own,
except that the body's C{close()} is called after an error while iterating
too. A route's timeout is kept by one look every half second for requests
past their deadline, not by a timer per request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from operator import length_hint
from sys import exc_info
from threading import Event
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.internet.threads import blockingCallFromThread
from twisted.python.failure import Failure
from twisted.web import wsgi
from twisted.web.http import INTERNAL_SERVER_ERROR
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from txrouter.errorpage import TOO_SLOW, error_page

__all__ = ["SERVER_SOFTWARE", "FileWrapper", "WSGIResource", "wsgi_environ"]

_NEWLINE = re.compile(r"[\r\n]")

#: The environ's C{SERVER_SOFTWARE}, in process and in workers.
SERVER_SOFTWARE = "txrouter"

# Iterators that know exactly how many items are left, so that the last
# chunk is known without waiting for the application to produce more.
_COUNTED: tuple[type, ...] = (type(iter([])), type(iter(())))


@implementer(IPushProducer)
class _Response(wsgi._WSGIResponse):
    # Set while the client takes more; the pool thread waits on it before
    # each chunk it writes. Made at the first streamed chunk (a one-chunk
    # body never needs it), before the response becomes a producer.
    _flowing: Event | None = None
    _producing = False
    # Bytes the application's Content-Length still allows, when it set one.
    _left: int | None = None

    # Set when the client was answered 504 while the thread went on.
    _abandoned = False

    def __init__(
        self,
        resource: WSGIResource,
        request: Any,
        release: Callable[[], None] | None = None,
    ) -> None:
        # Twisted's __init__, with the environ made by wsgi_environ().
        self.started = False
        self.reactor = resource._reactor
        self.threadpool = resource._threadpool
        self.application = resource._application
        self.request = request
        request.notifyFinish().addBoth(self._finished)
        # The application sets every response header itself.
        request.defaultContentType = None
        self.environ = _environ(request)
        self._resource = resource
        self._release = release

    def start(self) -> None:
        if self._resource.timeout is not None:
            self._resource.watch(self)
        super().start()

    def _answering(self) -> None:
        """
        The application's answer (or error) reached the reactor.
        """
        self._resource.waiting.pop(self, None)

    def too_slow(self) -> None:
        """
        The application has not started its answer within the route's
        timeout: answer 504; its thread cannot be stopped, so it is left to
        finish, and its slot with it.
        """
        if self._requestFinished:
            return
        resource = self._resource
        resource.abandoned += 1
        self._abandoned = True
        self._unregister()
        self._log.warn(
            "{uri}: the application did not answer in {timeout:g}s (504); its "
            "thread is left to finish ({count} such thread(s) now)",
            uri=self.request.uri.decode("latin-1"),
            timeout=resource.timeout,
            count=resource.abandoned,
        )
        error_page(self.request, 504, body=TOO_SLOW)

    def _thread_done(self) -> None:
        """
        The thread is done with the application (in the reactor thread).
        """
        release, self._release = self._release, None
        if release is None:
            return
        if self._abandoned:
            self._abandoned = False
            self._resource.abandoned -= 1
            self._log.info(
                "{uri}: the application's thread finished after its 504",
                uri=self.request.uri.decode("latin-1"),
            )
        release()

    # -- IPushProducer, called in the reactor thread by the client's side

    def pauseProducing(self) -> None:
        assert self._flowing is not None
        self._flowing.clear()

    def resumeProducing(self) -> None:
        assert self._flowing is not None
        self._flowing.set()

    def stopProducing(self) -> None:
        assert self._flowing is not None
        self._flowing.set()  # the connection is going; let the thread see it

    def _finished(self, ignored: object) -> None:
        super()._finished(ignored)
        if self._flowing is not None:
            self._flowing.set()

    # -- in the pool thread

    def run(self) -> None:
        """
        Call the application and send its body (in a pool thread).
        """
        if self._requestFinished:
            # Answered (504) or gone while it waited for a thread: the
            # application never sees it, and its slot is given back.
            self.reactor.callFromThread(self._finish, False, b"")
            return
        try:
            body = self.application(self.environ, self.startResponse)
            try:
                last = self._write_all_but_last(body)
            finally:
                # PEP 3333: also after an error while iterating (Twisted
                # skips it then, and Django's request_finished with it).
                close = getattr(body, "close", None)
                if close is not None:
                    close()
        except BaseException:
            self.reactor.callFromThread(self._failed, self.started, *exc_info())
        else:
            self.reactor.callFromThread(self._finish, self.started, last)
        self.started = True

    def _write_all_but_last(self, body: Any) -> bytes:
        """
        Write the chunks of C{body}, keeping back the last one when the
        iterator tells which it is.

        @return: the chunk kept back, or C{b""}.
        """
        chunks = iter(body)
        counted = isinstance(chunks, _COUNTED)
        for chunk in chunks:
            if counted and not length_hint(chunks):
                return chunk  # type: ignore[no-any-return]
            if chunk:
                self.write(chunk)
            if self._requestFinished:
                break
        return b""

    def write(self, data: bytes) -> None:
        """
        Write one chunk, once the client can take more (the WSGI C{write}
        callable, also used for each chunk of a streamed body).
        """
        if self._flowing is None:
            self._flowing = Event()
            self._flowing.set()
        self._flowing.wait()
        started, self.started = self.started, True
        blockingCallFromThread(self.reactor, self._write, started, data)

    # -- in the reactor thread

    def _sendResponseHeaders(self) -> None:
        for name, value in self.headers:
            if _NEWLINE.search(name) or _NEWLINE.search(value):
                raise ValueError(f"CR or LF in the response header {name!r}")
        super()._sendResponseHeaders()
        request = self.request
        length = request.responseHeaders.getRawHeaders(b"content-length")
        if (
            length
            and request.method != b"HEAD"
            and request.code not in (204, 304)
            and length[-1].isdigit()
        ):
            self._left = int(length[-1])

    def _counted(self, data: bytes) -> bool:
        """
        Count C{data} against the application's C{Content-Length}; whether
        it may be written (more than it said closes the connection: the
        extra bytes would be read as the start of the next response).
        """
        if self._left is None:
            return True
        self._left -= len(data)
        if self._left >= 0:
            return True
        self._log.error(
            "WSGI application error: {uri} sent more than its Content-Length; "
            "closing the connection",
            uri=self.request.uri.decode("latin-1"),
        )
        self._unregister()
        self.request.loseConnection()
        return False

    def _write(self, started: bool, data: bytes) -> None:
        if self._requestFinished:
            return  # the client went away while the thread waited
        if not started:
            self._answering()
            self._sendResponseHeaders()
            self.request.registerProducer(self, True)
            self._producing = True
        if self._counted(data):
            self.request.write(data)

    def _unregister(self) -> None:
        if self._producing:
            self._producing = False
            self.request.unregisterProducer()

    def _finish(self, started: bool, last: bytes) -> None:
        """
        Send what is left and finish the request (in the reactor thread).
        """
        self._answering()
        self._thread_done()
        if self._requestFinished:
            return  # the client went away
        try:
            if not started:
                self._sendResponseHeaders()
            if last:
                if not self._counted(last):
                    return
                self.request.write(last)
        except BaseException:
            # A bad status line or a chunk that is not bytes: what Twisted
            # does for an error in a write, here in the reactor thread.
            self._failed(self.request.startedWriting, *exc_info())
            return
        self._unregister()
        if self._left:
            # The client would wait for the rest for ever.
            self._log.error(
                "WSGI application error: {uri} sent {missing} bytes fewer than "
                "its Content-Length; closing the connection",
                uri=self.request.uri.decode("latin-1"),
                missing=self._left,
            )
            self.request.loseConnection()
            return
        self.request.finish()

    def _failed(self, started: bool, kind: Any, error: Any, traceback: Any) -> None:
        """
        Log an application error and end the response (in the reactor thread).
        """
        self._answering()
        self._thread_done()
        failure = Failure(error, kind, traceback)
        self._log.failure("WSGI application error", failure=failure)
        if not self._requestFinished:
            self._unregister()
        if started:
            self.request.loseConnection()
        elif not self._requestFinished:
            self.request.setResponseCode(INTERNAL_SERVER_ERROR)
            self.request.finish()


class WSGIResource(wsgi.WSGIResource):
    """
    Twisted's L{twisted.web.wsgi.WSGIResource}, answering through
    L{_Response}.

    @ivar timeout: seconds the application has to start its answer before
        the client gets 504 (L{None}: no limit). Rather than a timer per
        request, a look every L{CHECK_EVERY} seconds, while any request
        waits, finds those past their deadline: a 504 comes at most that
        much late.
    @ivar abandoned: requests answered 504 whose thread still runs.
    @ivar waiting: the requests whose answer has not started yet, with
        their deadlines (reactor time), oldest first (one C{timeout} for
        all, so deadlines come in the order requests do).
    """

    #: Seconds between two looks for requests past their deadline.
    CHECK_EVERY = 0.5

    def __init__(
        self,
        reactor: Any,
        threadpool: Any,
        application: Any,
        timeout: float | None = None,
    ) -> None:
        super().__init__(reactor, threadpool, application)
        self.timeout = timeout
        self.abandoned = 0
        self.waiting: dict[_Response, float] = {}
        self._checks: LoopingCall | None = None

    def watch(self, response: _Response) -> None:
        """
        Answer C{response} 504 unless its application starts answering
        within C{timeout}.
        """
        assert self.timeout is not None
        self.waiting[response] = self._reactor.seconds() + self.timeout
        if self._checks is None:
            self._checks = LoopingCall(self._check)
            self._checks.clock = self._reactor
            self._checks.start(self.CHECK_EVERY, now=False)

    def _check(self) -> None:
        now = self._reactor.seconds()
        waiting = self.waiting
        while waiting:
            response, deadline = next(iter(waiting.items()))
            if deadline > now:
                return
            del waiting[response]
            response.too_slow()
        # Nothing waits: no more looks until a request does.
        assert self._checks is not None
        self._checks.stop()
        self._checks = None

    def render(self, request: Any) -> int:
        _Response(self, request).start()
        return NOT_DONE_YET

    def serve(self, request: Any, release: Callable[[], None]) -> None:
        """
        Serve C{request}; call C{release} once the application's thread is
        free again. See L{txrouter.bulkhead.Admitted}.
        """
        _Response(self, request, release).start()


#: The environ's C{HTTP_*} key of each request header name as Twisted
#: keeps it; L{None} for the headers that have a key of their own. At most
#: L{_KEYS_KEPT} names are kept: a client's made-up ones are not.
_HTTP_KEYS: dict[bytes, str | None] = {}
_KEYS_KEPT = 512
_OWN_KEYS = frozenset({"HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"})


def _http_key(name: bytes) -> str | None:
    key = _HTTP_KEYS.get(name)
    if key is None and name not in _HTTP_KEYS:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if key in _OWN_KEYS:
            key = None
        if len(_HTTP_KEYS) < _KEYS_KEPT:
            _HTTP_KEYS[name] = key
    return key


def _environ(request: Any) -> dict[str, Any]:
    """
    The environ of C{request}: the keys and values of Twisted's
    C{_WSGIResponse} (PEP 3333's native strings, ISO-8859-1), except that
    C{CONTENT_TYPE} and C{CONTENT_LENGTH} are not also C{HTTP_*} keys
    (C{wsgiref.validate} refuses them), a body that came chunked (or in
    HTTP/2 frames, without C{Content-Length}) is described by its length
    (the way a worker sees it, since the proxy engine re-frames it with
    C{Content-Length}), and C{SERVER_SOFTWARE},
    C{wsgi.input_terminated} and C{wsgi.file_wrapper} are set.
    """
    peer = request.getClientAddress()
    prepath, postpath = request.prepath, request.postpath
    headers = request.requestHeaders
    content_type = headers.getRawHeaders(b"content-type")
    content_length = headers.getRawHeaders(b"content-length")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method.decode("latin-1"),
        "REMOTE_ADDR": _native(peer.host),
        "REMOTE_PORT": str(peer.port),
        "SCRIPT_NAME": "/" + b"/".join(prepath).decode("latin-1") if prepath else "",
        "PATH_INFO": "/" + b"/".join(postpath).decode("latin-1") if postpath else "",
        "QUERY_STRING": request.uri.partition(b"?")[2].decode("latin-1"),
        "CONTENT_TYPE": content_type[-1].decode("latin-1") if content_type else "",
        "CONTENT_LENGTH": (
            content_length[-1].decode("latin-1") if content_length else ""
        ),
        "SERVER_NAME": _native(request.getRequestHostname()),
        "SERVER_PORT": str(request.getHost().port),
        "SERVER_PROTOCOL": request.clientproto.decode("latin-1"),
    }
    chunked = False
    for name, values in headers.getAllRawHeaders():
        key = _http_key(name)
        if key is None:
            continue
        if key == "HTTP_TRANSFER_ENCODING":
            # A chunked body, already undone into request.content: its
            # length, and no Transfer-Encoding, as in a worker.
            chunked = True
            continue
        # Twisted turns a newline into a space (none passes the channel).
        if len(values) == 1:
            environ[key] = values[0].decode("latin-1").replace("\n", " ")
        else:
            value = ",".join(v.decode("latin-1") for v in values)
            environ[key] = value.replace("\n", " ")
    content = request.content
    # A request of ours counts its body (a plain Twisted one, in tests, not).
    unannounced = not content_length and getattr(request, "body_length", 0) > 0
    if chunked or unannounced:
        # HTTP/2 frames a body without Content-Length as well.
        content.seek(0, 2)
        environ["CONTENT_LENGTH"] = str(content.tell())
        content.seek(0)
    environ["wsgi.version"] = (1, 0)
    environ["wsgi.url_scheme"] = "https" if request.isSecure() else "http"
    environ["wsgi.run_once"] = False
    environ["wsgi.multithread"] = True
    environ["wsgi.multiprocess"] = False
    environ["wsgi.errors"] = wsgi._ErrorStream()
    environ["wsgi.input"] = wsgi._InputStream(content)
    environ["wsgi.input_terminated"] = True  # twisted.web read it whole
    environ["wsgi.file_wrapper"] = FileWrapper
    environ["SERVER_SOFTWARE"] = SERVER_SOFTWARE
    return environ


def _native(value: str | bytes) -> str:
    # Twisted's _wsgiString: an address may be either.
    return value if isinstance(value, str) else value.decode("latin-1")


def wsgi_environ(request: Any) -> dict[str, Any]:
    """
    The environ an application is called with for C{request}, made as for
    a request being served, with no application, thread or reactor (for
    C{txrouter explain}).
    """
    return _environ(request)


class FileWrapper:
    """
    The environ's C{wsgi.file_wrapper} (PEP 3333): a file the application
    returns as its body, read in the pool thread in large blocks with
    back-pressure. Django's C{FileResponse} uses it.

    There is no C{sendfile()}: Twisted's transports buffer writes in user
    space (and TLS needs the bytes), so the file is read here, in blocks of
    at least L{BLOCK} bytes, each handed to the reactor once.
    """

    #: The smallest block read: one hand-off to the reactor per block.
    BLOCK = 256 * 1024

    def __init__(self, filelike: Any, block_size: int = BLOCK) -> None:
        self.filelike = filelike
        self.block_size = max(block_size, self.BLOCK)

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while block := read(self.block_size):
            yield block

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()
