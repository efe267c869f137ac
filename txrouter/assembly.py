"""
Put a router together for a routes file: the shared engines, the first
route table, the site and the service tree.

    RouterService "txrouter"      children stop one at a time, last first:
    ├─ PythonLogging "python_logging"      (apps' logging records to twistd's log)
    ├─ ThreadPoolService "threadpool"
    ├─ ProxyClientService "proxyclient"
    ├─ RuntimeDirService "runtime_dir"
    ├─ WorkerMonitor "workers"
    ├─ DrainService "drain"
    ├─ ControlSignals "signals"            (SIGHUP: reload, SIGUSR2: upgrade)
    ├─ ReadyReport "ready_report"          (when started by an upgrade)
    ├─ AdminListener "admin"               (the admin endpoint)
    └─ ListenerService, one per listen endpoint

So at stop the ports close first, then the requests in flight drain (at
most C{drain_timeout}), then the workers stop, then the pool. Nothing
runs before the service starts (after twistd has daemonized). The
L{Reloader} changes the table and the listeners while it runs.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from txrouter.admin import AdminListener, admin_site
from txrouter.build import Engines, build_table
from txrouter.config import Config
from txrouter.forwarding import TrustedProxies
from txrouter.proxyclient import ProxyClient, ProxyClientService
from txrouter.pythonlogging import PythonLogging
from txrouter.reloader import Reloader
from txrouter.services import (
    DrainService,
    ListenerService,
    RouterService,
    RuntimeDirService,
    StopDeadline,
)
from txrouter.signals import ControlSignals
from txrouter.site import RouterSite
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
    site = RouterSite(table.router, reactor, config.access_log, config.limits)

    top = RouterService()
    top.setName("txrouter")
    top.site = site
    top.serve(table)
    reloader = top.reloader = Reloader(reactor, top, config, engines)
    upgrader = Upgrader(reactor, top)
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
    _child(top, "drain", DrainService(site, config.drain_timeout, deadline))
    _child(top, "signals", ControlSignals(reactor, reloader.reload, upgrader.upgrade))
    report = ReadyReport(top)
    if report.wanted:
        _child(top, "ready_report", report)
    # Sockets handed over by the router this one replaces (an upgrade).
    inherited = inherited_sockets()
    handed_over = set(inherited)

    def endpoint(description: str) -> Any:
        fd = inherited.pop(description, None)
        if fd is not None:
            return inherited_endpoint(reactor, description, fd)
        return serverFromString(reactor, description)

    admin = AdminListener(
        config.admin,
        endpoint(config.admin),
        admin_site(reloader, upgrader.upgrade),
    )
    admin.fresh = config.admin not in handed_over
    admin.setServiceParent(top)
    for description in config.listen:
        ListenerService(description, endpoint(description), site).setServiceParent(top)
    for fd in inherited.values():
        os.close(fd)  # a listener the new routes file no longer has
    return top


def _child(parent: MultiService, name: str, child: Service) -> None:
    child.setName(name)
    child.setServiceParent(parent)
