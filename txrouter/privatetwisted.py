"""
The private parts of Twisted that an upgrade needs, in one place:

  - the options of the running C{twistd}: it keeps its parsed
    C{ServerOptions} inside its application runner, which nothing public
    reaches (L{makeService} is given only the sub-command's options, whose
    C{parent} they are: L{remember_twistd_options}), and removes the
    pidfile they name when the reactor stops.
    When an upgrade hands the router to a new process, the old one must
    not remove the pidfile the new one wrote (L{forget_pidfile});
  - a listening port it made itself shuts its socket down when it closes
    (C{tcp.Port._shouldShutdown}), which would stop the copy a new process
    listens on too, and a UNIX one removes its socket's file
    (C{unix.Port._bindPath}); a port handed to a new process must do
    neither (L{hand_over_port}).

  - after C{twistd} drops root, a UNIX port root bound in a folder only
    root may write to cannot remove its socket's file, nor its lock
    file, when it closes: it raises, and the stop goes no further
    (L{keep_socket_files}).

  - the C{HTTPChannel} inside the protocol a C{Site} builds (Twisted
    wraps it to choose between HTTP/1.1 and HTTP/2), whose C{requests}
    tell whether a connection is idle (L{http_channel_of}), and the same
    wrapping around a channel class of ours (L{http_protocol_factory}),
    which passes on the file descriptors a UNIX socket receives to a
    channel that takes them (C{fileDescriptorReceived}): a UNIX transport
    hands them to the protocol it has, the wrapper; and which, when ALPN
    chooses HTTP/2, switches to an HTTP/2 connection of ours, as the
    wrapper switches to Twisted's.

  - the listen backlog of a TCP or UNIX server endpoint that Twisted's
    parser made (L{set_backlog}): its default, 50, is what the endpoint
    string did not say.

C{tests/test_upgrade.py}, C{tests/test_site.py} and
C{tests/test_serverendpoints.py} fail loudly if Twisted changes any of
these.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import cache
from typing import Any

from twisted.application.app import ServerOptions
from twisted.internet.abstract import FileDescriptor
from twisted.python import usage

__all__ = [
    "eager_connection",
    "eager_writes",
    "forget_pidfile",
    "hand_over_port",
    "http_channel_of",
    "http_protocol_factory",
    "keep_socket_files",
    "remember_twistd_options",
    "set_backlog",
    "twistd_options",
]


_twistd: weakref.ref[ServerOptions] | None = None


def remember_twistd_options(options: usage.Options) -> None:
    """
    Remember the C{twistd} options that C{options}, the C{txrouter}
    sub-command's, belong to, if a C{twistd} parsed them (for as long as
    it keeps them: a weak reference).
    """
    global _twistd
    parent = options.parent
    if isinstance(parent, ServerOptions):
        _twistd = weakref.ref(parent)


def twistd_options() -> ServerOptions | None:
    """
    The options of the C{twistd} that runs this process, or L{None} when
    it is not run by C{twistd} (a test, C{txrouter check}).
    """
    return _twistd() if _twistd is not None else None


def forget_pidfile() -> None:
    """
    Make the running C{twistd} leave its pidfile alone when it stops.
    """
    options = twistd_options()
    if options is not None:
        options["pidfile"] = ""


def hand_over_port(port: Any) -> None:
    """
    Make a listening port, when it closes, only close its own descriptor:
    no C{shutdown()} of the socket another process shares, and no removal
    of a UNIX socket's file.
    """
    port._shouldShutdown = False
    if hasattr(port, "_bindPath"):
        # A name in Linux's abstract namespace is never unlinked.
        port._bindPath = "\0"


def keep_socket_files(port: Any) -> None:
    """
    Make a UNIX listening port, when it closes, leave its socket's file
    and its lock file where they are (the next start replaces them).
    """
    port._bindPath = "\0"
    port.lockFile = None


def set_backlog(endpoint: Any, backlog: int) -> bool:
    """
    Set the listen backlog of a TCP or UNIX server endpoint (inside a
    C{haproxy:} wrapper) before it listens; L{False} for endpoints that
    have none (a C{systemd:} socket is already listening).
    """
    inner = getattr(endpoint, "_wrappedEndpoint", endpoint)
    if not hasattr(inner, "_backlog"):
        return False
    inner._backlog = backlog
    return True


def eager_writes(port: Any) -> bool:
    """
    Make the connections a TCP or UNIX port accepts from now on send what
    they are given once per pass of the reactor, rather than first ask
    epoll whether they may (L{_EagerWrites}); L{False} for other ports.
    """
    from twisted.internet import tcp, unix

    transport = getattr(port, "transport", None)
    if not isinstance(port, tcp.Port) or transport not in (tcp.Server, unix.Server):
        return False
    port.transport = _eager(transport)  # type: ignore[assignment]
    return True


def eager_connection(transport: Any) -> bool:
    """
    Make a TCP or UNIX connection this process made (an upstream's, a
    worker's) send as L{eager_writes} makes accepted ones send; L{False}
    for other transports.
    """
    from twisted.internet import tcp, unix

    kind: type = type(transport)
    if kind is not tcp.Client and kind is not unix.Client:
        return False
    transport.__class__ = _eager(kind)
    return True


class _EagerWrites:
    """
    A TCP connection whose writes go out at the end of the reactor's
    pass, in one C{send()} for all that was written in it (a response's
    head and body), without the two C{epoll_ctl()} calls and the extra pass
    Twisted takes to be told that the socket is writable, which it almost
    always is. Only what the socket does not take waits for epoll, as in
    Twisted. The sending is Twisted's own C{doWrite}, with its handling of
    producers, closes and errors.
    """

    # Whether epoll watches it for writing (what the socket did not take),
    # and whether it waits for the end of the pass.
    _watched = False
    _queued = False

    def startWriting(self) -> None:
        if self._watched or self._queued:
            return
        self._queued = True
        _queue_flush(self)

    def stopWriting(self) -> None:
        self._watched = False
        super().stopWriting()  # type: ignore[misc]

    def flush_now(self) -> None:
        self._queued = False
        connection: Any = self
        if not connection.connected or getattr(connection, "_aborting", False):
            return
        why = connection.doWrite()
        if why:
            connection.reactor._disconnectSelectable(connection, why, False)
        elif connection.dataBuffer or connection._tempDataBuffer:
            self._watched = True
            FileDescriptor.startWriting(connection)


@cache
def _eager(base: type) -> type:
    return type(f"Eager{base.__name__}", (_EagerWrites, base), {})


_flushing: list[Any] = []


def _queue_flush(transport: Any) -> None:
    # One call at the end of the pass flushes every connection written to
    # in it.
    if not _flushing:
        transport.reactor.callLater(0, _flush)
    _flushing.append(transport)


def _flush() -> None:
    transports = _flushing[:]
    del _flushing[:]
    for transport in transports:
        transport.flush_now()


def http_channel_of(protocol: Any) -> Any:
    """
    The C{HTTPChannel} a C{Site}'s protocol wraps (or the protocol itself).
    """
    return getattr(protocol, "_channel", protocol)


def http_protocol_factory(
    channel_class: type, http2: Callable[[Any], Any] | None = None
) -> Any:
    """
    A C{Site.protocol} that builds C{channel_class} channels, wrapped as
    Twisted wraps its own (so that HTTP/2 can be negotiated over TLS).

    @param http2: when ALPN chooses C{h2}, makes the HTTP/2 connection
        that replaces a channel (given the channel); without it, Twisted's.
    """
    from twisted.web.http import _GenericHTTPChannelProtocol

    wrapper: type = _GenericHTTPChannelProtocol
    if hasattr(channel_class, "fileDescriptorReceived"):
        wrapper = _descriptors_passed_on(wrapper)
    if http2 is not None:
        wrapper = _negotiating(wrapper, http2)

    def build(factory: Any = None) -> Any:
        return wrapper(channel_class())

    return build


def _negotiating(wrapper: type, http2: Callable[[Any], Any]) -> type:
    class Negotiating(wrapper):  # type: ignore[misc]
        def dataReceived(self, data: bytes) -> None:
            # Twisted's switch (the wrapper's dataReceived), to a connection
            # of ours: the channel stops producing for the transport and
            # its timer, and the new connection takes the transport over.
            channel: Any = self._channel  # type: ignore[has-type]
            if self._negotiatedProtocol is None and (  # type: ignore[has-type]
                getattr(channel.transport, "negotiatedProtocol", None) == b"h2"
            ):
                self._negotiatedProtocol = b"h2"
                producer = channel._networkProducer
                producer.unregisterProducer()
                channel.setTimeout(None)
                transport = channel.transport
                new = self._channel = http2(channel)
                new.requestFactory = self._requestFactory
                new.site = self._site
                new.factory = self._factory
                new.timeOut = self._timeOut
                if self._callLater is not None:
                    new.callLater = self._callLater
                new.makeConnection(transport)
                producer.registerProducer(new, True)
            super().dataReceived(data)

    return Negotiating


def _descriptors_passed_on(wrapper: type) -> type:
    from twisted.internet.interfaces import IFileDescriptorReceiver
    from zope.interface import implementer

    @implementer(IFileDescriptorReceiver)
    class PassingOn(wrapper):  # type: ignore[misc]
        def fileDescriptorReceived(self, descriptor: int) -> None:
            self._channel.fileDescriptorReceived(descriptor)

    return PassingOn
