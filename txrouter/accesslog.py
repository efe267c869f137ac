"""
The access log: one line per answered request, in Apache's combined format
(the default, as Twisted writes it) or as one JSON object per line
(C{access_log_format: json}), into a file that SIGUSR1 reopens.

    >>> log = AccessLog("/var/log/txrouter/access.log", "json", trusted, reactor)
    >>> site = RouterSite(router, reactor, log, limits)
    >>> AccessLogService(reactor, log).setServiceParent(top)

A JSON line says which route took the request (L{RouteTag}, recorded by
the router as it picks the route) and who served it: a worker process (its
PID), an upstream (its URL, recorded by the proxy engine as it picks one),
the router process itself, its static files or a redirect. For example::

    {"time":"2025-05-04T10:20:30.123Z","client":"203.0.113.7",
     "host":"example.com","method":"GET","path":"/wiki/Main?x=1",
     "protocol":"HTTP/1.1","status":200,"body_bytes":5120,
     "duration":0.012345,"route":{"host":"","prefix":"/wiki/"},
     "served_by":"worker","worker_pid":4242,"upstream":null,
     "referer":null,"user_agent":"curl/8.5.0"}

(on one line). Values taken from the request are cut to L{VALUE_LIMITS}
bytes (a cut value ends with C{"\\u2026"}), so a line is at most
L{MAX_LINE} bytes plus the lengths of its route's host and prefix and its
upstream's URL, which come from routes.yaml.

The file is written with one C{write(2)} per line, from the reactor
thread, and is opened and closed by L{AccessLogService}, not by the
listening ports: requests that finish while the router drains, after its
ports have closed, are logged too. On SIGUSR1 (logrotate's habit: rename
the file, then signal) the service opens the path anew and closes the old
file between two lines: each line is whole, in the old file or the new.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass, field
from functools import lru_cache
from time import gmtime, strftime
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python import log as legacy_log
from twisted.web.http import combinedLogFormatter, datetimeToLogString

from txrouter.forwarding import TrustedProxies
from txrouter.routestats import RouteStats

__all__ = [
    "COMBINED",
    "FORMATS",
    "IN_PROCESS",
    "JSON",
    "MAX_LINE",
    "REDIRECT",
    "STATIC",
    "UPSTREAM",
    "VALUE_LIMITS",
    "WORKER",
    "AccessLog",
    "AccessLogService",
    "RouteTag",
    "client_address",
    "json_line",
    "served_by",
]

_log = Logger()

COMBINED = "combined"
JSON = "json"
#: The values of C{access_log_format}; the first is the default.
FORMATS = (COMBINED, JSON)

# Who served a request (a JSON line's "served_by").
IN_PROCESS = "in process"
WORKER = "worker"
UPSTREAM = "upstream"
STATIC = "static"
REDIRECT = "redirect"

#: The most bytes a JSON line keeps of each value taken from the request
#: (before escaping).
VALUE_LIMITS = {
    "client": 64,
    "host": 256,
    "method": 32,
    "path": 2048,
    "protocol": 16,
    "referer": 1024,
    "user_agent": 512,
}

#: What ends a value that was cut.
_CUT = "\u2026"

#: The longest a JSON line can be, in bytes, besides the route's host and
#: prefix and the upstream's URL: each byte of a value from the request
#: takes at most 6 once escaped (C{\\u0001}; a byte that is not UTF-8 is
#: C{\\\\xff}), plus its cut mark, plus the rest of the line.
MAX_LINE = sum(6 * limit + 6 for limit in VALUE_LIMITS.values()) + 512


@dataclass(frozen=True, slots=True)
class RouteTag:
    """
    Which route took a request, as the router records it on the request
    (C{request.route}): made once per route when the router is built.

    @ivar host: the route's table in routes.yaml: C{""} for the top-level
        C{routes:}, else its key under C{hosts:} (lower case; C{*.}
        wildcards as written).
    @ivar prefix: the route's prefix (C{/wiki/}).
    @ivar served: who serves its requests: L{IN_PROCESS}, L{WORKER},
        L{UPSTREAM}, L{STATIC} or L{REDIRECT}; L{None} when the router
        was not told.
    @ivar stats: the route's counters, which the site adds each request
        to when it ends (L{txrouter.routestats}).
    """

    host: str
    prefix: str
    served: str | None = None
    stats: RouteStats = field(default_factory=RouteStats, compare=False, repr=False)

    def redirected(self) -> RouteTag:
        """
        The tag of a request the route's router answered with a redirect
        itself (its prefix without the trailing slash): still counted as
        the route's.
        """
        return RouteTag(self.host, self.prefix, REDIRECT, self.stats)


def served_by(kind: str, workers: bool, upstreams: bool) -> str:
    """
    Who serves a route's requests, for its L{RouteTag}.

    @param kind: the route's kind key (C{django}, C{static}, ...).
    @param workers: whether it has worker processes.
    @param upstreams: whether its requests go to upstreams.
    """
    if workers:
        return WORKER
    if upstreams:
        return UPSTREAM
    if kind == "static":
        return STATIC
    if kind == "redirect":
        return REDIRECT
    return IN_PROCESS


def _cut(raw: bytes | None, limit: int) -> str | None:
    """
    A value from the request as text for JSON: at most C{limit} of its
    bytes, bytes that are not UTF-8 shown as C{\\xNN}.
    """
    if raw is None:
        return None
    if len(raw) <= limit:
        return raw.decode("utf-8", "backslashreplace")
    return raw[:limit].decode("utf-8", "backslashreplace") + _CUT


def client_address(request: Any, trusted: TrustedProxies) -> str | None:
    """
    The client's address as the router believes it: the peer's, unless
    the peer is a trusted proxy; then the rightmost address of
    C{X-Forwarded-For} that is not a trusted proxy's (the leftmost if all
    are), as the proxies wrote it. L{None} for a UNIX-socket peer.

    Addresses to the left of the first untrusted one were written by that
    untrusted hop, so they are not believed (the header is the client's to
    forge).
    """
    peer = getattr(request.getClientAddress(), "host", None)
    if peer is None or peer not in trusted:
        return peer
    hops = [
        hop.strip()
        for value in request.requestHeaders.getRawHeaders(b"x-forwarded-for", ())
        for hop in value.split(b",")
    ]
    hops = [hop for hop in hops if hop]
    if not hops:
        return str(peer)
    for hop in reversed(hops):
        text = _cut(hop, VALUE_LIMITS["client"])
        assert text is not None
        if text not in trusted:
            return text
    return _cut(hops[0], VALUE_LIMITS["client"])


@lru_cache(maxsize=1)
def _iso_second(second: int) -> str:
    return strftime("%Y-%m-%dT%H:%M:%S", gmtime(second))


@lru_cache(maxsize=1)
def _log_date(second: int) -> str:
    return datetimeToLogString(second)  # type: ignore[no-any-return]


def json_line(request: Any, now: float, trusted: TrustedProxies) -> str:
    """
    The JSON access log line of C{request}, answered at C{now} (without
    its line end).
    """
    second = int(now)
    millis = min(int((now - second) * 1000), 999)
    routed_at = getattr(request, "routed_at", None)
    route = getattr(request, "route", None)
    upstream = getattr(request, "upstream", None)
    served = route.served if route is not None else None
    limits = VALUE_LIMITS
    return json.dumps(
        {
            "time": f"{_iso_second(second)}.{millis:03d}Z",
            "client": client_address(request, trusted),
            "host": _cut(request.getHeader(b"host"), limits["host"]),
            "method": _cut(request.method, limits["method"]),
            "path": _cut(request.uri, limits["path"]),
            "protocol": _cut(request.clientproto, limits["protocol"]),
            "status": request.code,
            "body_bytes": request.sentLength,
            "duration": (
                None if routed_at is None else round(max(0.0, now - routed_at), 6)
            ),
            "route": (
                None if route is None else {"host": route.host, "prefix": route.prefix}
            ),
            "served_by": served,
            "worker_pid": (
                getattr(upstream, "pid", None)
                if served == WORKER and upstream is not None
                else None
            ),
            "upstream": (
                upstream.name if served == UPSTREAM and upstream is not None else None
            ),
            "referer": _cut(request.getHeader(b"referer"), limits["referer"]),
            "user_agent": _cut(request.getHeader(b"user-agent"), limits["user_agent"]),
        },
        separators=(",", ":"),
    )


class AccessLog:
    """
    Where and how answered requests are logged.

    @ivar path: the file, or L{None} for twistd's own log.
    @ivar format: L{COMBINED} or L{JSON}.
    @ivar trusted: the proxies whose C{X-Forwarded-For} names the client
        (JSON lines only: the combined format names the peer, as it
        always has).
    """

    def __init__(
        self,
        destination: str,
        format: str,
        trusted: TrustedProxies,
        clock: IReactorTime,
    ) -> None:
        """
        @param destination: a file path, or C{"-"} for twistd's log.
        """
        if format not in FORMATS:
            raise ValueError(f"unknown access log format {format!r}")
        self.path = None if destination == "-" else destination
        self.format = format
        self.trusted = trusted
        self._clock = clock
        self._fd: int | None = None
        self._failures = 0

    def open(self) -> None:
        """
        Open the file (appending, created if need be); nothing is written
        before, nor after L{close}.
        """
        if self.path is not None and self._fd is None:
            self._fd = self._open()

    def _open(self) -> int:
        assert self.path is not None
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        return os.open(self.path, flags, 0o666)

    def reopen(self) -> None:
        """
        Go on in a file opened anew at the same path, and close the one
        written so far (which logrotate has renamed): the next line goes to
        the new file, every line before it is whole in the old one.

        @raise OSError: the path cannot be opened; lines go on to the old
            file.
        """
        if self.path is None or self._fd is None:
            return
        fd = self._open()
        old, self._fd = self._fd, fd
        os.close(old)

    def close(self) -> None:
        """
        Close the file.
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def write(self, request: Any) -> None:
        """
        Log one answered request.
        """
        now = self._clock.seconds()
        if self.format == JSON:
            line = json_line(request, now, self.trusted)
        else:
            line = combinedLogFormatter(_log_date(int(now)), request)
        if self.path is None:
            legacy_log.logfile.write(line + "\n")
            return
        fd = self._fd
        if fd is None:
            return
        data = (line + "\n").encode("utf-8")
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError as e:
            self._failures += 1
            if self._failures % 1000 == 1:
                _log.error(
                    "cannot write to the access log {path}: {why} ({count} "
                    "line(s) lost so far)",
                    path=self.path,
                    why=e.strerror or e,
                    count=self._failures,
                )


