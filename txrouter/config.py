"""
The routes file as typed, frozen data.

L{load_config} reads a C{routes.yaml} (version 1, see README.md) and returns a
L{Config}, or raises L{ConfigError} listing every problem with its
C{file:line}. It touches no reactor and imports no application: a bad file
is refused before any service exists.

    >>> config = load_config(Path("routes.yaml"))
    >>> config.tables[""]["/"]
    DjangoRoute(...)
"""

from __future__ import annotations

import hashlib
import ipaddress
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from txrouter.accesslog import FORMATS as ACCESS_LOG_FORMATS
from txrouter.acmeconfig import Acme, read_acme
from txrouter.configreader import ConfigReader, describe
from txrouter.errors import ConfigError, Problem
from txrouter.hsts import read_hsts
from txrouter.kinds import KINDS, Route
from txrouter.kinds.asgi import AsgiRoute
from txrouter.kinds.django import DjangoRoute
from txrouter.kinds.proxy import ProxyRoute
from txrouter.kinds.redirect import RedirectRoute
from txrouter.kinds.static import StaticRoute
from txrouter.kinds.wsgi import WsgiRoute
from txrouter.limits import Limits
from txrouter.listeners import Listener, read_listeners
from txrouter.privileges import STARTED_AS
from txrouter.proxyprotocol import check_proxy_listeners
from txrouter.routespec import Origin, Threads
from txrouter.yamlsource import LocatedDict, LocatedList, TooDeep, load_yaml

__all__ = [
    "AsgiRoute",
    "Config",
    "DjangoRoute",
    "Origin",
    "ProxyRoute",
    "RedirectRoute",
    "Route",
    "StaticRoute",
    "Threads",
    "WsgiRoute",
    "load_config",
]

_TOP_KEYS = (
    "listen",
    "threads",
    "drain_timeout",
    "access_log",
    "access_log_format",
    "trusted_proxies",
    "runtime_dir",
    "routes",
    "hosts",
    "hsts",
    "admin",
    "limits",
    "acme",
)


@dataclass(frozen=True)
class Config:
    """
    A validated routes file.

    @ivar path: the file it was read from.
    @ivar listen: Twisted server endpoint strings, already checked.
    @ivar listeners: the same, each with its TLS or HTTPS redirect, if any.
    @ivar hsts: the C{Strict-Transport-Security} value of each host (the
        keys of C{tables}) that asks for one.
    @ivar admin: the admin endpoint's string (L{default_admin} unless the
        file names one).
    @ivar threads: size of the shared pool.
    @ivar drain_timeout: seconds SIGTERM waits for in-flight requests.
    @ivar access_log: an absolute path, C{"-"} for twistd's log, or L{None}.
    @ivar access_log_format: C{"combined"} or C{"json"}.
    @ivar runtime_dir: the private folder for worker sockets, or L{None}
        for a new temporary one.
    @ivar trusted_proxies: networks (CIDR) whose C{X-Forwarded-For} and
        C{Forwarded} headers are extended rather than replaced.
    @ivar acme: the certificates to obtain from an ACME CA, if any.
    @ivar tables: route tables by host: C{""} is the default host, other keys
        are lower-case names or C{*.} wildcards. Each table maps a prefix
        (starting and ending with C{/}) to its route.
    """

    path: Path
    listen: tuple[str, ...]
    admin: str
    threads: Threads
    drain_timeout: float
    limits: Limits
    access_log: str | None
    trusted_proxies: tuple[str, ...]
    runtime_dir: Path | None
    tables: Mapping[str, Mapping[str, Route]]
    access_log_format: str = ACCESS_LOG_FORMATS[0]
    listeners: tuple[Listener, ...] = ()
    hsts: Mapping[str, bytes] = field(default_factory=dict)
    acme: Acme | None = None

    def routes(self) -> list[Route]:
        """
        @return: every route of every host, in file order.
        """
        return [route for table in self.tables.values() for route in table.values()]


