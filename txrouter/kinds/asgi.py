"""
C{asgi:} routes: an ASGI application named C{module:attribute} (a Django
project with Channels, or any ASGI 3 application), served by Daphne in
worker processes of its own; HTTP and WebSockets reach it through the
proxy engine.

    /live/: {asgi: "chat.asgi:application", path: sites/chat,
             settings: chat.settings, workers: 1}

An ASGI application never runs in the router process: C{workers} is at
least 1. With C{settings}, C{DJANGO_SETTINGS_MODULE} is set for the workers
and the project's C{STATIC_ROOT} and C{MEDIA_ROOT} are served by the
router, as for a C{django:} route in workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from txrouter.configreader import APP_NAME, MODULE_NAME, describe
from txrouter.kinds.application import (
    ADMISSION_OPTIONS,
    APP_TIMEOUT,
    PROXY_MAX_CONCURRENT,
    in_workers,
    read_admission,
    read_env,
    read_max_body,
)
from txrouter.kinds.contract import Built, RouteKind
from txrouter.kinds.django import read_mounts
from txrouter.kinds.proxy import MAX_TUNNELS, TUNNEL_IDLE_TIMEOUT, read_tunnel_limits
from txrouter.routespec import Admission, Origin, Threads

if TYPE_CHECKING:
    from txrouter.build import Builder
    from txrouter.configreader import ConfigReader
    from txrouter.routetable import RouteKey
    from txrouter.yamlsource import LocatedDict

__all__ = ["KIND", "PER_WORKER", "AsgiRoute"]

#: The default C{max_concurrent} of an C{asgi:} route, per worker: Daphne
#: serves requests and WebSockets on its event loop, not one per thread,
#: so the bound is a proxy route's.
PER_WORKER = PROXY_MAX_CONCURRENT


@dataclass(frozen=True)
class AsgiRoute:
    """
    An ASGI application named C{module:attribute}, importable once C{path}
    (if any) is on C{sys.path}, in C{workers} processes (at least one) with
    C{env} added to their environment; C{settings} is the Django settings
    module, if it is a Django project.

    @ivar threads: unused by Daphne (its event loop serves the requests);
        kept so that a worker set treats every application route alike.
    """

    kind: ClassVar[str] = "asgi"
    prefix: str
    origin: Origin
    app: str
    path: Path | None
    settings: str | None
    workers: int
    env: tuple[tuple[str, str], ...] = ()
    timeout: float = APP_TIMEOUT
    admission: Admission = field(default_factory=Admission)
    max_body: int | None = None
    threads: Threads = field(default_factory=Threads)
    #: What its workers switch to: the proxy engine tunnels it.
    upgrade: tuple[str, ...] = ("websocket",)
    tunnel_idle_timeout: float = TUNNEL_IDLE_TIMEOUT
    max_tunnels: int = MAX_TUNNELS


def _workers(reader: ConfigReader, spec: LocatedDict, origin: Origin) -> int:
    where = f"{origin.where}.workers"
    value = spec.get("workers")
    if isinstance(value, int) and not isinstance(value, bool) and value < 1:
        reader.problem(
            spec.line_of("workers"),
            where,
            f"must be >= 1, got {value}: an ASGI application never runs in "
            "the router process, only in worker processes of its own served "
            "by Daphne; write 'workers: 1' (or more)",
        )
        return 1
    return int(reader.number(spec, "workers", where, 1, 1, True))


def read(
    reader: ConfigReader, prefix: str, spec: LocatedDict, origin: Origin
) -> AsgiRoute | None:
    app = spec.get("asgi")
    workers = _workers(reader, spec, origin)
    env = read_env(reader, spec, origin)
    timeout = reader.number(
        spec, "timeout", f"{origin.where}.timeout", APP_TIMEOUT, 0.001
    )
    path = None
    if "path" in spec:
        path = reader.directory(spec, "path", f"{origin.where}.path")
    settings = spec.get("settings")
    usable = True
    if settings is not None and (
        not isinstance(settings, str) or not MODULE_NAME.match(settings)
    ):
        reader.problem(
            spec.line_of("settings"),
            f"{origin.where}.settings",
            "expected a dotted module name such as 'mysite.settings', "
            f"got {describe(settings)}",
        )
        usable = False
    if not isinstance(app, str) or not APP_NAME.match(app):
        reader.problem(
            spec.line_of("asgi"),
            f"{origin.where}.asgi",
            "expected 'module:attribute', e.g. 'chat.asgi:application', "
            f"got {describe(app)}",
        )
        usable = False
    idle, max_tunnels = read_tunnel_limits(reader, spec, origin)
    if not usable or not isinstance(app, str):
        return None
    return AsgiRoute(
        prefix,
        origin,
        app,
        path,
        settings,
        workers,
        env,
        timeout,
        read_admission(reader, spec, origin),
        read_max_body(reader, spec, origin),
        tunnel_idle_timeout=idle,
        max_tunnels=max_tunnels,
    )


def build(route: AsgiRoute, key: RouteKey, builder: Builder) -> Built:
    app_args = ["--asgi", route.app]
    if route.path:
        app_args += ["--path", str(route.path)]
    if route.settings:
        app_args += ["--settings", route.settings]
    cwd = str(route.path or "/")
    mounts = read_mounts(route, builder, app_args, cwd) if route.settings else ()
    slots = route.workers * PER_WORKER
    return in_workers(route, key, builder, app_args, cwd, mounts, slots)


KIND = RouteKind(
    "asgi",
    (
        "path",
        "settings",
        "workers",
        "env",
        "timeout",
        "tunnel_idle_timeout",
        "max_tunnels",
        *ADMISSION_OPTIONS,
    ),
    read,
    build,
)
