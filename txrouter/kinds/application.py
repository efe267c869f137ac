"""
What the application kinds (C{django:}, C{wsgi:}, and C{asgi:} in part)
share: the options that say where the application runs (C{workers},
C{threads}, C{env}) and the two ways of serving it, in the router process
on the shared thread pool or in worker processes of its own behind the
proxy engine (the only way for C{asgi:}); and what every kind that runs or
forwards requests shares: its bulkhead (C{max_concurrent}, C{queue}) and
its C{max_body}.

The default C{max_concurrent} of a route:

  - in process: half the shared pool's threads (rounded up), so that one
    hung application leaves the other half to the rest;
  - in workers: C{workers} times each worker's C{threads} maximum, as
    many as they can run at once;
  - proxy: 1024, as Envoy's circuit breakers;
  - asgi: 1024 per worker: an ASGI worker serves its requests and
    WebSockets on an event loop, not one per thread.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from txrouter.bulkhead import Admitted, Bulkhead, BulkheadResource
from txrouter.configreader import describe
from txrouter.kinds.contract import Built
from txrouter.proxy import ProxyResource, ProxySettings
from txrouter.routespec import Admission, Origin, Threads
from txrouter.workers import AppRoute, WorkerSet
from txrouter.wsgi import WSGIResource
from txrouter.yamlsource import LocatedDict

if TYPE_CHECKING:
    from txrouter.build import Builder
    from txrouter.configreader import ConfigReader
    from txrouter.djangoproject import FileMount
    from txrouter.forwarding import TrustedProxies
    from txrouter.routetable import RouteKey

__all__ = [
    "ADMISSION_OPTIONS",
    "APP_TIMEOUT",
    "PROCESS_OPTIONS",
    "PROXY_MAX_CONCURRENT",
    "behind_bulkhead",
    "in_process",
    "in_workers",
    "read_admission",
    "read_env",
    "read_max_body",
    "read_process_options",
    "worker_settings",
]

#: The options of both application kinds that say where they run, and
#: how long they have to answer.
PROCESS_OPTIONS = ("workers", "threads", "env", "timeout")

#: The options of every kind with a bulkhead.
ADMISSION_OPTIONS = ("max_concurrent", "queue", "max_body")

#: Seconds an application has to start its answer (nginx's
#: C{proxy_read_timeout}, what it had behind nginx).
APP_TIMEOUT = 60.0

#: The default C{max_concurrent} of a proxy route.
PROXY_MAX_CONCURRENT = 1024

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def read_process_options(
    reader: ConfigReader, spec: LocatedDict, origin: Origin, workers_default: int
) -> tuple[int, Threads, tuple[tuple[str, str], ...], float]:
    """
    Read C{workers}, C{threads}, C{env} and C{timeout}.
    """
    workers = int(
        reader.number(
            spec, "workers", f"{origin.where}.workers", workers_default, 0, True
        )
    )
    threads = reader.threads(spec, "threads", f"{origin.where}.threads")
    timeout = reader.number(
        spec, "timeout", f"{origin.where}.timeout", APP_TIMEOUT, 0.001
    )
    return workers, threads, read_env(reader, spec, origin), timeout


def read_admission(
    reader: ConfigReader, spec: LocatedDict, origin: Origin
) -> Admission:
    """
    Read C{max_concurrent} and C{queue}.
    """
    default = Admission()
    max_concurrent = None
    if spec.get("max_concurrent") is not None:  # left empty: not given
        where = f"{origin.where}.max_concurrent"
        max_concurrent = int(reader.number(spec, "max_concurrent", where, 1, 1, True))
    queue = reader.number(
        spec, "queue", f"{origin.where}.queue", default.queue, 0, True
    )
    return Admission(max_concurrent, int(queue))


def behind_bulkhead(
    builder: Builder,
    route: Any,
    resource: Admitted,
    max_concurrent: int,
    wait: float,
) -> BulkheadResource:
    """
    Put a route's resource behind a bulkhead of its own.

    @param max_concurrent: the kind's default, if the route sets none.
    @param wait: seconds a request may wait for a slot.
    """
    admission: Admission = route.admission
    bulkhead = Bulkhead(
        builder.engines.reactor,
        str(route.origin),
        admission.max_concurrent or max_concurrent,
        admission.queue,
        wait,
    )
    return BulkheadResource(resource, bulkhead)


def read_max_body(
    reader: ConfigReader, spec: LocatedDict, origin: Origin
) -> int | None:
    """
    Read a route's own C{max_body} (L{None}: the one in C{limits:}).
    """
    if spec.get("max_body") is None:  # not given, or left empty
        return None
    return reader.size(spec, "max_body", f"{origin.where}.max_body", 1)


def read_env(
    reader: ConfigReader, spec: LocatedDict, origin: Origin
) -> tuple[tuple[str, str], ...]:
    """
    Read C{env}: variables added to the environment of a route's workers.
    """
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


#: Slots per thread of a route that has its threads to itself: one request
#: running and the next already waiting beside it, so that a thread that
#: finishes takes it at once instead of sleeping until the reactor, which
#: gets the slot back, hands it another (worth 10-15 % req/s when every
#: slot is busy; README.md, "Performance").
SLOTS_PER_THREAD = 2


def in_process_slots(pool: int, routes: int) -> int:
    """
    The default C{max_concurrent} of an in-process route: when it is the
    shared pool's only user, L{SLOTS_PER_THREAD} per thread (the pool runs
    at most C{pool} of them at once); else half of the pool (rounded up),
    so that one hung application leaves the other half to the other
    routes.
    """
    return SLOTS_PER_THREAD * pool if routes <= 1 else -(-pool // 2)


def in_process(builder: Builder, route: Any, app_key: Any, load: Any) -> Built:
    """
    Serve an application in the router process, on the shared pool; loaded
    once, however many routes mount it.

    @param load: called once per application to get its WSGI callable.
    """
    engines = builder.engines
    application = builder.shared(app_key, load)
    resource = WSGIResource(engines.reactor, engines.pool, application, route.timeout)
    slots = in_process_slots(engines.pool.max, builder.in_process)
    return Built(behind_bulkhead(builder, route, resource, slots, route.timeout))


def in_workers(
    route: AppRoute,
    key: RouteKey,
    builder: Builder,
    app_args: list[str],
    cwd: str,
    mounts: tuple[FileMount, ...] = (),
    max_concurrent: int | None = None,
) -> Built:
    """
    Serve an application in C{route.workers} processes of its own, reached
    through the proxy engine.

    @param max_concurrent: the kind's default C{max_concurrent}; by
        default, L{SLOTS_PER_THREAD} per thread of the workers.
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
    settings = worker_settings(route, engines.trusted, workers.token)
    proxy = ProxyResource(engines.reactor, engines.client, workers.group, settings)
    slots = max_concurrent or SLOTS_PER_THREAD * route.workers * route.threads.max
    resource = behind_bulkhead(builder, route, proxy, slots, route.timeout)
    return Built(
        resource,
        workers=workers,
        upstreams=workers.group,
        mounts=mounts,
        tunnels=proxy.tunnels if settings.upgrades else None,
    )


