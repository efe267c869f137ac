"""
The user a router runs as when C{twistd} drops root: started as root with
C{--uid} / C{--gid}, C{twistd} calls every service's
C{privilegedStartService} (the ports are bound there, 80 and 443 too),
then switches to that user and group for good, then calls
C{startService}. What the router makes before the drop and uses after it
(the runtime folder of the worker sockets) is made over to that user
(L{give_to_runner}); everything started after it (workers, threads,
requests) runs as the user.

    twistd --uid=txrouter --gid=txrouter txrouter --config routes.yaml
"""

from __future__ import annotations

import os
import pwd

__all__ = ["STARTED_AS", "drop_target", "give_to_runner"]

#: The effective user ID the router process had when it read its first
#: routes file, before any drop: the default admin socket is named after
#: it, so that a reload after the drop names the same socket, and the
#: operator (root) finds it (L{txrouter.config.default_admin}).
STARTED_AS = os.geteuid()


def drop_target() -> tuple[int, int] | None:
    """
    The user and group IDs C{twistd} switches to after
    C{privilegedStartService}, as it computes them, when this process runs
    as root under a C{twistd} given C{--uid} or C{--gid}; else L{None}.
    """
    if os.geteuid() != 0:
        return None
    from txrouter.privatetwisted import twistd_options  # not for config loads

    options = twistd_options()
    if options is None:
        return None
    uid, gid = options.get("uid"), options.get("gid")
    if uid is None and gid is None:
        return None
    if uid is None:
        uid = os.getuid()
    if gid is None:
        gid = pwd.getpwuid(uid).pw_gid
    return int(uid), int(gid)


def give_to_runner(path: str) -> None:
    """
    Make C{path} the user's that this router is about to run as, if it
    drops root; else leave it as it is.
    """
    target = drop_target()
    if target is not None:
        os.chown(path, *target)
