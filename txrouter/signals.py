"""
L{ControlSignals}: the signals that change a running router, as a
service: installed when the router starts (after twistd has daemonized),
put back when it stops.

  - C{SIGHUP}: reload the routes file (L{txrouter.reloader.Reloader}).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service

__all__ = ["ControlSignals"]


class ControlSignals(Service):
    """
    Turn C{SIGHUP} into a call of C{reload} in the reactor thread.
    """

    def __init__(self, reactor: Any, reload: Callable[[], object]) -> None:
        self._reactor = reactor
        self._reload = reload
        self._before: Any = None

    def startService(self) -> None:
        super().startService()
        self._before = signal.signal(signal.SIGHUP, self._hup)

    def stopService(self) -> None:
        super().stopService()
        # While the router drains and stops, a HUP changes nothing (and
        # must not kill it, as the default action would).
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _hup(self, number: int, frame: Any) -> None:
        self._reactor.callFromThread(self._reload)
