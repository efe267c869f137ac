"""
The admin endpoint: one listener of its own, never part of the public
resource tree, for the operations on a running router and its status.

    POST /reload                     re-read the routes file
    POST /restart?prefix=/wiki/&host=  new workers for one route
    POST /upgrade                    a new router process on the same sockets
    GET  /status                     the table, workers and last change (JSON)
    GET  /healthz                    200 while the process answers (JSON)
    GET  /readyz                     200 when every route can serve, else 503
                                     with what is missing (JSON; see
                                     L{txrouter.health})
    GET  /                           the status page (L{txrouter.statuspage})
    GET  /metrics                    Prometheus metrics (L{txrouter.metrics})
    GET  /stats                      the same numbers as JSON, for the status
                                     page (L{txrouter.stats})

Operations answer once the change has taken effect (200) or failed (409),
with a JSON body C{{"ok", "message", "generation", "at"}}; the C{txrouter}
command line (L{txrouter.cli}) speaks this.

By default it is a UNIX socket (mode 0600) in a private folder (mode
0700) of the user's own under the temporary folder, named after the
routes file, so that C{txrouter reload --config routes.yaml} finds the
router serving that file with no configuration
(L{txrouter.config.default_admin}).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from txrouter.endpointstrings import listen_address
from txrouter.errors import ListenError
from txrouter.health import RouterHealth, health_answer
from txrouter.metrics import exposition, metrics_registry
from txrouter.services import ListenerService
from txrouter.stats import RouterStats
from txrouter.statuspage import StatusPage

__all__ = ["AdminListener", "admin_site", "private_folder", "unix_path_of"]


def unix_path_of(description: str) -> str | None:
    """
    The socket path of a C{unix:} endpoint string (absolute, as Twisted
    binds it), or L{None} for another kind.
    """
    address = listen_address(description)
    return address.place if address.family == "unix" else None


def private_folder(folder: Path) -> None:
    """
    Make C{folder} (mode 0700) if it does not exist, and check that it is
    ours alone: a folder of someone else's, or open to others, could hand
    our admin socket to them.

    @raise ListenError: it is not.
    """
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    info = folder.lstat()
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or info.st_mode & 0o077
    ):
        raise ListenError(
            f"{folder} must be a folder of this user's with mode 0700 "
            "(it holds the admin socket); remove it or name another place "
            "with 'admin:'"
        )


class AdminListener(ListenerService):
    """
    The admin endpoint's listener. For a UNIX socket, it makes the private
    folder, and takes the place of a socket left by a router that is gone,
    but never of one a live router still answers on.
    """

    #: Whether the socket is to be bound here, rather than handed over by
    #: the router this one replaces.
    fresh = True

    def privilegedStartService(self) -> None:
        path = unix_path_of(str(self.name))
        # A name in Linux's abstract namespace has no folder and no file.
        if path is not None and self.fresh and not path.startswith("\0"):
            private_folder(Path(path).parent)
            _remove_stale(path)
        super().privilegedStartService()


def _remove_stale(path: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ListenError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX)
    probe.settimeout(1)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
            os.unlink(path)
            return
        raise ListenError(f"{path}: {e.strerror}") from None
    finally:
        probe.close()
    raise ListenError(
        f"another router answers on {path}: it serves the same routes file"
    )


class _Operation(Resource):
    """
    A POST that runs one operation and answers with its outcome.
    """

    isLeaf = True

    def __init__(self, run: Callable[[Any], Deferred[Any]]) -> None:
        super().__init__()
        self._run = run

    def render_POST(self, request: Any) -> Any:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = self._run(request)

        def answer(outcome: Any) -> None:
            if gone:
                return  # the client went away
            request.setResponseCode(200 if outcome.ok else 409)
            _json(request, outcome.as_dict())
            request.finish()

        d.addCallback(answer)
        return NOT_DONE_YET

    def render_GET(self, request: Any) -> bytes:
        request.setResponseCode(405)
        request.setHeader(b"allow", b"POST")
        return b"405 Method Not Allowed: use POST\n"


class _Status(Resource):
    isLeaf = True

    def __init__(self, reloader: Any) -> None:
        super().__init__()
        self._reloader = reloader

    def render_GET(self, request: Any) -> bytes:
        return _json(request, self._reloader.status())


class _Live(Resource):
    isLeaf = True

    def __init__(self, health: RouterHealth) -> None:
        super().__init__()
        self._health = health

    def render_GET(self, request: Any) -> bytes:
        return health_answer(request, 200, self._health.live())


class _Ready(Resource):
    isLeaf = True

    def __init__(self, health: RouterHealth) -> None:
        super().__init__()
        self._health = health

    def render_GET(self, request: Any) -> bytes:
        report = self._health.ready()
        return health_answer(request, 200 if report.ready else 503, report.as_dict())


class _Metrics(Resource):
    isLeaf = True

    def __init__(self, stats: RouterStats) -> None:
        super().__init__()
        self._registry = metrics_registry(stats)

    def render_GET(self, request: Any) -> bytes:
        body, content_type = exposition(self._registry, request.getHeader(b"accept"))
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return body


class _Stats(Resource):
    isLeaf = True

    def __init__(self, stats: RouterStats) -> None:
        super().__init__()
        self._stats = stats

    def render_GET(self, request: Any) -> bytes:
        return _json(request, self._stats.as_json())


def _json(request: Any, data: Any) -> bytes:
    body = json.dumps(data, indent=2).encode() + b"\n"
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    if request.method == b"POST":
        request.write(body)
        return b""
    return body


def _argument(request: Any, name: bytes) -> str:
    values = request.args.get(name) or [b""]
    return str(values[0].decode("utf-8", "replace"))


def admin_site(
    reloader: Any,
    upgrade: Callable[[], Deferred[Any]],
    health: RouterHealth | None = None,
    stats: RouterStats | None = None,
) -> Site:
    """
    The admin endpoint's site over C{reloader}'s operations, over
    C{health} (C{/healthz} and C{/readyz}) and C{stats} (C{/metrics},
    C{/stats} and the status page at C{/}) when given.
    """
    root = Resource()
    root.putChild(b"reload", _Operation(lambda request: reloader.reload()))
    root.putChild(
        b"restart",
        _Operation(
            lambda request: reloader.restart(
                _argument(request, b"host"), _argument(request, b"prefix")
            )
        ),
    )
    root.putChild(b"upgrade", _Operation(lambda request: upgrade()))
    root.putChild(b"status", _Status(reloader))
    if health is not None:
        root.putChild(b"healthz", _Live(health))
        root.putChild(b"readyz", _Ready(health))
    if stats is not None:
        root.putChild(b"metrics", _Metrics(stats))
        root.putChild(b"stats", _Stats(stats))
        root.putChild(b"", StatusPage())
    site = Site(root)
    site.displayTracebacks = False
    site.noisy = False
    return site
