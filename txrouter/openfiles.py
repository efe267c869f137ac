"""
The process's limit of open files, raised from its soft value to its hard
one when the router starts.

Each client connection holds a descriptor, each upstream connection one
more, and each tunnel (a WebSocket) both for as long as it is open. The
usual soft limit of 1024 would refuse connections long before the system
runs short of anything; the hard limit is what the administrator allows
(systemd's C{LimitNOFILE}, C{ulimit -Hn}). Go's runtime does the same at
start for the same reason.
"""

from __future__ import annotations

import resource

__all__ = ["raise_open_files_limit"]


def raise_open_files_limit() -> tuple[int, int] | None:
    """
    Raise the soft limit of open files to the hard limit.

    @return: the limit before and after, or L{None} when it was already
        there or cannot be raised.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        # Not every system takes "unlimited" as a soft limit: a large one.
        hard = max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return None
    return soft, hard
