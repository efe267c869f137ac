"""
When the ACME service acts: the renewal time of a certificate, the back-off
after a failure, and the delay of its one timer. Plain arithmetic on
seconds since the epoch, so that it is tested without a clock.

    >>> renewal_time(0, 90 * DAY, 30 * DAY) / DAY     # Let's Encrypt's 90 days
    60.0
    >>> renewal_time(0, 6 * DAY, 30 * DAY) / DAY      # short-lived: a third left
    4.0
    >>> [backoff(n) for n in (1, 2, 3)]
    [60.0, 120.0, 240.0]
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MOST",
    "CHECK_EVERY",
    "DAY",
    "backoff",
    "next_wakeup",
    "renewal_time",
]

DAY = 86400.0
#: Seconds before the first retry after a failure; each failure in a row
#: doubles it, up to L{BACKOFF_MOST}.
BACKOFF_FIRST = 60.0
BACKOFF_MOST = DAY
#: The longest the service sleeps between two looks at its certificates:
#: a timer of weeks would miss a clock change or a suspended machine.
CHECK_EVERY = 6 * 3600.0


def renewal_time(not_before: float, not_after: float, renew_before: float) -> float:
    """
    When a certificate valid from C{not_before} to C{not_after} is renewed:
    C{renew_before} seconds before it expires, but with at least two thirds
    of its lifetime used (Let's Encrypt's advice, RFC 9773's default
    window): a short-lived certificate is not renewed as soon as it is
    issued, over and over.
    """
    lifetime = max(0.0, not_after - not_before)
    return not_after - min(renew_before, lifetime / 3)


def backoff(failures: int) -> float:
    """
    Seconds to wait before the next try after C{failures} failures in a
    row: one minute, doubled each time, at most a day.
    """
    if failures < 1:
        return 0.0
    doublings: int = min(failures - 1, 32)
    return min(BACKOFF_MOST, BACKOFF_FIRST * float(1 << doublings))


def next_wakeup(now: float, due: Iterable[float]) -> float:
    """
    Seconds from C{now} until the timer fires: at the earliest C{due}
    time (at once if it has passed), and at most L{CHECK_EVERY}.
    """
    return max(0.0, min([now + CHECK_EVERY, *due]) - now)
