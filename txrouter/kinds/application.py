"""
What the two application kinds (C{django:} and C{wsgi:}) share: the
options that say where the application runs (C{workers}, C{threads},
C{env}) and the two ways of serving it, in the router process on the
shared thread pool or in worker processes of its own behind the proxy
engine.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from twisted.web.resource import IResource

from txrouter.configreader import describe
from txrouter.kinds.contract import Built
from txrouter.proxy import ProxyResource, ProxySettings
from txrouter.routespec import Origin, Threads
from txrouter.workers import AppRoute, WorkerSet
from txrouter.wsgi import WSGIResource
from txrouter.yamlsource import LocatedDict

if TYPE_CHECKING:
    from txrouter.build import Builder
    from txrouter.configreader import ConfigReader
    from txrouter.djangoproject import FileMount
    from txrouter.routetable import RouteKey

__all__ = [
    "PROCESS_OPTIONS",
    "WORKER_TIMEOUT",
    "in_process",
    "in_workers",
    "read_max_body",
    "read_process_options",
]

#: The options of both application kinds that say where they run.
PROCESS_OPTIONS = ("workers", "threads", "env")

#: Seconds a worker has to start answering a request.
WORKER_TIMEOUT = 300.0

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def read_process_options(
    reader: ConfigReader, spec: LocatedDict, origin: Origin, workers_default: int
) -> tuple[int, Threads, tuple[tuple[str, str], ...]]:
    """
    Read C{workers}, C{threads} and C{env}.
    """
    workers = int(
        reader.number(
            spec, "workers", f"{origin.where}.workers", workers_default, 0, True
        )
    )
    threads = reader.threads(spec, "threads", f"{origin.where}.threads")
    return workers, threads, _env(reader, spec, origin)


def read_max_body(
    reader: ConfigReader, spec: LocatedDict, origin: Origin
) -> int | None:
    """
    Read a route's own C{max_body} (L{None}: the one in C{limits:}).
    """
    if "max_body" not in spec:
        return None
    return reader.size(spec, "max_body", f"{origin.where}.max_body", 1)


def _env(
    reader: ConfigReader, spec: LocatedDict, origin: Origin
) -> tuple[tuple[str, str], ...]:
    value = spec.get("env")
    if value is None:
        return ()
    where = f"{origin.where}.env"
    if not isinstance(value, LocatedDict):
        reader.problem(
            spec.line_of("env"),
            where,
            f"expected a mapping of variable name to value, got {describe(value)}",
        )
        return ()
    pairs = []
    for name, item in value.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            reader.problem(value.line_of(name), where, f"not a variable name: {name!r}")
        elif isinstance(item, (dict, list)) or item is None:
            reader.problem(
                value.line_of(name),
                f"{where}.{name}",
                f"expected a string, number or boolean, got {describe(item)}",
            )
        else:
            text = str(item).lower() if isinstance(item, bool) else str(item)
            pairs.append((name, text))
    return tuple(pairs)


def in_process(builder: Builder, app_key: Any, load: Any) -> Built:
    """
    Serve an application in the router process, on the shared pool; one
    C{WSGIResource} per application, however many routes mount it.

    @param load: called once per application to get its WSGI callable.
    """
    engines = builder.engines

    def make() -> IResource:
        return WSGIResource(engines.reactor, engines.pool, load())

    return Built(builder.shared(app_key, make))


def in_workers(
    route: AppRoute,
    key: RouteKey,
    builder: Builder,
    app_args: list[str],
    cwd: str,
    mounts: tuple[FileMount, ...] = (),
) -> Built:
    """
    Serve an application in C{route.workers} processes of its own, reached
    through the proxy engine.
    """
    engines = builder.engines
    workers = WorkerSet(
        engines.reactor,
        engines.monitor,
        route,
        app_args,
        cwd,
        engines.runtime_dir,
        f"{socket_stem(key)}-{engines.instance}-",
        engines.drain_timeout,
        builder.generation,
    )
    settings = ProxySettings(
        name=str(route.origin),
        timeout=WORKER_TIMEOUT,
        preserve_host=True,
        trusted=engines.trusted,
        worker_token=workers.token,
    )
    resource = ProxyResource(engines.reactor, engines.client, workers.group, settings)
    return Built(resource, workers=workers, upstreams=workers.group, mounts=mounts)


def socket_stem(key: RouteKey) -> str:
    """
    The start of the socket names of a route's workers: short (a UNIX
    socket path has at most 107 bytes) and the same for the same host and
    prefix in every route table.
    """
    digest = hashlib.sha256(f"{key.host}\0{key.prefix}".encode()).hexdigest()
    return f"w{digest[:12]}"
