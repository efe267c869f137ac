"""
The environment of worker processes (L{txrouter.workers.WorkerSet}): the
router's own, with the route's C{env}, but never the settings module of
the Django project the router runs itself.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from txrouter import djangoproject
from txrouter.routespec import Origin, Threads
from txrouter.workers import WorkerMonitor, WorkerSet

pytestmark = pytest.mark.unit


class _Route:
    prefix = "/live/"
    origin = Origin("routes.yaml", 3, "routes['/live/']")
    workers = 1
    threads = Threads()
    timeout = 60.0

    def __init__(self, env: tuple[tuple[str, str], ...] = ()) -> None:
        self.env = env


class EnvironmentTests(SynchronousTestCase):
    def environment(self, route: _Route) -> dict[str, str]:
        monitor = WorkerMonitor(MemoryReactorClock(), kill_time=1)
        workers = WorkerSet(
            MemoryReactorClock(),
            monitor,
            route,
            [],
            "/",
            "/tmp",
            "w-",
            30.0,  # type: ignore[arg-type]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            processes: dict[str, Any] = monitor.processes
        return dict(processes[workers.names[0]][3])

    def set_router_project(self, settings: str | None) -> None:
        previous = os.environ.get("DJANGO_SETTINGS_MODULE")
        loaded = djangoproject._loaded_settings

        def restore() -> None:
            djangoproject._loaded_settings = loaded
            if previous is None:
                os.environ.pop("DJANGO_SETTINGS_MODULE", None)
            else:
                os.environ["DJANGO_SETTINGS_MODULE"] = previous

        self.addCleanup(restore)
        djangoproject._loaded_settings = settings
        if settings is not None:
            os.environ["DJANGO_SETTINGS_MODULE"] = settings

    def test_router_project_not_passed_on(self) -> None:
        """
        The settings module of the router's in-process Django project does
        not reach a worker (whose asgi.py would take it for its own).
        """
        self.set_router_project("blog.settings")
        env = self.environment(_Route())
        self.assertNotIn("DJANGO_SETTINGS_MODULE", env)
        self.assertIn("TXROUTER_WORKER_TOKEN", env)

    def test_route_env_wins(self) -> None:
        """
        A route's own C{env} may still set it.
        """
        self.set_router_project("blog.settings")
        env = self.environment(_Route((("DJANGO_SETTINGS_MODULE", "chat.settings"),)))
        self.assertEqual(env["DJANGO_SETTINGS_MODULE"], "chat.settings")

    def test_from_the_shell(self) -> None:
        """
        One set in the router's environment by whoever started it, with no
        Django project in the router, is passed on as any variable is.
        """
        self.set_router_project(None)
        os.environ["DJANGO_SETTINGS_MODULE"] = "site.settings"
        env = self.environment(_Route())
        self.assertEqual(env["DJANGO_SETTINGS_MODULE"], "site.settings")
