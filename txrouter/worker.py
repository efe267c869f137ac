"""
A worker process: one Django project (or WSGI app) served on a UNIX socket
to its router, in a process of its own; or an ASGI application, served by
Daphne (L{txrouter.asgiworker}).

It has the router's shape: a L{RouterService} with a L{ThreadPoolService},
a drain step and a listener; its root is a L{Router} with the one route, so
C{SCRIPT_NAME} is the route prefix as in the router process. The router
starts it (L{txrouter.workers}) as::

    python -m txrouter.worker serve --socket PATH --prefix /wiki/ \\
        --threads 2:8 --django sites/wiki --settings wiki.settings

with the shared secret in C{TXROUTER_WORKER_TOKEN}. It exits on SIGTERM
after its requests in flight finish, and on its own when its router dies.

C{describe} prints, as JSON, the folders the router should serve for a
Django project (C{STATIC_URL} and C{MEDIA_URL}), without setting Django up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

#: Exit status of a worker whose application cannot be loaded.
LOAD_FAILED = 3

# linux/prctl.h
_PR_SET_PDEATHSIG = 1


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m txrouter.worker")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "describe"):
        command = commands.add_parser(name)
        command.add_argument("--prefix", required=True)
        app = command.add_mutually_exclusive_group(required=True)
        app.add_argument("--django", type=Path, help="the project folder")
        app.add_argument("--wsgi", help="module:attribute")
        app.add_argument("--asgi", help="module:attribute, served by Daphne")
        command.add_argument("--settings", help="the Django settings module")
        command.add_argument("--path", type=Path, help="folder for sys.path")
        if name == "serve":
            command.add_argument("--socket", required=True)
            command.add_argument("--threads", default="2:8")
            command.add_argument("--drain-timeout", type=float, default=30.0)
            command.add_argument(
                "--processes", type=int, default=1, help="workers of this route"
            )
    return parser.parse_args(argv)


def _load(args: argparse.Namespace) -> Any:
    from txrouter.djangoproject import load_django
    from txrouter.importer import import_app

    if args.django is not None:
        return load_django(args.django, args.settings, args.prefix).application
    return import_app(args.wsgi, [args.path] if args.path else [])


def _describe(args: argparse.Namespace) -> int:
    from txrouter.djangoproject import file_mounts
    from txrouter.importer import add_to_sys_path

    add_to_sys_path([args.django or args.path] if args.django or args.path else [])
    try:
        mounts = file_mounts(args.settings, args.prefix)
    except Exception as e:
        sys.stderr.write(f"cannot read settings {args.settings!r}: {e!r}\n")
        return LOAD_FAILED
    print(
        json.dumps(
            [
                {"setting": m.setting, "prefix": m.prefix, "root": str(m.root or "")}
                for m in mounts
            ]
        )
    )
    return 0


def _serve_asgi(args: argparse.Namespace) -> int:
    # Before anything imports the reactor: Daphne installs its own.
    from txrouter import asgiworker
    from txrouter.errors import AppLoadError

    try:
        return asgiworker.serve(args)
    except AppLoadError as e:
        sys.stderr.write(f"cannot load the application: {e}\n")
        return LOAD_FAILED


def _serve(args: argparse.Namespace) -> int:
    if args.asgi is not None:
        return _serve_asgi(args)
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall
    from twisted.logger import (
        FileLogObserver,
        formatEventAsClassicLogText,
        globalLogBeginner,
    )

    from txrouter.errors import AppLoadError
    from txrouter.heap import freeze_startup_heap

    def line(event: dict[str, Any]) -> str:
        # No time: the router's log puts its own before each line.
        text = formatEventAsClassicLogText(event, formatTime=lambda when: "")
        return (text or "").lstrip(" ")

    globalLogBeginner.beginLoggingTo(
        [FileLogObserver(sys.stderr, line)], redirectStandardIO=False
    )
    try:
        application = _load(args)
    except AppLoadError as e:
        sys.stderr.write(f"cannot load the application: {e}\n")
        return LOAD_FAILED
    service = _build(reactor, args, application)
    parent = os.getppid()

    def orphaned() -> None:
        # Never outlive the router, even one killed with SIGKILL.
        if os.getppid() != parent:
            reactor.stop()

    LoopingCall(orphaned).start(1.0, now=False)
    service.privilegedStartService()
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    freeze_startup_heap()
    reactor.run()
    return 0


def _build(reactor: Any, args: argparse.Namespace, application: Any) -> Any:
    from twisted.internet.endpoints import UNIXServerEndpoint

    from txrouter.privatetwisted import http_protocol_factory
    from txrouter.pythonlogging import PythonLogging
    from txrouter.router import Router
    from txrouter.services import DrainService, ListenerService, RouterService
    from txrouter.site import RouterSite
    from txrouter.threadpool import ThreadPoolService, make_pool
    from txrouter.workerrequest import (
        WorkerChannel,
        worker_application,
        worker_request_factory,
    )
    from txrouter.wsgi import WSGIResource

    low, _, high = args.threads.partition(":")
    pool = make_pool(int(low), int(high), "worker")
    application = worker_application(application, args.processes > 1)
    root = Router({"": {args.prefix: WSGIResource(reactor, pool, application)}})
    site = RouterSite(root, reactor, access_log=None)
    site.counts_routes = False  # the router counts the route's requests
    # Only our router connects, and it retires the connections it pools
    # when they have been idle for a while; a worker that closed them first
    # (Twisted's default, after 60 s) could do it just as a request is sent.
    site.timeOut = None
    token = os.environ.get("TXROUTER_WORKER_TOKEN", "").encode("ascii")
    site.requestFactory = worker_request_factory(token)
    # Receives the descriptors of bodies its router spooled to files.
    site.protocol = http_protocol_factory(WorkerChannel)  # type: ignore[method-assign]
    top = RouterService()
    PythonLogging().setServiceParent(top)
    ThreadPoolService(pool, reactor).setServiceParent(top)
    DrainService(site, args.drain_timeout).setServiceParent(top)
    if os.path.exists(args.socket):
        os.unlink(args.socket)  # left by a worker that died before us
    endpoint = UNIXServerEndpoint(reactor, args.socket, mode=0o600)
    ListenerService(f"unix:{args.socket}", endpoint, site).setServiceParent(top)
    return top


def _die_with_router() -> None:
    """
    Never outlive the router, from the first instant: on Linux the kernel
    kills this process when its parent dies (C{PR_SET_PDEATHSIG}), even
    while the application is still importing; a router gone before that
    was set up is seen here. The reactor's check each second (L{_serve})
    covers other systems once the worker runs.
    """
    router = int(os.environ.get("TXROUTER_ROUTER_PID", "0") or 0)
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if router and os.getppid() != router:
        os._exit(LOAD_FAILED)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run a worker command.
    """
    args = _arguments(argv)
    if args.command == "serve":
        _die_with_router()
    if args.django is not None and not args.settings:
        raise SystemExit("--settings is required with --django")
    if args.command == "describe" and not args.settings:
        raise SystemExit("describe needs --settings")
    if args.command == "describe":
        return _describe(args)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
