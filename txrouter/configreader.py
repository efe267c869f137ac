"""
The checks behind L{txrouter.config.load_config}.

A L{ConfigReader} walks the located YAML data, collects every problem it
finds (rather than stopping at the first) and builds the route objects of
L{txrouter.routespec}.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.endpoints import serverFromString

from txrouter.djangoproject import default_settings_module
from txrouter.errors import Problem
from txrouter.routespec import (
    KIND_OPTIONS,
    DjangoRoute,
    Origin,
    ProxyRoute,
    RedirectRoute,
    Route,
    StaticRoute,
    Threads,
    WsgiRoute,
)
from txrouter.yamlsource import LocatedDict, LocatedList

__all__ = ["ConfigReader", "describe"]

_HOST = re.compile(
    r"^(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$"
)
_IPV6_LITERAL = re.compile(r"^\[[0-9a-f:.]+\]$")
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
_MODULE = re.compile(rf"^{_DOTTED}$")
_APP = re.compile(rf"^{_DOTTED}:{_DOTTED}$")
_REDIRECT_STATUSES = (301, 302, 303, 307, 308)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def describe(value: Any) -> str:
    """
    How a wrong value is named in a message: C{int 5}, C{a list}.
    """
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {value!r}"


class ConfigReader:
    """
    Collects problems and builds routes for one routes file.

    @ivar problems: everything found wrong so far, in file order.
    """

    def __init__(self, file: str, base: Path) -> None:
        """
        @param file: the file's name as the user gave it, for messages.
        @param base: the folder that relative paths are relative to.
        """
        self.file = file
        self.base = base
        self.problems: list[Problem] = []
        self._django_routes: list[tuple[dict[str, Route], str, bool]] = []

    def problem(self, line: int, where: str, message: str) -> None:
        """
        Record one problem.
        """
        self.problems.append(Problem(self.file, line, where, message))

    def resolve(self, value: str) -> Path:
        """
        @return: C{value} as an absolute path, relative ones taken from the
            routes file's folder.
        """
        return Path(os.path.normpath(self.base / os.path.expanduser(value)))

    def new_path(self, mapping: LocatedDict, key: str, expected: str) -> Path | None:
        """
        Read an optional path to something txrouter creates (a log file, a
        folder): its parent folder must exist.
        """
        value = mapping.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.problem(
                mapping.line_of(key), key, f"expected {expected}, got {describe(value)}"
            )
            return None
        path = self.resolve(value)
        if not path.parent.is_dir():
            self.problem(
                mapping.line_of(key),
                key,
                f"the folder {str(path.parent)!r} does not exist",
            )
        return path

    def unknown_keys(
        self, mapping: LocatedDict, where: str, allowed: tuple[str, ...]
    ) -> None:
        """
        Report every key of C{mapping} that is not in C{allowed}.
        """
        for key in mapping:
            if key not in allowed:
                self.problem(
                    mapping.line_of(key),
                    f"{where}.{key}",
                    f"unknown key; expected one of: {', '.join(allowed)}",
                )

    def number(
        self,
        mapping: LocatedDict,
        key: str,
        where: str,
        default: float,
        minimum: float,
        integer: bool = False,
    ) -> float:
        """
        Read an optional number no smaller than C{minimum}.
        """
        value = mapping.get(key)
        if value is None:
            return default
        wanted = "a whole number" if integer else "a number"
        ok_type = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_type):
            self.problem(
                mapping.line_of(key), where, f"expected {wanted}, got {describe(value)}"
            )
            return default
        if not math.isfinite(value) or value < minimum:
            self.problem(
                mapping.line_of(key), where, f"must be >= {minimum:g}, got {value}"
            )
            return default
        return float(value)

    def flag(self, mapping: LocatedDict, key: str, where: str, default: bool) -> bool:
        """
        Read an optional boolean.
        """
        value = mapping.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(
                mapping.line_of(key),
                where,
                f"expected true or false, got {describe(value)}",
            )
            return default
        return value

    def endpoint(self, value: Any, line: int, where: str) -> bool:
        """
        Check a server endpoint string with Twisted's own parser.

        @return: whether it is valid.
        """
        if not isinstance(value, str) or not value:
            self.problem(
                line,
                where,
                "expected an endpoint string such as 'tcp:8080', "
                f"got {describe(value)}",
            )
            return False
        try:
            # Parsing builds the endpoint object only; nothing listens, and
            # the reactor argument is not used until listen() is called.
            serverFromString(None, value)
        except Exception as e:
            self.problem(
                line,
                where,
                f"bad endpoint {value!r} ({type(e).__name__}: {e}); expected a "
                "Twisted server endpoint string such as "
                "'tcp:8080:interface=127.0.0.1' or 'unix:/run/txrouter.sock'",
            )
            return False
        return True

    def host_name(self, raw: Any, line: int, where: str) -> str | None:
        """
        Check and normalize a C{hosts:} key.

        @return: the lower-case name, or L{None} when it is not valid.
        """
        if not isinstance(raw, str):
            self.problem(line, where, f"expected a host name, got {describe(raw)}")
            return None
        name = raw.strip().lower().rstrip(".")
        if _HOST.match(name) or _IPV6_LITERAL.match(name):
            return name
        hint = ""
        if ":" in name and not name.startswith("["):
            hint = "; host matching ignores the port: write the name alone"
        elif "*" in name:
            hint = (
                "; a wildcard is allowed only as a leading '*.' (e.g. '*.example.org')"
            )
        self.problem(line, where, f"not a valid host name{hint}")
        return None

    def table(self, parent: LocatedDict, key: str, where: str) -> dict[str, Route]:
        """
        Read one C{routes:} mapping of prefix to route.
        """
        spec = parent.get(key)
        if not isinstance(spec, LocatedDict) or not spec:
            self.problem(
                parent.line_of(key),
                where,
                "expected a mapping of URL prefix to route, such as "
                f"'/: {{static: public}}', got {describe(spec)}",
            )
            return {}
        table: dict[str, Route] = {}
        first_lines: dict[str, int] = {}
        for raw_prefix, route_spec in spec.items():
            line = spec.line_of(raw_prefix)
            route_where = f"{where}[{raw_prefix!r}]"
            prefix = self._prefix(raw_prefix, line, route_where)
            if prefix is None:
                continue
            if prefix in first_lines:
                self.problem(
                    line,
                    route_where,
                    f"duplicate prefix: {prefix!r} is already routed on line "
                    f"{first_lines[prefix]} (a trailing slash is always added)",
                )
                continue
            first_lines[prefix] = line
            route = self._route(
                prefix, route_spec, Origin(self.file, line, route_where)
            )
            if route is not None:
                table[prefix] = route
                if isinstance(route, DjangoRoute):
                    explicit = isinstance(route_spec, dict) and "workers" in route_spec
                    self._django_routes.append((table, prefix, explicit))
        return table

    def check_django_processes(self) -> None:
        """
        Settle each Django route's C{workers} default and refuse two Django
        projects in one process.
        """
        routes = [(t, p, explicit, t[p]) for t, p, explicit in self._django_routes]
        projects = {(r.project, r.settings) for *_, r in routes}  # type: ignore[union-attr]
        default = 0 if len(projects) <= 1 else 1
        in_process: dict[tuple[Path, str], DjangoRoute] = {}
        for table, prefix, explicit, route in routes:
            assert isinstance(route, DjangoRoute)
            if not explicit:
                route = replace(route, workers=default)
                table[prefix] = route
            if route.workers == 0:
                in_process.setdefault((route.project, route.settings), route)
        if len(in_process) > 1:
            first, *others = in_process.values()
            for route in others:
                self.problem(
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

    def _prefix(self, raw: Any, line: int, where: str) -> str | None:
        if not isinstance(raw, str) or not raw.startswith("/"):
            self.problem(
                line, where, "a prefix must be a path starting with '/', e.g. '/blog/'"
            )
            return None
        if any(c in raw for c in "?#%\\") or any(c.isspace() for c in raw):
            self.problem(
                line,
                where,
                "a prefix is a plain decoded path: no '?', '#', '%', '\\' or spaces",
            )
            return None
        prefix = raw if raw.endswith("/") else raw + "/"
        segments = prefix.strip("/").split("/") if prefix != "/" else []
        if any(s in ("", ".", "..") for s in segments):
            self.problem(line, where, "a prefix may not contain '//', '/./' or '/../'")
            return None
        return prefix

    def _route(self, prefix: str, spec: Any, origin: Origin) -> Route | None:
        kinds_text = ", ".join(KIND_OPTIONS)
        if not isinstance(spec, LocatedDict):
            self.problem(
                origin.line,
                origin.where,
                f"expected a mapping with one of {kinds_text}, "
                f"e.g. {{static: public}}, got {describe(spec)}",
            )
            return None
        kinds = [k for k in spec if k in KIND_OPTIONS]
        if not kinds:
            self.problem(
                spec.line, origin.where, f"no route kind: expected one of {kinds_text}"
            )
            return None
        if len(kinds) > 1:
            self.problem(
                spec.line_of(kinds[1]),
                origin.where,
                f"has both {kinds[0]!r} and {kinds[1]!r}; a route has exactly one kind",
            )
            return None
        kind = kinds[0]
        allowed = (kind, *KIND_OPTIONS[kind])
        for key in spec:
            if key in allowed:
                continue
            owners = [k for k, opts in KIND_OPTIONS.items() if key in opts]
            if owners:
                why = (
                    f"{key!r} is an option of {' and '.join(owners)} routes, not {kind}"
                )
            else:
                why = f"unknown key; a {kind} route takes: {', '.join(allowed)}"
            self.problem(spec.line_of(key), f"{origin.where}.{key}", why)
        build = {
            "django": self._django,
            "wsgi": self._wsgi,
            "static": self._static,
            "proxy": self._proxy,
            "redirect": self._redirect,
        }[kind]
        return build(prefix, spec, origin)

    def _directory(self, spec: LocatedDict, key: str, where: str) -> Path | None:
        value = spec.get(key)
        if not isinstance(value, str) or not value:
            self.problem(
                spec.line_of(key),
                where,
                f"expected a folder path, got {describe(value)}",
            )
            return None
        path = self.resolve(value)
        if not path.is_dir():
            self.problem(
                spec.line_of(key),
                where,
                f"{str(path)!r} is not a folder (relative paths start at "
                f"{str(self.base)!r}, the routes file's folder)",
            )
            return None
        return path

    def _django(self, prefix: str, spec: LocatedDict, origin: Origin) -> Route | None:
        project = self._directory(spec, "django", f"{origin.where}.django")
        settings = spec.get("settings")
        workers = int(
            self.number(spec, "workers", f"{origin.where}.workers", 0, 0, True)
        )
        threads = self.threads(spec, "threads", f"{origin.where}.threads")
        env = self._env(spec, origin)
        if settings is not None:
            if not isinstance(settings, str) or not _MODULE.match(settings):
                self.problem(
                    spec.line_of("settings"),
                    f"{origin.where}.settings",
                    "expected a dotted module name such as 'mysite.settings', "
                    f"got {describe(settings)}",
                )
                return None
        elif project is not None:
            settings = default_settings_module(project)
            if settings is None:
                self.problem(
                    spec.line_of("django"),
                    f"{origin.where}.django",
                    f"no settings module: {str(project / 'manage.py')!r} does not "
                    "set a DJANGO_SETTINGS_MODULE default; add "
                    "'settings: mysite.settings' to this route",
                )
        if project is None or settings is None:
            return None
        return DjangoRoute(prefix, origin, project, settings, workers, threads, env)

    def _env(self, spec: LocatedDict, origin: Origin) -> tuple[tuple[str, str], ...]:
        value = spec.get("env")
        if value is None:
            return ()
        where = f"{origin.where}.env"
        if not isinstance(value, LocatedDict):
            self.problem(
                spec.line_of("env"),
                where,
                f"expected a mapping of variable name to value, got {describe(value)}",
            )
            return ()
        pairs = []
        for name, item in value.items():
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                self.problem(
                    value.line_of(name), where, f"not a variable name: {name!r}"
                )
            elif isinstance(item, (dict, list)) or item is None:
                self.problem(
                    value.line_of(name),
                    f"{where}.{name}",
                    f"expected a string, number or boolean, got {describe(item)}",
                )
            else:
                text = str(item).lower() if isinstance(item, bool) else str(item)
                pairs.append((name, text))
        return tuple(pairs)

    def threads(self, parent: LocatedDict, key: str, where: str) -> Threads:
        """
        Read an optional C{{min, max}} thread pool size.
        """
        value = parent.get(key)
        if value is None:
            return Threads()
        if not isinstance(value, LocatedDict):
            self.problem(
                parent.line_of(key),
                where,
                f"expected a mapping like {{min: 2, max: 8}}, got {describe(value)}",
            )
            return Threads()
        self.unknown_keys(value, where, ("min", "max"))
        default = Threads()
        low = int(self.number(value, "min", f"{where}.min", default.min, 0, True))
        high = int(self.number(value, "max", f"{where}.max", default.max, 1, True))
        if low > high:
            self.problem(
                value.line,
                where,
                f"min ({low}) is greater than max ({high}); "
                "min threads are kept even when idle, max is the ceiling",
            )
        return Threads(min=low, max=high)

    def _wsgi(self, prefix: str, spec: LocatedDict, origin: Origin) -> Route | None:
        app = spec.get("wsgi")
        workers = int(
            self.number(spec, "workers", f"{origin.where}.workers", 0, 0, True)
        )
        threads = self.threads(spec, "threads", f"{origin.where}.threads")
        env = self._env(spec, origin)
        path = None
        if "path" in spec:
            path = self._directory(spec, "path", f"{origin.where}.path")
        if not isinstance(app, str) or not _APP.match(app):
            self.problem(
                spec.line_of("wsgi"),
                f"{origin.where}.wsgi",
                "expected 'module:attribute', e.g. 'hello:application', "
                f"got {describe(app)}",
            )
            return None
        return WsgiRoute(prefix, origin, app, path, workers, threads, env)

    def _static(self, prefix: str, spec: LocatedDict, origin: Origin) -> Route | None:
        root = self._directory(spec, "static", f"{origin.where}.static")
        cache = None
        if "cache" in spec:
            cache = int(self.number(spec, "cache", f"{origin.where}.cache", 0, 0, True))
        if root is None:
            return None
        return StaticRoute(prefix, origin, root, cache)

    def _proxy(self, prefix: str, spec: LocatedDict, origin: Origin) -> Route | None:
        value = spec.get("proxy")
        line = spec.line_of("proxy")
        where = f"{origin.where}.proxy"
        if isinstance(value, str):
            items = [(value, line, where)]
        elif isinstance(value, LocatedList) and value:
            items = [
                (v, value.line_of(i), f"{where}[{i}]") for i, v in enumerate(value)
            ]
        else:
            self.problem(
                line,
                where,
                "expected an upstream URL (http://, https:// or unix:/path.sock) "
                f"or a list of them, got {describe(value)}",
            )
            return None
        upstreams = []
        for item, item_line, item_where in items:
            upstream = self._upstream(item, item_line, item_where)
            if upstream is not None:
                upstreams.append(upstream)
        timeout = self.number(spec, "timeout", f"{origin.where}.timeout", 60.0, 0.001)
        connect_timeout = self.number(
            spec, "connect_timeout", f"{origin.where}.connect_timeout", 5.0, 0.001
        )
        preserve_host = self.flag(
            spec, "preserve_host", f"{origin.where}.preserve_host", True
        )
        tls_verify = self.flag(spec, "tls_verify", f"{origin.where}.tls_verify", True)
        if len(upstreams) != len(items):
            return None
        return ProxyRoute(
            prefix,
            origin,
            tuple(upstreams),
            timeout,
            connect_timeout,
            preserve_host,
            tls_verify,
        )

    def _upstream(self, value: Any, line: int, where: str) -> str | None:
        if isinstance(value, str) and value.startswith("unix:"):
            socket_path = value[len("unix:") :]
            if not socket_path:
                self.problem(line, where, "expected 'unix:/path/to/app.sock'")
                return None
            return "unix:" + str(self.resolve(socket_path))
        try:
            parts = urlsplit(value) if isinstance(value, str) else None
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
            or parts.username
        ):
            self.problem(
                line,
                where,
                "expected an upstream such as 'http://127.0.0.1:9000/base/', "
                "'https://api.internal/' or 'unix:/run/app.sock' (no query, "
                f"fragment or credentials), got {describe(value)}",
            )
            return None
        try:
            parts.port  # noqa: B018 (validates the port)
        except ValueError as e:
            self.problem(line, where, f"bad port in {value!r}: {e}")
            return None
        return str(value)

    def _redirect(self, prefix: str, spec: LocatedDict, origin: Origin) -> Route | None:
        target = spec.get("redirect")
        status = spec.get("status", 302)
        ok = True
        if (
            not isinstance(target, str)
            or not target.startswith(("/", "http://", "https://"))
            or any(c.isspace() or ord(c) < 32 for c in target)
        ):
            self.problem(
                spec.line_of("redirect"),
                f"{origin.where}.redirect",
                "expected a path starting with '/' or an http(s):// URL, "
                f"without spaces, got {describe(target)}",
            )
            ok = False
        if status not in _REDIRECT_STATUSES or isinstance(status, bool):
            self.problem(
                spec.line_of("status"),
                f"{origin.where}.status",
                f"expected one of {', '.join(map(str, _REDIRECT_STATUSES))}, "
                f"got {describe(status)}",
            )
            ok = False
        if not ok:
            return None
        assert isinstance(target, str)
        return RedirectRoute(prefix, origin, target, int(status))
