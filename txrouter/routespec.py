"""
The small values every route kind shares: where a route was declared
(L{Origin}), the size of a thread pool (L{Threads}) and a route's share
of the router (L{Admission}).

Each route remembers its L{Origin} so that errors found later (an import
that fails at start, say) still point at the line that asked for it. The
routes themselves are defined by their kinds, in L{txrouter.kinds}.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Admission", "Origin", "Threads"]


@dataclass(frozen=True)
class Threads:
    """
    Size of a thread pool: the router's shared one, or a worker's.

    The default ceiling is low on purpose: Python threads share one core,
    and Django under load was measured 17 % faster with 8 threads than with
    20 (less contention for the GIL). Raise it for applications that spend
    their time waiting on I/O.
    """

    min: int = 2
    max: int = 8


@dataclass(frozen=True)
class Admission:
    """
    How many requests a route serves at once (L{None}: its kind's default,
    see L{txrouter.kinds.application}) and how many more may wait for a
    slot; the rest get 503 (see L{txrouter.bulkhead}).
    """

    max_concurrent: int | None = None
    queue: int = 1000


@dataclass(frozen=True)
class Origin:
    """
    Where a route was declared: C{routes.yaml:12: routes['/blog/']}.
    """

    file: str
    line: int
    where: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.where}"
