"""
Python C{logging} records of the applications, in twistd's log.

An application in the router process is loaded while twistd builds the
service, before twistd sends stdout and stderr to its log: a project whose
C{LOGGING} writes to C{sys.stderr} holds the terminal's stream, which a
daemon has closed, and a project with no handler for its records (Django's
own C{django.request} errors when C{DEBUG} is off) loses them. So, once the
router (or a worker) runs, L{PythonLogging}:

  - points every C{logging.StreamHandler} that writes to the process's
    original stderr or stdout at the current one (twistd's log);
  - when the root logger has no handler, gives it one that sends records
    of C{WARNING} and above to twistd's log, tracebacks included.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

__all__ = ["PythonLogging", "TwistedLogHandler"]

_LEVELS = [
    (logging.CRITICAL, LogLevel.critical),
    (logging.ERROR, LogLevel.error),
    (logging.WARNING, LogLevel.warn),
    (logging.INFO, LogLevel.info),
]


class TwistedLogHandler(logging.Handler):
    """
    A C{logging} handler that emits each record as a Twisted log event in
    the record's logger's namespace.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = next((t for p, t in _LEVELS if record.levelno >= p), LogLevel.debug)
            log = Logger(namespace=record.name)
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                kind, error, traceback = record.exc_info
                log.failure(
                    "{message}",
                    failure=Failure(error, kind, traceback),
                    level=level,
                    message=message,
                )
            else:
                log.emit(level, "{message}", message=message)
        except Exception:
            self.handleError(record)


def _streams_of_handlers() -> list[logging.StreamHandler[Any]]:
    loggers: list[Any] = [logging.getLogger()]
    loggers += logging.root.manager.loggerDict.values()
    found: dict[int, logging.StreamHandler[Any]] = {}
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ):
                found[id(handler)] = handler
    return list(found.values())


class PythonLogging(Service):
    """
    Bring the applications' C{logging} records to twistd's log while the
    service runs.

    @ivar level: the lowest level sent when the root logger has no handler.
    """

    def __init__(self, level: int = logging.WARNING) -> None:
        self.level = level
        self._handler: TwistedLogHandler | None = None

    def startService(self) -> None:
        super().startService()
        originals = {id(sys.__stderr__): sys.stderr, id(sys.__stdout__): sys.stdout}
        for handler in _streams_of_handlers():
            current = originals.get(id(handler.stream))
            if current is not None and current is not handler.stream:
                handler.setStream(current)
        root = logging.getLogger()
        if not root.handlers:
            self._handler = TwistedLogHandler(self.level)
            root.addHandler(self._handler)
            if root.level > self.level or root.level == logging.NOTSET:
                root.setLevel(self.level)

    def stopService(self) -> None:
        super().stopService()
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler = None
