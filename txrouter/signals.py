"""
L{ControlSignals}: the signals that change a running router, as a
service: installed when the router starts (after twistd has daemonized),
put back when it stops.

  - C{SIGHUP}: reload the routes file (L{txrouter.reloader.Reloader});
  - C{SIGUSR2}: upgrade, a new router process on the same sockets
    (L{txrouter.upgrade.Upgrader}).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service

__all__ = ["ControlSignals"]


class ControlSignals(Service):
    """
    Turn C{SIGHUP} and C{SIGUSR2} into calls of C{reload} and C{upgrade}
    in the reactor thread.
    """

    def __init__(
        self,
        reactor: Any,
        reload: Callable[[], object],
        upgrade: Callable[[], object],
    ) -> None:
        self._reactor = reactor
        self._actions = {signal.SIGHUP: reload, signal.SIGUSR2: upgrade}

    def startService(self) -> None:
        super().startService()
        for number in self._actions:
            signal.signal(number, self._received)

    def stopService(self) -> None:
        super().stopService()
        # While the router drains and stops, these change nothing (and
        # must not kill it, as their default action would).
        for number in self._actions:
            signal.signal(number, signal.SIG_IGN)

    def _received(self, number: int, frame: Any) -> None:
        self._reactor.callFromThread(self._actions[signal.Signals(number)])
