"""
The checks behind L{txrouter.config.load_config}.

A L{ConfigReader} walks the located YAML data and collects every problem it
finds (rather than stopping at the first). It knows the shape of a route
table; each route is read by its kind (L{txrouter.kinds}), with the
reader's checks for numbers, flags, folders, thread pools and C{listen}
endpoint strings (L{txrouter.endpointstrings} tells what one binds).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet.endpoints import serverFromString

from txrouter.endpointstrings import ListenAddress, check_systemd, listen_address
from txrouter.errors import Problem
from txrouter.routespec import Origin, Threads
from txrouter.yamlsource import LocatedDict

if TYPE_CHECKING:
    from txrouter.kinds.contract import Route, RouteKind

__all__ = ["APP_NAME", "MODULE_NAME", "ConfigReader", "describe"]

_HOST = re.compile(
    r"^(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$"
)
_IPV6_LITERAL = re.compile(r"^\[[0-9a-f:.]+\]$")
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
_SIZE = re.compile(r"^([0-9]+)\s*([KMG](?:iB|B)?|)$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
#: A dotted Python module name.
MODULE_NAME = re.compile(rf"^{_DOTTED}$")
#: An application named C{module:attribute}.
APP_NAME = re.compile(rf"^{_DOTTED}:{_DOTTED}$")


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

    def __init__(self, file: str, base: Path, kinds: Mapping[str, RouteKind]) -> None:
        """
        @param file: the file's name as the user gave it, for messages.
        @param base: the folder that relative paths are relative to.
        @param kinds: the route kinds, by key (L{txrouter.kinds.KINDS}).
        """
        self.file = file
        self.base = base
        self.kinds = kinds
        self.problems: list[Problem] = []
        # The routes read so far, by kind: (their table, their prefix).
        self._read: dict[str, list[tuple[dict[str, Route], str]]] = {}

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

    def size(self, mapping: LocatedDict, key: str, where: str, default: int) -> int:
        """
        Read an optional size in bytes: a whole number, or one with a unit
        (C{512K}, C{10M}, C{1G}; C{KiB}, C{MiB}, C{GiB} too, all powers of
        1024).
        """
        value = mapping.get(key)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            match = _SIZE.match(str(value).strip()) if isinstance(value, str) else None
            if match is None:
                self.problem(
                    mapping.line_of(key),
                    where,
                    "expected a size in bytes such as 10485760 or '10M' (K, M "
                    f"and G are powers of 1024), got {describe(value)}",
                )
                return default
            number = int(match.group(1)) * _UNITS[match.group(2).upper()[:1]]
        if number < 1:
            self.problem(mapping.line_of(key), where, f"must be >= 1, got {number}")
            return default
        return number

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

    def endpoint(self, value: Any, line: int, where: str) -> ListenAddress | None:
        """
        Check a server endpoint string: its port and its socket's folder,
        then the rest with Twisted's own parser.

        @return: what it binds, or L{None} when it is not valid.
        """
        if not isinstance(value, str) or not value:
            self.problem(
                line,
                where,
                "expected an endpoint string such as 'tcp:8080', "
                f"got {describe(value)}",
            )
            return None
        try:
            address = listen_address(value)
        except ValueError as e:
            self.problem(
                line,
                where,
                f"bad endpoint {value!r}: {e}; write '\\\\' for a backslash",
            )
            return None
        valid = self._bindable(address, line, where)
        if address.family == "systemd":
            # Twisted's parser looks the socket up: it exists only in a
            # process systemd started, not in 'txrouter check'.
            try:
                check_systemd(value)
            except ValueError as e:
                self.problem(line, where, f"bad endpoint {value!r}: {e}")
                return None
            return address if valid else None
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
            return None
        return address if valid else None

    def _bindable(self, address: ListenAddress, line: int, where: str) -> bool:
        """
        Check what Twisted's parser lets through and binding would refuse
        (or, for port 0, bind to a port nobody can know).
        """
        if address.port is not None and not 1 <= address.port <= 65535:
            self.problem(line, where, f"port must be 1-65535, got {address.port}")
            return False
        if address.family == "unix" and address.place.startswith("/"):
            folder = os.path.dirname(address.place)
            if not os.path.isdir(folder):
                self.problem(
                    line,
                    where,
                    f"the folder {folder!r} of the socket does not exist "
                    "(relative paths start at the working directory, "
                    f"{os.getcwd()!r}, as in Twisted)",
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
                self._read.setdefault(route.kind, []).append((table, prefix))
        return table

    def settle(self) -> None:
        """
        Run the checks of each kind that need all its routes at once (see
        L{txrouter.kinds.contract.RouteKind.settle}).
        """
        for kind in self.kinds.values():
            if kind.settle is not None:
                kind.settle(self, self._read.get(kind.name, []))

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
        kinds_text = ", ".join(self.kinds)
        if not isinstance(spec, LocatedDict):
            self.problem(
                origin.line,
                origin.where,
                f"expected a mapping with one of {kinds_text}, "
                f"e.g. {{static: public}}, got {describe(spec)}",
            )
            return None
        kinds = [k for k in spec if k in self.kinds]
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
        allowed = (kind, *self.kinds[kind].options)
        for key in spec:
            if key in allowed:
                continue
            owners = [k for k, other in self.kinds.items() if key in other.options]
            if owners:
                why = (
                    f"{key!r} is an option of {' and '.join(owners)} routes, not {kind}"
                )
            else:
                why = f"unknown key; a {kind} route takes: {', '.join(allowed)}"
            self.problem(spec.line_of(key), f"{origin.where}.{key}", why)
        route: Route | None = self.kinds[kind].read(self, prefix, spec, origin)
        return route

    def directory(self, spec: LocatedDict, key: str, where: str) -> Path | None:
        """
        Read a folder that must exist.
        """
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