class AccessLogService(Service):
    """
    Open the access log when the router starts (after twistd has
    daemonized), close it when the router has stopped serving, and reopen
    it on SIGUSR1.

    SIGUSR1 first does what it did before this service started: under
    C{twistd --logfile FILE}, twistd rotates FILE itself (renames it to
    FILE.1, the older ones to FILE.2, ...), unless FILE has been moved
    away already (then twistd goes on writing to it where it is). The
    service's handler is taken away again at stop.
    """

    def __init__(self, reactor: Any, access_log: AccessLog | None) -> None:
        """
        @param access_log: L{None} when there is none; SIGUSR1 is still
            taken (its default would end the router).
        """
        self._reactor = reactor
        self.access_log = access_log
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        if self.access_log is not None:
            self.access_log.open()
        self._previous = signal.signal(signal.SIGUSR1, self._received)

    def stopService(self) -> None:
        super().stopService()
        previous = self._previous if callable(self._previous) else signal.SIG_IGN
        signal.signal(signal.SIGUSR1, previous)
        self._previous = None
        if self.access_log is not None:
            self.access_log.close()

    def _received(self, number: int, frame: Any) -> None:
        # Only what is safe in a signal handler: the work is queued for the
        # reactor thread (twistd's own handler does the same).
        previous = self._previous
        if callable(previous):
            previous(number, frame)
        self._reactor.callFromThread(self.reopen)

    def reopen(self) -> None:
        """
        Reopen the access log file, and say so in twistd's log.
        """
        access_log = self.access_log
        if access_log is None or access_log.path is None:
            _log.info("SIGUSR1: no access log file to reopen")
            return
        try:
            access_log.reopen()
        except OSError as e:
            _log.error(
                "SIGUSR1: cannot reopen the access log {path}: {why}; still "
                "writing to the file it had open",
                path=access_log.path,
                why=e.strerror or e,
            )
            return
        _log.info("SIGUSR1: reopened the access log {path}", path=access_log.path)
