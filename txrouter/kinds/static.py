"""
C{static:} routes: a folder of files, served by the hardened
L{txrouter.staticfiles.StaticFiles}.

    /files/: {static: sites/files, cache: 3600}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from txrouter.kinds.contract import Built, RouteKind
from txrouter.routespec import Origin
from txrouter.staticfiles import StaticFiles

if TYPE_CHECKING:
    from txrouter.build import Builder
    from txrouter.configreader import ConfigReader
    from txrouter.routetable import RouteKey
    from txrouter.yamlsource import LocatedDict

__all__ = ["KIND", "StaticRoute"]


@dataclass(frozen=True)
class StaticRoute:
    """
    A directory of files; C{cache} is the C{Cache-Control} max-age.
    """

    kind: ClassVar[str] = "static"
    prefix: str
    origin: Origin
    root: Path
    cache: int | None


def read(
    reader: ConfigReader, prefix: str, spec: LocatedDict, origin: Origin
) -> StaticRoute | None:
    root = reader.directory(spec, "static", f"{origin.where}.static")
    cache = None
    if spec.get("cache") is not None:  # left empty: not given
        cache = int(reader.number(spec, "cache", f"{origin.where}.cache", 0, 0, True))
    if root is None:
        return None
    return StaticRoute(prefix, origin, root, cache)


def build(route: StaticRoute, key: RouteKey, builder: Builder) -> Built:
    return Built(StaticFiles.for_root(route.root, route.cache))


KIND = RouteKind("static", ("cache",), read, build)
