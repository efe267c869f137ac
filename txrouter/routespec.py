"""
The small values every route kind shares: where a route was declared
(L{Origin}) and the size of a thread pool (L{Threads}).

Each route remembers its L{Origin} so that errors found later (an import
that fails at start, say) still point at the line that asked for it. The
routes themselves are defined by their kinds, in L{txrouter.kinds}.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Origin", "Threads"]


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
class Origin:
    """
    Where a route was declared: C{routes.yaml:12: routes['/blog/']}.
    """

    file: str
    line: int
    where: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.where}"
