"""
L{Reloader}: change what a running router serves, one route table for
another, without dropping a request.

  - L{Reloader.reload} re-reads the routes file. A file that does not
    load changes nothing. Otherwise the next table is built beside the one
    serving: routes that say the same are taken over as they are (their
    workers keep their processes), new and changed worker routes get new
    workers, and only once every new worker answers and every new listener
    is bound does the site switch tables, in one assignment. Then what the
    old table alone used drains (requests the router still has in flight to
    it finish, up to C{drain_timeout}) and stops.
  - L{Reloader.restart} does the same for one worker route of the current
    file: new workers with the code now on disk, the old ones retired once
    the new ones answer (a redeploy).

A change that cannot be made inside a running process (the size of the
shared thread pool, the in-process Django project) refuses the whole
reload and says to upgrade the router instead.

Each operation's outcome is counted by its result (L{RESULTS}: it
worked, it was refused without being tried, or it was tried and failed),
for the metrics.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from twisted.internet.defer import (
    Deferred,
    DeferredList,
    gatherResults,
    inlineCallbacks,
    succeed,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from txrouter.build import Engines, build_table
from txrouter.config import Config, DjangoRoute, load_config
from txrouter.errors import AppLoadError, ConfigError, ListenError
from txrouter.forwarding import TrustedProxies
from txrouter.listeners import Listener
from txrouter.routetable import BuiltRoute, RouteKey, RouteTable
from txrouter.serverendpoints import server_endpoint
from txrouter.services import ListenerService, RouterService
from txrouter.workers import WorkerSet, WorkerStartError

__all__ = ["FAILED", "OK", "REFUSED", "RESULTS", "Outcome", "Reloader"]

_log = Logger()

#: Seconds new workers have to answer before a reload or restart gives up.
READY_TIMEOUT = 120.0

#: Seconds between two looks at whether old workers still have requests.
_DRAIN_POLL = 0.1

# What became of a reload or restart (L{Outcome.result}): it worked; it
# was not tried (the router is stopping, another change runs, the file asks
# for what only an upgrade can change, the route to restart has no
# workers); it was tried and failed (the file does not load, an
# application or worker failed, a socket could not be bound).
OK = "ok"
REFUSED = "refused"
FAILED = "failed"
#: Every result, in this order.
RESULTS = (OK, REFUSED, FAILED)


@dataclass(frozen=True)
class Outcome:
    """
    What a reload or restart did.

    @ivar ok: whether the new table is being served.
    @ivar message: one line when it worked; otherwise every reason.
    @ivar generation: the table served now.
    @ivar at: when it ended (UNIX time).
    @ivar refused: it was not tried at all (see L{REFUSED}).
    """

    ok: bool
    message: str
    generation: int
    at: float
    refused: bool = False

    @property
    def result(self) -> str:
        """
        L{OK}, L{REFUSED} or L{FAILED}.
        """
        if self.ok:
            return OK
        return REFUSED if self.refused else FAILED

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "message": self.message,
            "generation": self.generation,
            "at": self.at,
        }


class Reloader:
    """
    The router's current routes file, table and listeners, and the two
    ways of changing them. One change runs at a time.

    @ivar last: the last reload or restart that was tried.
    @ivar last_reload: the last reload, refused ones included.
    @ivar results: how many reloads (C{"reload"}) and restarts
        (C{"restart"}) had each result, by operation and result.
    """

    def __init__(
        self,
        reactor: Any,
        top: RouterService,
        config: Config,
        engines: Engines,
    ) -> None:
        self._reactor = reactor
        self._top = top
        self.config = config
        self.engines = engines
        self.loaded_at = time.time()
        self.last: Outcome | None = None
        self.last_reload: Outcome | None = None
        self.results = {
            (what, result): 0 for what in ("reload", "restart") for result in RESULTS
        }
        self._busy = False

    @property
    def table(self) -> RouteTable:
        assert self._top.table is not None
        return self._top.table

    # -- the two operations

    def reload(self) -> Deferred[Outcome]:
        """
        Re-read the routes file and serve it.
        """
        return self._run("reload", self._reload)

    def restart(self, host: str, prefix: str) -> Deferred[Outcome]:
        """
        Replace the workers of one route with new ones.
        """
        return self._run("restart", lambda: self._restart(host, prefix))

    def _run(self, what: str, step: Any) -> Deferred[Outcome]:
        health = self._top.health
        if health is not None and health.stopping is not None:
            return succeed(
                self._count(
                    what,
                    self._refused(
                        f"{what} refused: the router is stopping ({health.stopping})"
                    ),
                )
            )
        if self._busy:
            return succeed(
                self._count(
                    what,
                    self._refused(
                        f"{what} refused: another reload or restart is running; "
                        "try again when it ends"
                    ),
                )
            )

        def done(outcome: Outcome) -> Outcome:
            self._busy = False
            self.last = self._count(what, outcome)
            if outcome.ok:
                _log.info("{what}: {message}", what=what, message=outcome.message)
            else:
                _log.warn(
                    "{what} failed: {message}", what=what, message=outcome.message
                )
            return outcome

        def crashed(failure: Any) -> Outcome:
            _log.failure("{what} failed", failure=failure, what=what)
            return self._failed(f"{what} failed: {failure.getErrorMessage()}")

        self._busy = True
        d: Deferred[Outcome] = step()
        return d.addErrback(crashed).addCallback(done)

    def _failed(self, message: str) -> Outcome:
        return Outcome(False, message, self.table.generation, time.time())

    def _refused(self, message: str) -> Outcome:
        return Outcome(False, message, self.table.generation, time.time(), True)

    def _count(self, what: str, outcome: Outcome) -> Outcome:
        self.results[what, outcome.result] += 1
        if what == "reload":
            self.last_reload = outcome
        return outcome

    @inlineCallbacks
    def _reload(self) -> Generator[Deferred[Any], Any, Outcome]:
        path = self.config.path
        try:
            config = load_config(path)
        except ConfigError as e:
            return self._failed(f"{path} was not loaded; nothing changed:\n{e}")
        refused = _cannot_change_in_place(self.config, config)
        if refused:
            return self._refused(
                "nothing changed: these changes need a new router process "
                "('txrouter upgrade'):\n" + "\n".join(refused)
            )
        engines = replace(
            self.engines,
            trusted=TrustedProxies(config.trusted_proxies),
            drain_timeout=config.drain_timeout,
        )
        outcome: Outcome = yield self._replace(config, engines, frozenset())
        return outcome

    @inlineCallbacks
    def _restart(
        self, host: str, prefix: str
    ) -> Generator[Deferred[Any], Any, Outcome]:
        host = host.lower().rstrip(".")
        if not prefix.endswith("/"):
            prefix += "/"
        key = RouteKey(host, prefix)
        entry = self.table.routes.get(key)
        if entry is None:
            known = ", ".join(str(k) for k in self.table.routes)
            return self._refused(f"no route {key}; the routes are: {known}")
        if entry.workers is None:
            where = entry.route.origin
            return self._refused(
                f"{where} has no worker processes to restart (only routes "
                "with 'workers:' of 1 or more have); an in-process "
                "application changes with a new router process: "
                "'txrouter upgrade'"
            )
        outcome: Outcome = yield self._replace(
            self.config, self.engines, frozenset({key})
        )
        return outcome

    # -- the common part: build, start, switch, retire

    @inlineCallbacks
    def _replace(
        self, config: Config, engines: Engines, renew: frozenset[RouteKey]
    ) -> Generator[Deferred[Any], Any, Outcome]:
        old = self.table
        try:
            table = build_table(config, engines, old.generation + 1, old, renew)
        except AppLoadError as e:
            return self._failed(f"nothing changed:\n{e}")
        for warning in table.warnings:
            _log.warn("{warning}", warning=warning)
        kept = set(map(id, old.routes.values()))
        new_sets = [s for e, s in _worker_sets(table) if id(e) not in kept]
        try:
            yield self._ready(new_sets)
        except WorkerStartError as e:
            yield DeferredList([s.retire() for s in new_sets], consumeErrors=True)
            return self._failed(f"nothing changed: {e}")
        added = [d for d in config.listen if d not in self.config.listen]
        removed = [d for d in self.config.listen if d not in config.listen]
        try:
            listeners = self._listen(
                [s for s in config.listeners if s.endpoint in added]
            )
        except ListenError as e:
            yield DeferredList([s.retire() for s in new_sets], consumeErrors=True)
            return self._failed(f"nothing changed: cannot listen: {e}")

        # The switch: from the next request on, the new table serves.
        self._top.serve(table)
        self.config = config
        self.engines = engines
        self.engines.monitor.killTime = config.drain_timeout  # type: ignore[assignment]
        self._top.getServiceNamed("drain").timeout = config.drain_timeout
        if self._top.deadline is not None:
            self._top.deadline.drain_timeout = config.drain_timeout
        assert self._top.site is not None
        self._top.site.set_limits(config.limits)
        self._top.site.configure_access_log(config.access_log_format, engines.trusted)
        self.loaded_at = time.time()

        for spec in config.listeners:
            for listener in self._listeners([spec.endpoint]):
                listener.update(spec)
        closing = [
            (listener, listener.stopService()) for listener in self._listeners(removed)
        ]
        for listener, closed in closing:
            yield closed  # no more connections from here on
            listener.disownServiceParent()
        now_used = set(map(id, table.routes.values()))
        gone = [e for e in old.routes.values() if id(e) not in now_used]
        for entry in gone:
            self._retire(entry, config.drain_timeout)
        return Outcome(
            True,
            _summary(old, table, renew, listeners, removed),
            table.generation,
            time.time(),
        )

    def _ready(self, sets: list[WorkerSet]) -> Deferred[None]:
        """
        Fires once every worker of C{sets} answers; fails with
        L{WorkerStartError} when one exits first or after L{READY_TIMEOUT}.
        """
        result: Deferred[None] = Deferred()
        if not sets:
            result.callback(None)
            return result

        def settle(outcome: Any) -> None:
            if timer.active():
                timer.cancel()
            if not result.called:
                if isinstance(outcome, Failure):
                    first = outcome.value
                    result.errback(getattr(first, "subFailure", outcome))
                else:
                    result.callback(None)

        def too_late() -> None:
            result.errback(
                WorkerStartError(
                    f"the new workers did not answer in {READY_TIMEOUT:g}s"
                )
            )

        timer = self._reactor.callLater(READY_TIMEOUT, too_late)
        gatherResults([s.ready() for s in sets], consumeErrors=True).addBoth(settle)
        return result

    def _listen(self, specs: list[Listener]) -> list[ListenerService]:
        """
        Bind the new listeners, or none of them.
        """
        site = self._top.site
        assert site is not None
        started: list[ListenerService] = []
        try:
            for spec in specs:
                endpoint = server_endpoint(self._reactor, spec.endpoint)
                listener = ListenerService(spec.endpoint, endpoint, site, spec)
                listener.setServiceParent(self._top)  # binds at once
                started.append(listener)
        except BaseException:
            for listener in started:
                listener.stopService()
                listener.disownServiceParent()
            raise
        return started

    def _listeners(self, descriptions: list[str]) -> list[ListenerService]:
        return [
            s
            for s in list(self._top)
            if isinstance(s, ListenerService) and s.name in descriptions
        ]

    def _retire(self, entry: BuiltRoute, drain_timeout: float) -> None:
        """
        Let what only the old table used finish its requests, then stop it;
        its tunnels are closed after C{drain_timeout}, as on SIGTERM (those
        to workers end with their workers' own drain).
        """
        tunnels = entry.tunnels
        if tunnels is not None and tunnels.open and entry.workers is None:
            self._reactor.callLater(drain_timeout, tunnels.close_all)
        workers = entry.workers
        if workers is not None:
            deadline = self._reactor.seconds() + drain_timeout

            def look() -> None:
                if workers.in_flight() and self._reactor.seconds() < deadline:
                    self._reactor.callLater(_DRAIN_POLL, look)
                else:
                    workers.retire()

            look()
        elif entry.upstreams is not None:
            for upstream in entry.upstreams.members:
                self.engines.client.pool.close_key(upstream.key)

    # -- status

    def status(self) -> dict[str, Any]:
        """
        The current table and the last change, as plain data.
        """
        table = self.table
        routes = []
        for key, entry in table.routes.items():
            item: dict[str, Any] = {
                "host": key.host,
                "prefix": key.prefix,
                "kind": entry.route.kind,
                "where": str(entry.route.origin),
            }
            if entry.workers is not None:
                item["workers"] = [
                    {"name": name, "pid": pid, "ready": ready}
                    for (name, pid), ready in zip(
                        entry.workers.pids().items(),
                        (u.ready for u in entry.workers.group.members),
                        strict=True,
                    )
                ]
            elif getattr(entry.route, "workers", None) == 0:
                item["in_process"] = True
            routes.append(item)
        return {
            "config": str(self.config.path),
            "generation": table.generation,
            "loaded_at": self.loaded_at,
            "listen": list(self.config.listen),
            "routes": routes,
            "last_change": self.last.as_dict() if self.last else None,
        }


def _worker_sets(table: RouteTable) -> list[tuple[BuiltRoute, WorkerSet]]:
    return [(e, e.workers) for e in table.routes.values() if e.workers is not None]


def _cannot_change_in_place(old: Config, new: Config) -> list[str]:
    """
    What differs between two routes files that a running router cannot
    take on, one line each.
    """
    problems = []
    file = new.path
    if old.threads != new.threads:
        problems.append(
            f"{file}: threads: the shared thread pool is sized when the router "
            f"starts ({old.threads.min}-{old.threads.max} now, "
            f"{new.threads.min}-{new.threads.max} asked)"
        )
    if old.runtime_dir != new.runtime_dir:
        problems.append(
            f"{file}: runtime_dir: running workers have their sockets in "
            f"{old.runtime_dir or 'a temporary folder'}"
        )
    if old.admin != new.admin:
        problems.append(
            f"{file}: admin: the admin endpoint is bound when the router starts"
        )
    if old.access_log != new.access_log:
        problems.append(f"{file}: access_log: the log file is opened at start")
    if old.acme != new.acme:
        problems.append(
            f"{file}: acme: read when the router starts (its account, names "
            "and schedule); restart the router or 'txrouter upgrade'"
        )
    tls_before = {s.endpoint: s.tls is not None for s in old.listeners}
    for spec in new.listeners:
        if tls_before.get(spec.endpoint, spec.tls is not None) != (
            spec.tls is not None
        ):
            problems.append(
                f"{file}: listen: {spec.endpoint}: TLS is added to or removed "
                "from a port when it is opened; change the endpoint, or "
                "upgrade the router ('txrouter upgrade')"
            )
    before, after = _in_process_django(old), _in_process_django(new)
    if before != after:
        for route in [*after.values()] or [*before.values()]:
            problems.append(
                f"{route.origin}: the Django project in the router process "
                "changed; Django's settings are process-global and are set "
                "up once per process"
            )
    return problems


def _in_process_django(config: Config) -> dict[tuple[Path, str], DjangoRoute]:
    return {
        (route.project, route.settings): route
        for route in config.routes()
        if isinstance(route, DjangoRoute) and route.workers == 0
    }


def _summary(
    old: RouteTable,
    new: RouteTable,
    renew: frozenset[RouteKey],
    listened: list[ListenerService],
    closed: list[str],
) -> str:
    added = [k for k in new.routes if k not in old.routes]
    removed = [k for k in old.routes if k not in new.routes]
    changed = [
        k for k in new.routes if k in old.routes and new.routes[k] is not old.routes[k]
    ]
    kept = len(new.routes) - len(added) - len(changed)
    parts = [f"generation {new.generation} serving"]
    if renew:
        parts.append("new workers for " + ", ".join(map(str, sorted(renew))))
    else:
        for word, keys in (
            ("added", added),
            ("changed", changed),
            ("removed", removed),
        ):
            if keys:
                parts.append(f"{word} " + ", ".join(map(str, keys)))
        parts.append(f"{kept} unchanged")
    if listened:
        parts.append("listening on " + ", ".join(str(s.name) for s in listened))
    if closed:
        parts.append("stopped listening on " + ", ".join(closed))
    return "; ".join(parts)
