"""
Put a router together for a routes file: the shared engines, the first
route table, the site and the service tree.

    RouterService "txrouter"      children stop one at a time, last first:
    ├─ PythonLogging "python_logging"      (apps' logging records to twistd's log)
    ├─ ThreadPoolService "threadpool"
    ├─ ProxyClientService "proxyclient"
    ├─ RuntimeDirService "runtime_dir"
    ├─ WorkerMonitor "workers"
    ├─ AccessLogService "access_log"      (SIGUSR1: reopen the access log)
    ├─ AdminListener "admin"               (the admin endpoint)
    ├─ DrainService "drain"
    ├─ ControlSignals "signals"            (SIGHUP: reload, SIGUSR2: upgrade)
    ├─ ReadyReport "ready_report"          (when started by an upgrade)
    ├─ AcmeService "acme"                  (with acme: certificates from a CA)
    └─ ListenerService, one per listen endpoint

So at stop the router is not ready at once (L{txrouter.health}), the
ports stay open for the C{stop_delay} of its C{health: ready} routes
(none without one) and then close, then the requests in flight drain (at
most C{drain_timeout}), with the admin endpoint still answering, then the
workers stop, then the pool. After an upgrade, every socket (the admin
endpoint's too) is the new router's, and all close at once. Nothing runs
before the service starts (after twistd has daemonized). The L{Reloader}
changes the table and the listeners while it runs.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from txrouter.accesslog import AccessLog, AccessLogService
from txrouter.admin import AdminListener, admin_site
from txrouter.build import Engines, build_table
from txrouter.config import Config
from txrouter.forwarding import TrustedProxies
from txrouter.health import RouterHealth
from txrouter.proxyclient import ProxyClient, ProxyClientService
from txrouter.pythonlogging import PythonLogging
from txrouter.reloader import Outcome, Reloader
from txrouter.serverendpoints import server_endpoint
from txrouter.services import (
    DrainService,
    ListenerService,
    RouterService,
    RuntimeDirService,
    StopDeadline,
)
from txrouter.signals import ControlSignals
from txrouter.site import RouterSite
from txrouter.stats import RouterStats
from txrouter.threadpool import ThreadPoolService, make_pool
from txrouter.upgrade import (
    ReadyReport,
    Upgrader,
    inherited_endpoint,
    inherited_sockets,
)
from txrouter.workers import WorkerMonitor

__all__ = ["build_service", "make_engines"]

_log = Logger()


def make_engines(config: Config, reactor: Any) -> Engines:
    """
    The engines every route table of this router shares; none is started.
    """
    if config.runtime_dir is not None:
        runtime_dir = str(config.runtime_dir)
    else:
        # Named now, made at start (RuntimeDirService), so that building
        # (and 'txrouter check') leaves nothing behind.
        name = f"txrouter-{secrets.token_hex(6)}"
        runtime_dir = os.path.join(tempfile.gettempdir(), name)
    return Engines(
        reactor=reactor,
        pool=make_pool(config.threads.min, config.threads.max, "txrouter"),
        client=ProxyClient(reactor),
        trusted=TrustedProxies(config.trusted_proxies),
        monitor=WorkerMonitor(reactor, kill_time=config.drain_timeout),
        runtime_dir=runtime_dir,
        drain_timeout=config.drain_timeout,
        instance=secrets.token_hex(2),
        health=RouterHealth(reactor),
    )


def build_service(config: Config, reactor: Any) -> RouterService:
    """
    Build the whole service tree for C{config}, loading every in-process
    application.

    @raise txrouter.errors.AppLoadError: applications failed to load.
    """
    engines = make_engines(config, reactor)
    table = build_table(config, engines)
    for warning in table.warnings:
        _log.warn("{warning}", warning=warning)
    access_log = None
    if config.access_log is not None:
        access_log = AccessLog(
            config.access_log, config.access_log_format, engines.trusted, reactor
        )
    site = RouterSite(table.router, reactor, access_log, config.limits)

    top = RouterService()
    top.setName("txrouter")
    top.site = site
    top.health = engines.health
    top.serve(table)
    reloader = top.reloader = Reloader(reactor, top, config, engines)
    upgrade = _upgrade(top, Upgrader(reactor, top))
    deadline = top.deadline = StopDeadline(reactor, config.drain_timeout)
    engines.monitor.time_left = deadline.left_with_margin
    _child(top, "python_logging", PythonLogging())
    pool = ThreadPoolService(engines.pool, reactor, grace=deadline.left_with_margin)
    _child(top, "threadpool", pool)
    _child(top, "proxyclient", ProxyClientService(engines.client))
    # Always there, so that a reload can add the first worker route.
    temporary = config.runtime_dir is None
    runtime = RuntimeDirService(engines.runtime_dir, temporary, engines.instance)
    _child(top, "runtime_dir", runtime)
    _child(top, "workers", engines.monitor)
    # Closed after the drain: requests finishing then are logged too.
    _child(top, "access_log", AccessLogService(reactor, access_log))
    # Sockets handed over by the router this one replaces (an upgrade).
    inherited = inherited_sockets()
    handed_over = set(inherited)

    def endpoint(description: str) -> Any:
        fd = inherited.pop(description, None)
        if fd is not None:
            return inherited_endpoint(reactor, description, fd)
        return server_endpoint(reactor, description)

    # Before the drain: it stops after it, and answers while requests drain.
    admin = AdminListener(
        config.admin,
        endpoint(config.admin),
        admin_site(
            reloader, upgrade, engines.health, RouterStats(reactor, top, engines.pool)
        ),
    )
    admin.fresh = config.admin not in handed_over
    admin.setServiceParent(top)
    _child(top, "drain", DrainService(site, config.drain_timeout, deadline))
    _child(top, "signals", ControlSignals(reactor, reloader.reload, upgrade))
    report = ReadyReport(top)
    if report.wanted:
        _child(top, "ready_report", report)
    if config.acme is not None:
        # Before the listeners: its stored certificates are read when it
        # starts, before their first handshake.
        from txrouter.acmeservice import AcmeService  # the acme package: only then

        acme = top.acme = AcmeService(config.acme, reactor, site)
        _child(top, "acme", acme)
    for spec in config.listeners:
        description = spec.endpoint
        service = ListenerService(description, endpoint(description), site, spec)
        service.setServiceParent(top)
    for fd in inherited.values():
        os.close(fd)  # a listener the new routes file no longer has
    return top


def _upgrade(top: RouterService, upgrader: Upgrader) -> Callable[[], Deferred[Outcome]]:
    """
    The upgrade operation: refused while the router stops. Once the new
    router serves, every socket of this one is the new one's, so
    L{RouterService.stopService} closes them all at once, with no stop
    delay (and this router stays ready until then: no blip for balancers).
    """

    def upgrade() -> Deferred[Outcome]:
        health = top.health
        if health is not None and health.stopping is not None:
            generation = top.table.generation if top.table else 0
            return succeed(
                Outcome(
                    False,
                    f"upgrade refused: the router is stopping ({health.stopping})",
                    generation,
                    time.time(),
                )
            )

        def handed(outcome: Outcome) -> Outcome:
            if outcome.ok:
                top.handed_over = True
            return outcome

        return upgrader.upgrade().addCallback(handed)

    return upgrade


def _child(parent: MultiService, name: str, child: Service) -> None:
    child.setName(name)
    child.setServiceParent(parent)
