"""
The C{twistd txrouter} plugin: command-line options and L{makeService}.
"""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from txrouter.config import load_config
from txrouter.errors import AppLoadError, ConfigError
from txrouter.heap import freeze_startup_heap
from txrouter.privatetwisted import remember_twistd_options

__all__ = ["Options", "makeService"]

_log = Logger()


class Options(usage.Options):
    """
    Options of C{twistd txrouter}.
    """

    optParameters = [
        ["config", "c", "routes.yaml", "The routes file to serve."],
    ]

    def postOptions(self) -> None:
        self["config"] = Path(self["config"])


def makeService(options: Options) -> IService:
    """
    Read the routes file and build the service tree.

    A bad file or an application that fails to load ends C{twistd} with the
    reasons on stderr and exit status 1, before anything listens.
    """
    from twisted.internet import reactor

    from txrouter.assembly import build_service

    remember_twistd_options(options)
    try:
        config = load_config(options["config"])
        service = build_service(config, reactor)
    except (ConfigError, AppLoadError) as e:
        sys.stderr.write(f"txrouter: cannot start:\n{e}\n")
        raise SystemExit(1) from None
    # Once every service has started (after twistd's fork, if daemonized).
    reactor.callWhenRunning(_freeze_heap)
    return service


def _freeze_heap() -> None:
    count = freeze_startup_heap()
    _log.info(
        "{count} objects made at startup left out of garbage collection", count=count
    )
