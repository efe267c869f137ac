"""
HTTP Strict Transport Security (RFC 6797), opted into per host: the
C{Strict-Transport-Security} header the router adds to the responses it
sends over TLS for that host (never over plain HTTP, which the RFC
forbids).

    hsts: true                                      # one year
    hosts:
      example.com:
        hsts: {max_age: 63072000, include_subdomains: true, preload: true}
        routes: {...}
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from txrouter.configreader import describe
from txrouter.yamlsource import LocatedDict

if TYPE_CHECKING:
    from txrouter.configreader import ConfigReader

__all__ = ["DEFAULT_MAX_AGE", "read_hsts"]

#: One year: what browsers' preload lists ask for at least.
DEFAULT_MAX_AGE = 31536000

_KEYS = ("max_age", "include_subdomains", "preload")


def read_hsts(reader: ConfigReader, parent: LocatedDict, where: str) -> bytes | None:
    """
    Read C{parent}'s C{hsts:} (C{true}, C{false} or a mapping of
    C{max_age}, C{include_subdomains} and C{preload}).

    @return: the header's value, or L{None} for no header.
    """
    if "hsts" not in parent:
        return None
    value = parent["hsts"]
    line = parent.line_of("hsts")
    where = f"{where}.hsts" if where else "hsts"
    if value is True:
        return b"max-age=%d" % DEFAULT_MAX_AGE
    if value is False:
        return None
    if not isinstance(value, LocatedDict):
        reader.problem(
            line,
            where,
            "expected true, false, or a mapping such as {max_age: 31536000, "
            f"include_subdomains: true}}, got {describe(value)}",
        )
        return None
    reader.unknown_keys(value, where, _KEYS)
    age = int(
        reader.number(value, "max_age", f"{where}.max_age", DEFAULT_MAX_AGE, 0, True)
    )
    subdomains = reader.flag(
        value, "include_subdomains", f"{where}.include_subdomains", False
    )
    preload = reader.flag(value, "preload", f"{where}.preload", False)
    if preload and (age < DEFAULT_MAX_AGE or not subdomains):
        reader.problem(
            value.line_of("preload"),
            f"{where}.preload",
            "the preload lists take a host only with include_subdomains: true "
            f"and a max_age of at least {DEFAULT_MAX_AGE} (a year)",
        )
    header = b"max-age=%d" % age
    if subdomains:
        header += b"; includeSubDomains"
    if preload:
        header += b"; preload"
    return header
