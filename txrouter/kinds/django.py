"""
C{django:} routes: a Django project (the folder that holds C{manage.py}),
in the router process or in worker processes of its own, with its
C{STATIC_ROOT} and C{MEDIA_ROOT} served by the router.

    /:      {django: sites/blog}
    /wiki/: {django: sites/wiki, settings: wiki.settings, workers: 2}

Django's settings are process-global, so one process holds one project:
C{workers} defaults to 0 (in process) when the file has one project and to
1 otherwise, and two projects in the router process are refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from txrouter.configreader import MODULE_NAME, describe
from txrouter.djangoproject import (
    FileMount,
    default_settings_module,
    file_mounts,
    load_django,
)
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

__all__ = ["KIND", "DjangoRoute", "read_mounts"]

# Until settled (see settle), a route without 'workers:' holds this.
_UNSET = -1


@dataclass(frozen=True)
class DjangoRoute:
    """
    A Django project: C{project} holds C{manage.py}; C{settings} is the
    settings module; C{workers} is 0 for in-process, else the number of
    worker processes, each with a pool of C{threads} and C{env} added to its
    environment.
    """

    kind: ClassVar[str] = "django"
    prefix: str
    origin: Origin
    project: Path
    settings: str
    workers: int
    threads: Threads = field(default_factory=Threads)
    env: tuple[tuple[str, str], ...] = ()
    timeout: float = APP_TIMEOUT
    admission: Admission = field(default_factory=Admission)
    max_body: int | None = None


def read(
    reader: ConfigReader, prefix: str, spec: LocatedDict, origin: Origin
) -> DjangoRoute | None:
    project = reader.directory(spec, "django", f"{origin.where}.django")
    settings = spec.get("settings")
    workers, threads, env, timeout = read_process_options(reader, spec, origin, _UNSET)
    if settings is not None:
        if not isinstance(settings, str) or not MODULE_NAME.match(settings):
            reader.problem(
                spec.line_of("settings"),
                f"{origin.where}.settings",
                "expected a dotted module name such as 'mysite.settings', "
                f"got {describe(settings)}",
            )
            return None
    elif project is not None:
        settings = default_settings_module(project)
        if settings is None:
            reader.problem(
                spec.line_of("django"),
                f"{origin.where}.django",
                f"no settings module: {str(project / 'manage.py')!r} does not "
                "set a DJANGO_SETTINGS_MODULE default; add "
                "'settings: mysite.settings' to this route",
            )
    if project is None or settings is None:
        return None
    return DjangoRoute(
        prefix,
        origin,
        project,
        settings,
        workers,
        threads,
        env,
        timeout,
        read_admission(reader, spec, origin),
        read_max_body(reader, spec, origin),
    )


def settle(reader: ConfigReader, entries: list[tuple[dict[str, Any], str]]) -> None:
    """
    Give each route without C{workers} its default, and refuse two Django
    projects in the router process.
    """
    routes: list[DjangoRoute] = [table[prefix] for table, prefix in entries]
    projects = {(route.project, route.settings) for route in routes}
    default = 0 if len(projects) <= 1 else 1
    in_process: dict[tuple[Path, str], DjangoRoute] = {}
    for (table, prefix), route in zip(entries, routes, strict=True):
        if route.workers == _UNSET:
            route = table[prefix] = replace(route, workers=default)
        if route.workers == 0:
            in_process.setdefault((route.project, route.settings), route)
    if not in_process:
        return
    first, *others = in_process.values()
    for route in others:
        reader.problem(
            route.origin.line,
            route.origin.where,
            f"a second Django project in the router process: "
            f"{first.origin.where} (line {first.origin.line}) already "
            f"runs {str(first.project)!r} there. Django's settings, "
            "apps and database connections are process-global, so one "
            "process can hold only one Django project; give this "
            "route 'workers: 1' (or more) to run it in worker "
            "processes of its own",
        )


def build(route: DjangoRoute, key: RouteKey, builder: Builder) -> Built:
    if route.workers:
        app_args = ["--django", str(route.project), "--settings", route.settings]
        cwd = str(route.project)
        mounts = read_mounts(route, builder, app_args, cwd)
        return in_workers(route, key, builder, app_args, cwd, mounts)
    loaded: list[tuple[FileMount, ...]] = []

    def load() -> Any:
        django = load_django(route.project, route.settings, route.prefix)
        loaded.append(django.mounts)
        return django.application

    built = in_process(builder, route, ("django", route.project, route.settings), load)
    # The first route of the project got its mounts while loading it; the
    # others (the same project under another prefix) read them now.
    mounts = loaded[0] if loaded else tuple(file_mounts(route.settings, route.prefix))
    return replace(built, mounts=mounts)


def read_mounts(
    route: Any, builder: Builder, app_args: list[str], cwd: str
) -> tuple[FileMount, ...]:
    """
    Ask a short-lived process where a worker project's static and media
    files are: its settings must not be imported into the router.

    @param route: a route with C{settings} (a C{django:} one, or an
        C{asgi:} one that names its Django settings).
    @param app_args: the worker's arguments that name the application.
    """
    command = [
        sys.executable,
        "-m",
        "txrouter.worker",
        "describe",
        "--prefix",
        route.prefix,
        *app_args,
    ]
    env = {**os.environ, **dict(route.env)} if route.env else None
    result = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        builder.warn(
            f"{route.origin}: cannot read the settings of {route.settings!r}, "
            f"so its static and media files are not served: "
            f"{result.stderr.strip().splitlines()[-1:]}"
        )
        return ()
    return tuple(
        FileMount(m["setting"], m["prefix"], Path(m["root"]) if m["root"] else None)
        for m in json.loads(result.stdout)
    )


KIND = RouteKind(
    "django", ("settings", *PROCESS_OPTIONS, *ADMISSION_OPTIONS), read, build, settle
)
