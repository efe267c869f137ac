"""
The server endpoint of a C{listen:} string: Twisted's own
(C{serverFromString}), except that a C{systemd:} socket this process was
not given fails when the router starts to listen, with what to do, rather
than with Twisted's C{IndexError} while the service is built.

A C{systemd:} string names a socket systemd opened and passed (C{index=},
its place among those the C{.socket} unit passes, from 0, or C{name=}, its
C{FileDescriptorName=}); Twisted finds them from C{LISTEN_PID},
C{LISTEN_FDS} and C{LISTEN_FDNAMES} (systemd 227 or later; with
C{systemd-socket-activate}, give C{--fdname}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from zope.interface import implementer

from txrouter.endpointstrings import listen_address, sets_backlog
from txrouter.privatetwisted import set_backlog

__all__ = ["LISTEN_BACKLOG", "server_endpoint"]


#: The listen backlog of a TCP or UNIX listener whose string sets none:
#: nginx's default (Twisted's, 50, drops the SYNs of a burst of new
#: connections that arrive while the router is busy, and their clients
#: wait a second to try again). Linux caps it at net.core.somaxconn.
LISTEN_BACKLOG = 511


def server_endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    """
    The endpoint C{description} names (nothing listens yet), with a
    backlog of L{LISTEN_BACKLOG} unless it sets its own.
    """
    try:
        endpoint = serverFromString(reactor, description)
    except (IndexError, KeyError):
        if listen_address(description).family != "systemd":
            raise
        return _NotPassed(description)
    if not sets_backlog(description):
        set_backlog(endpoint, LISTEN_BACKLOG)
    return endpoint  # type: ignore[no-any-return]


@implementer(IStreamServerEndpoint)
class _NotPassed:
    """
    A C{systemd:} socket that systemd did not pass to this process.
    """

    def __init__(self, description: str) -> None:
        self._description = description

    def listen(self, factory: Any) -> Deferred[Any]:
        why = (
            "systemd passed this process no such socket (start the router "
            "from its .socket unit, whose sockets index= counts from 0 in "
            "their order and name= finds by FileDescriptorName=; systemd "
            "227 or later, as Twisted reads LISTEN_FDNAMES)"
        )
        return fail(CannotListenError(None, None, why))
