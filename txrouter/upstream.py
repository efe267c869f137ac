"""
Upstreams: where a proxy route (or, later, a worker) sends requests.

An L{Upstream} is one origin (C{http://host:port/base/}, C{https://...} or
C{unix:/path.sock}) with its client endpoint and its count of requests in
flight. An L{UpstreamGroup} picks one for each request: the least busy of
those not marked down, round-robin among equals. An upstream that refuses
connections is marked down for a while (passive health checking).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.endpoints import (
    HostnameEndpoint,
    UNIXClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint

__all__ = [
    "STUCK_AFTER",
    "Upstream",
    "UpstreamGroup",
    "endpoint_for",
    "upstream_address",
]

#: Seconds an upstream that refused a connection is left out.
DOWN_FOR = 10.0

#: Requests in a row without an answer in time that make an upstream stuck.
STUCK_AFTER = 3

#: Seconds between two warnings about one upstream: an upstream that is
#: down fails every request sent to it, and the log must stay readable.
WARN_EVERY = 1.0


def endpoint_for(
    reactor: Any, url: str, connect_timeout: float, tls_verify: bool
) -> tuple[IStreamClientEndpoint, bytes, bytes]:
    """
    The client endpoint for an upstream URL.

    @return: the endpoint, the default C{Host} header for it, and its base
        path (ending with C{/}).
    """
    host_header, base = upstream_address(url)
    if url.startswith("unix:"):
        unix = UNIXClientEndpoint(reactor, url[len("unix:") :], connect_timeout)
        return unix, host_header, base
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    tcp = HostnameEndpoint(reactor, host, port, timeout=connect_timeout)
    endpoint: IStreamClientEndpoint
    if secure:
        from twisted.internet.ssl import CertificateOptions, optionsForClientTLS

        if tls_verify:
            options: Any = optionsForClientTLS(host)
        else:
            options = CertificateOptions(verify=False)
        endpoint = wrapClientTLS(options, tcp)
    else:
        endpoint = tcp
    return endpoint, host_header, base


def upstream_address(url: str) -> tuple[bytes, bytes]:
    """
    The default C{Host} header for an upstream URL (its host, and its port
    unless the scheme's own), and its base path (ending with C{/}).
    """
    if url.startswith("unix:"):
        return b"localhost", b"/"
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    default_port = (secure and port == 443) or (not secure and port == 80)
    netloc = f"[{host}]" if ":" in host else host
    if not default_port:
        netloc += f":{port}"
    base = (parts.path or "/").encode("ascii")
    if not base.endswith(b"/"):
        base += b"/"
    return netloc.encode("idna"), base


class Upstream:
    """
    One origin server.

    @ivar name: the URL as configured, for logs.
    @ivar key: what connections to it are pooled under.
    @ivar endpoint: how to connect to it.
    @ivar host: its own C{Host} header value.
    @ivar base: its base path, ending with C{/}.
    @ivar in_flight: requests sent to it and not yet answered.
    @ivar down_until: reactor time until which it is left out.
    @ivar timeouts: requests in a row it left unanswered in time.
    @ivar ready: whether it may be used at all (a worker process that is
        starting, or has died, is not).
    @ivar pid: for a worker process, the process ID of its latest run
        (kept after it exits, until it runs again); else L{None}.
    @ivar failures: requests it failed: a connection it refused, no
        answer within the route's timeout, a broken or cut answer (the
        proxy engine counts them).
    @ivar retries: requests sent again after an attempt on it failed: to
        the route's next upstream after a refused connection, or to it
        anew after a kept-alive connection turned out closed.
    @ivar restarts: for a worker process, the times it was started again
        after it exited (L{txrouter.workers.WorkerSet}).
    """

    def __init__(
        self,
        name: str,
        endpoint: IStreamClientEndpoint,
        host: bytes,
        base: bytes,
        key: Any = None,
    ) -> None:
        self.name = name
        self.key = key if key is not None else ("txrouter-upstream", name)
        self.endpoint = endpoint
        self.host = host
        self.base = base
        self.in_flight = 0
        self.down_until = 0.0
        self.ready = True
        self.timeouts = 0
        self.pid: int | None = None
        self.failures = 0
        self.retries = 0
        self.restarts = 0
        self._warned_at = float("-inf")
        self._left_out = 0

    @classmethod
    def from_url(
        cls, reactor: Any, url: str, connect_timeout: float, tls_verify: bool
    ) -> Upstream:
        """
        An upstream for a configured URL.
        """
        endpoint, host, base = endpoint_for(reactor, url, connect_timeout, tls_verify)
        return cls(url, endpoint, host, base, key=(url, tls_verify))

    def warning_due(self, now: float) -> int | None:
        """
        Whether a warning about this upstream may be logged at C{now}: at
        most one every L{WARN_EVERY} seconds.

        @return: L{None} if not (it is counted); else how many were left
            out since the last one.
        """
        if now - self._warned_at < WARN_EVERY:
            self._left_out += 1
            return None
        self._warned_at = now
        left_out, self._left_out = self._left_out, 0
        return left_out

    def __repr__(self) -> str:
        return f"<Upstream {self.name}>"


class UpstreamGroup:
    """
    The upstreams of one route, and the choice between them.
    """

    def __init__(
        self,
        clock: IReactorTime,
        members: Sequence[Upstream],
        stuck: Callable[[Upstream], None] | None = None,
    ) -> None:
        """
        @param stuck: called with a member that left L{STUCK_AFTER}
            requests in a row unanswered within the route's timeout (a
            worker process is then restarted).
        """
        self._clock = clock
        self.members = list(members)
        self._turn = itertools.count()
        self._stuck = stuck

    def choose(self, exclude: Sequence[Upstream] = ()) -> Upstream | None:
        """
        The upstream for the next request: the least busy one that is not
        marked down (round-robin among equals), else the one whose mark
        expires first.

        @param exclude: upstreams already tried for this request.
        @return: L{None} when every member is excluded.
        """
        candidates = [m for m in self.members if m.ready and m not in exclude]
        if not candidates:
            return None
        now = self._clock.seconds()
        up = [m for m in candidates if m.down_until <= now]
        if not up:
            return min(candidates, key=lambda m: m.down_until)
        least = min(m.in_flight for m in up)
        ties = [m for m in up if m.in_flight == least]
        return ties[next(self._turn) % len(ties)]

    def any_ready(self) -> bool:
        """
        Whether any member may be used at all.
        """
        return any(m.ready for m in self.members)

    def mark_down(self, upstream: Upstream) -> None:
        """
        Leave C{upstream} out for L{DOWN_FOR} seconds.
        """
        upstream.down_until = self._clock.seconds() + DOWN_FOR

    def timed_out(self, upstream: Upstream) -> None:
        """
        C{upstream} sent no answer within the route's timeout; an answer
        sets its count back to 0 (L{Upstream.timeouts}).
        """
        upstream.timeouts += 1
        if upstream.timeouts >= STUCK_AFTER and self._stuck is not None:
            upstream.timeouts = 0
            self._stuck(upstream)
