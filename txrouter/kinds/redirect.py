"""
C{redirect:} routes: answer every request under the prefix with a
redirect, keeping the rest of the path and the query.

    /old/: {redirect: /new/, status: 301}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from txrouter.configreader import describe
from txrouter.kinds.contract import Built, RouteKind
from txrouter.redirect import Redirect
from txrouter.routespec import Origin

if TYPE_CHECKING:
    from txrouter.build import Builder
    from txrouter.configreader import ConfigReader
    from txrouter.routetable import RouteKey
    from txrouter.yamlsource import LocatedDict

__all__ = ["KIND", "RedirectRoute"]

_STATUSES = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class RedirectRoute:
    """
    Redirect the prefix, keeping the rest of the path and the query.
    """

    kind: ClassVar[str] = "redirect"
    prefix: str
    origin: Origin
    target: str
    status: int


def read(
    reader: ConfigReader, prefix: str, spec: LocatedDict, origin: Origin
) -> RedirectRoute | None:
    target = spec.get("redirect")
    status = spec.get("status")
    if status is None:  # not given, or left empty
        status = 302
    ok = True
    if (
        not isinstance(target, str)
        or not target.startswith(("/", "http://", "https://"))
        or any(c.isspace() or ord(c) < 32 for c in target)
    ):
        reader.problem(
            spec.line_of("redirect"),
            f"{origin.where}.redirect",
            "expected a path starting with '/' or an http(s):// URL, "
            f"without spaces, got {describe(target)}",
        )
        ok = False
    if status not in _STATUSES or isinstance(status, bool):
        reader.problem(
            spec.line_of("status"),
            f"{origin.where}.status",
            f"expected one of {', '.join(map(str, _STATUSES))}, got {describe(status)}",
        )
        ok = False
    if not ok:
        return None
    assert isinstance(target, str)
    return RedirectRoute(prefix, origin, target, int(status))


def build(route: RedirectRoute, key: RouteKey, builder: Builder) -> Built:
    return Built(Redirect(route.target, route.status))


KIND = RouteKind("redirect", ("status",), read, build)