def load_config(path: Path) -> Config:
    """
    Read and validate a routes file.

    @raise ConfigError: with every problem found, each with its line.
    """
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            [Problem(name, 0, "", f"cannot read the file: {e}")]
        ) from None
    try:
        data, duplicates = load_yaml(text)
    except TooDeep as e:
        raise ConfigError([Problem(name, e.line, "", str(e))]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 0
        what = e.problem or str(e)
        raise ConfigError(
            [Problem(name, line, "", f"not valid YAML: {what}")]
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError([Problem(name, 0, "", f"not valid YAML: {e}")]) from None

    reader = ConfigReader(name, path.resolve().parent, KINDS)
    for dup in duplicates:
        reader.problem(
            dup.line,
            _where_in(data, dup.mapping, dup.key),
            f"{dup.key!r} is given twice (first on line {dup.first_line}); "
            "YAML keeps only the last one: remove or merge one of them",
        )
    if not isinstance(data, LocatedDict):
        reader.problem(
            getattr(data, "line", 1),
            "",
            "expected a mapping with at least 'listen:' and 'routes:', "
            f"got {describe(data)}",
        )
        raise ConfigError(reader.problems)

    for key in data:
        if key not in _TOP_KEYS:
            reader.problem(
                data.line_of(key),
                str(key),
                f"unknown key; expected one of: {', '.join(_TOP_KEYS)}",
            )

    listeners = read_listeners(reader, data)
    admin = _read_admin(reader, data, path)
    threads = reader.threads(data, "threads", "threads")
    runtime_dir = _read_runtime_dir(reader, data)
    drain_timeout = reader.number(data, "drain_timeout", "drain_timeout", 30.0, 0)
    limits = _read_limits(reader, data)
    access_log = _read_access_log(reader, data)
    access_log_format = _read_access_log_format(reader, data)
    trusted_proxies = _read_trusted_proxies(reader, data)
    accepted = [listener.endpoint for listener in listeners]
    check_proxy_listeners(reader, data, accepted, trusted_proxies)
    hsts: dict[str, bytes] = {}
    tables = _read_tables(reader, data, hsts)
    acme = read_acme(reader, data, tables, listeners)
    reader.settle()

    if reader.problems:
        raise ConfigError(sorted(reader.problems, key=lambda p: p.line))
    return Config(
        path=path,
        listen=tuple(listener.endpoint for listener in listeners),
        listeners=listeners,
        hsts=hsts,
        acme=acme,
        admin=admin,
        threads=threads,
        drain_timeout=drain_timeout,
        limits=limits,
        access_log=access_log,
        access_log_format=access_log_format,
        trusted_proxies=trusted_proxies,
        runtime_dir=runtime_dir,
        tables=tables,
    )


def _where_in(root: Any, mapping: LocatedDict, key: Any) -> str:
    """
    The place of C{mapping[key]} inside C{root}, in the notation of our
    messages: C{routes['/wiki/']}, C{hosts['a.com'].routes['/'].cache}.
    """

    def step(path: str, name: Any) -> str:
        # Keys chosen by the user (prefixes, host names) are subscripts.
        if path.endswith("routes") or path == "hosts":
            return f"{path}[{name!r}]"
        return f"{path}.{name}" if path else str(name)

    # Aliases share values: each is searched once, or a file of nested
    # aliases ("billion laughs") would take hours here.
    seen: set[int] = set()

    def search(node: Any, path: str) -> str | None:
        if node is mapping:
            return step(path, key)
        if id(node) in seen:
            return None
        seen.add(id(node))
        children = node.items() if isinstance(node, dict) else []
        if isinstance(node, list):
            children = [(f"[{i}]", item) for i, item in enumerate(node)]
        for name, child in children:
            if isinstance(child, (dict, list)):
                inner = path + name if isinstance(node, list) else step(path, name)
                found = search(child, inner)
                if found is not None:
                    return found
        return None

    return search(root, "") or ""


def default_admin(routes_file: Path) -> str:
    """
    The admin endpoint of the router serving C{routes_file} when the file
    names none: a UNIX socket (mode 0600) in a folder of the user's own
    (mode 0700) under the temporary folder, named after the routes file's
    absolute path, so that C{txrouter reload --config FILE} finds it.
    """
    digest = hashlib.sha256(str(routes_file.resolve()).encode()).hexdigest()[:16]
    # The user who started the process: after twistd's --uid drop, a
    # reload names the same socket as the start did.
    folder = Path(tempfile.gettempdir()) / f"txrouter-{STARTED_AS}"
    return f"unix:{folder / f'admin-{digest}.sock'}:mode=600"


def _read_admin(reader: ConfigReader, data: LocatedDict, path: Path) -> str:
    value = data.get("admin")
    if value is None:
        return default_admin(path)
    line = data.line_of("admin")
    address = reader.endpoint(value, line, "admin")
    if address is None:
        return default_admin(path)
    loopback = False
    if address.family == "tcp":
        try:
            loopback = ipaddress.ip_address(address.place).is_loopback
        except ValueError:
            loopback = address.place == "localhost"
    if address.family != "unix" and not loopback:
        reader.problem(
            line,
            "admin",
            f"{value!r} would let anyone who reaches it reload, restart or "
            "upgrade the router: use a UNIX socket (e.g. "
            "'unix:/run/txrouter/admin.sock:mode=600') or TCP on a loopback "
            "interface (e.g. 'tcp:9901:interface=127.0.0.1')",
        )
    return str(value)


_SIZES = ("max_request_line", "max_header", "max_head", "max_body")
_COUNTS = ("max_headers", "max_connections", "max_streams")
_TIMES = ("head_timeout", "body_timeout", "send_timeout", "keepalive_timeout")


def _read_limits(reader: ConfigReader, data: LocatedDict) -> Limits:
    value = data.get("limits")
    if value is None:
        return Limits()
    if not isinstance(value, LocatedDict):
        reader.problem(
            data.line_of("limits"),
            "limits",
            f"expected a mapping such as {{max_body: 50M}}, got {describe(value)}",
        )
        return Limits()
    known = (*_TIMES, *_SIZES, *_COUNTS)
    reader.unknown_keys(value, "limits", known)
    default = Limits()
    settings: dict[str, Any] = {}
    for key in _TIMES:
        given = getattr(default, key)
        settings[key] = reader.number(value, key, f"limits.{key}", given, 0.001)
    for key in _SIZES:
        settings[key] = reader.size(value, key, f"limits.{key}", getattr(default, key))
    for key in _COUNTS:
        given = getattr(default, key)
        settings[key] = int(reader.number(value, key, f"limits.{key}", given, 1, True))
    if settings["max_request_line"] > settings["max_head"]:
        reader.problem(
            value.line,
            "limits",
            "max_request_line is larger than max_head, which counts the request "
            "line too",
        )
    return Limits(**settings)


def _read_runtime_dir(reader: ConfigReader, data: LocatedDict) -> Path | None:
    return reader.new_path(data, "runtime_dir", "a folder path")


def _read_access_log(reader: ConfigReader, data: LocatedDict) -> str | None:
    if data.get("access_log") == "-":
        return "-"
    path = reader.new_path(data, "access_log", "a file path or '-' (twistd's log)")
    return None if path is None else str(path)


def _read_access_log_format(reader: ConfigReader, data: LocatedDict) -> str:
    value = data.get("access_log_format")
    if value is None:
        return ACCESS_LOG_FORMATS[0]
    if value not in ACCESS_LOG_FORMATS:
        choices = " or ".join(repr(f) for f in ACCESS_LOG_FORMATS)
        reader.problem(
            data.line_of("access_log_format"),
            "access_log_format",
            f"expected {choices}, got {describe(value)}",
        )
        return ACCESS_LOG_FORMATS[0]
    return str(value)


def _read_trusted_proxies(reader: ConfigReader, data: LocatedDict) -> tuple[str, ...]:
    value = data.get("trusted_proxies")
    if value is None:
        return ()
    if not isinstance(value, LocatedList):
        reader.problem(
            data.line_of("trusted_proxies"),
            "trusted_proxies",
            f"expected a list of networks such as ['10.0.0.0/8', '::1'], "
            f"got {describe(value)}",
        )
        return ()
    networks = []
    for i, item in enumerate(value):
        try:
            networks.append(str(ipaddress.ip_network(str(item), strict=False)))
        except ValueError:
            reader.problem(
                value.line_of(i),
                f"trusted_proxies[{i}]",
                f"not an IP network: {item!r}; expected e.g. '10.0.0.0/8' or "
                "'127.0.0.1'",
            )
    return tuple(networks)


def _read_tables(
    reader: ConfigReader, data: LocatedDict, hsts: dict[str, bytes]
) -> dict[str, dict[str, Route]]:
    """
    Read the route tables (C{routes:} and each of C{hosts:}), and into
    C{hsts} the C{Strict-Transport-Security} value of those that ask for it.
    """
    tables: dict[str, dict[str, Route]] = {}
    header = read_hsts(reader, data, "")
    if header is not None:
        hsts[""] = header
    if "routes" in data:
        tables[""] = reader.table(data, "routes", "routes")
    hosts = data.get("hosts")
    if hosts is not None:
        if not isinstance(hosts, LocatedDict):
            reader.problem(
                data.line_of("hosts"),
                "hosts",
                "expected a mapping of host name to {routes: ...}, "
                f"got {describe(hosts)}",
            )
        else:
            for raw_name, spec in hosts.items():
                where = f"hosts[{raw_name!r}]"
                name = reader.host_name(raw_name, hosts.line_of(raw_name), where)
                if name is None:
                    continue
                if name in tables:
                    reader.problem(
                        hosts.line_of(raw_name),
                        where,
                        "this host is listed twice (names ignore case and a "
                        "trailing dot)",
                    )
                    continue
                if not isinstance(spec, LocatedDict):
                    reader.problem(
                        hosts.line_of(raw_name),
                        where,
                        f"expected a mapping with 'routes:', got {describe(spec)}",
                    )
                    continue
                reader.unknown_keys(spec, where, ("routes", "hsts"))
                if "routes" not in spec:
                    reader.problem(spec.line, where, "missing 'routes:'")
                    continue
                tables[name] = reader.table(spec, "routes", f"{where}.routes")
                header = read_hsts(reader, spec, where)
                if header is not None:
                    hsts[name] = header
    if "routes" not in data and "hosts" not in data:
        reader.problem(
            data.line,
            "routes",
            "no routes: add 'routes:' with at least one prefix, "
            "e.g. '/: {static: public}'",
        )
    return tables