def worker_settings(
    route: AppRoute, trusted: TrustedProxies, token: bytes
) -> ProxySettings:
    """
    What the proxy engine needs to reach an application's workers: the
    client's C{Host} passes unchanged, and the connection's facts go with
    the workers' secret C{token} (L{txrouter.forwarding.worker_headers});
    requests to switch to a protocol of the route's C{upgrade} (an ASGI
    application's WebSockets; none for WSGI) are tunnelled.
    """
    return ProxySettings(
        name=str(route.origin),
        timeout=route.timeout,
        preserve_host=True,
        trusted=trusted,
        worker_token=token,
        upgrades=frozenset(p.encode("ascii") for p in getattr(route, "upgrade", ())),
        tunnel_idle_timeout=getattr(
            route, "tunnel_idle_timeout", ProxySettings.tunnel_idle_timeout
        ),
        max_tunnels=getattr(route, "max_tunnels", ProxySettings.max_tunnels),
    )


def socket_stem(key: RouteKey) -> str:
    """
    The start of the socket names of a route's workers: short (a UNIX
    socket path has at most 107 bytes) and the same for the same host and
    prefix in every route table.
    """
    digest = hashlib.sha256(f"{key.host}\0{key.prefix}".encode()).hexdigest()
    return f"w{digest[:12]}"
