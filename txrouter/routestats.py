"""
L{RouteStats}: what one route has served since the router started, counted
once per request as it ends, cheaply enough to be always on.

The router hands each route's L{RouteStats} to the requests it takes, on
their L{txrouter.accesslog.RouteTag} (C{request.route.stats}); the site
counts a request when it ends (L{txrouter.site.RouterSite.request_ended}):
its status class, its duration in one of L{BUCKETS}, its body bytes in
and out. Requests that no route took are counted on the site's own
L{RouteStats}. Nothing else happens per request: readers
(L{txrouter.stats}, L{txrouter.metrics}) add up the rest when asked.

A table built by a reload gets the L{RouteStats} of the table it replaces
for every route that keeps its host, prefix and kind
(L{txrouter.build.build_table}), so that counters never go backwards for
a route that stays.

    >>> stats = RouteStats()
    >>> stats.ended(request, 0.012)
    >>> stats.codes, stats.counts[BUCKETS.index(0.025)]
    ([0, 1, 0, 0, 0], 1)
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

__all__ = ["BUCKETS", "CLASSES", "GONE", "RouteStats"]

#: The upper bounds, in seconds, of the request duration histogram's
#: buckets (each counts the requests that took more than the bound before
#: it, at most this one); one more bucket counts the longer ones.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: The status classes, in the order of L{RouteStats.codes}.
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")

#: The status a request is counted with when its client went away before
#: the response began (nginx logs these as 499): a 4xx.
GONE = 499


class RouteStats:
    """
    The counters of one route.

    @ivar codes: requests answered, by status class (L{CLASSES}); a status
        outside 100-599 is counted as a 5xx.
    @ivar counts: requests by duration, one per bucket of L{BUCKETS} and
        a last one for longer ones; they add up to the requests answered.
    @ivar seconds: their durations added up.
    @ivar bytes_in: request body bytes received.
    @ivar bytes_out: response body bytes sent.
    """

    __slots__ = ("bytes_in", "bytes_out", "codes", "counts", "seconds")

    def __init__(self) -> None:
        self.codes = [0, 0, 0, 0, 0]
        self.counts = [0] * (len(BUCKETS) + 1)
        self.seconds = 0.0
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def requests(self) -> int:
        """
        Requests answered.
        """
        return sum(self.codes)

    def ended(self, request: Any, seconds: float) -> None:
        """
        Count C{request}, which has just ended after C{seconds} (its
        response finished, or its client went away).
        """
        if request.finished or request.startedWriting:
            index = request.code // 100 - 1
            if not 0 <= index <= 4:
                index = 4
        else:
            index = 3  # GONE
        self.codes[index] += 1
        if seconds < 0.0:
            seconds = 0.0  # the wall clock went back
        self.seconds += seconds
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.bytes_in += request.body_length
        self.bytes_out += request.sentLength

    def __repr__(self) -> str:
        return f"<RouteStats {dict(zip(CLASSES, self.codes, strict=True))}>"
