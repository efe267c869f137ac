"""
C{wsgi:} routes: a WSGI application named C{module:attribute}, in the
router process or in worker processes of its own.

    /hello/: {wsgi: "hello:application", path: sites/hello, workers: 0}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from txrouter.configreader import APP_NAME, describe
from txrouter.importer import import_app
from txrouter.kinds.application import (
    ADMISSION_OPTIONS,
    APP_TIMEOUT,
    PROCESS_OPTIONS,
    in_process,
    in_workers,
    read_admission,
    read_max_body,
    read_process_options,
)
from txrouter.kinds.contract import Built, RouteKind
from txrouter.routespec import Admission, Origin, Threads

if TYPE_CHECKING:
    from txrouter.build import Builder
    from txrouter.configreader import ConfigReader
    from txrouter.routetable import RouteKey
    from txrouter.yamlsource import LocatedDict

__all__ = ["KIND", "WsgiRoute"]


@dataclass(frozen=True)
class WsgiRoute:
    """
    A WSGI application named C{module:attribute}, importable once C{path}
    (if any) is on C{sys.path}.
    """

    kind: ClassVar[str] = "wsgi"
    prefix: str
    origin: Origin
    app: str
    path: Path | None
    workers: int
    threads: Threads = field(default_factory=Threads)
    env: tuple[tuple[str, str], ...] = ()
    timeout: float = APP_TIMEOUT
    admission: Admission = field(default_factory=Admission)
    max_body: int | None = None


def read(
    reader: ConfigReader, prefix: str, spec: LocatedDict, origin: Origin
) -> WsgiRoute | None:
    app = spec.get("wsgi")
    workers, threads, env, timeout = read_process_options(reader, spec, origin, 0)
    path = None
    if "path" in spec:
        path = reader.directory(spec, "path", f"{origin.where}.path")
    if not isinstance(app, str) or not APP_NAME.match(app):
        reader.problem(
            spec.line_of("wsgi"),
            f"{origin.where}.wsgi",
            "expected 'module:attribute', e.g. 'hello:application', "
            f"got {describe(app)}",
        )
        return None
    return WsgiRoute(
        prefix,
        origin,
        app,
        path,
        workers,
        threads,
        env,
        timeout,
        read_admission(reader, spec, origin),
        read_max_body(reader, spec, origin),
    )


def build(route: WsgiRoute, key: RouteKey, builder: Builder) -> Built:
    if route.workers:
        app_args = ["--wsgi", route.app]
        if route.path:
            app_args += ["--path", str(route.path)]
        return in_workers(route, key, builder, app_args, str(route.path or "/"))
    return in_process(
        builder,
        route,
        ("wsgi", route.app, route.path),
        lambda: import_app(route.app, [route.path] if route.path else []),
    )


KIND = RouteKind("wsgi", ("path", *PROCESS_OPTIONS, *ADMISSION_OPTIONS), read, build)
