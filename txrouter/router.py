"""
The root resource: pick a route by host name, then by longest URL prefix.

    >>> router = Router({"": {"/": blog, "/wiki/": wiki}, "*.example.org": ...})

The chosen route's resource gets the request with C{prepath} set to the
prefix and C{postpath} to the rest, so a WSGI application sees
C{SCRIPT_NAME=/wiki} and C{PATH_INFO=/page}, and Django's C{reverse()}
includes the prefix. A bare prefix (C{/wiki}) is redirected to C{/wiki/},
unless its resource C{answers_bare_prefix} (a health check: a load
balancer takes a redirect for a healthy answer).
The route is noted on the request (C{request.route}, a
L{txrouter.accesslog.RouteTag}) for the access log, with the route's
counters (L{txrouter.routestats.RouteStats}), which the site adds the
request to when it ends.

A reload builds a new L{Router} and assigns it to the site in one step: a
request sees one table or the other, never a mix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_to_bytes as unquote

from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource

from txrouter.accesslog import RouteTag
from txrouter.redirect import AddSlash
from txrouter.routestats import RouteStats

__all__ = ["Router"]

_NO_ROUTE = notFound("No Such Resource", "No route matches this URL.")
_ADD_SLASH = AddSlash()

# Each prefix's resource, and the tag it puts on the requests it takes.
_Table = dict[tuple[bytes, ...], tuple[IResource, RouteTag]]


def _segments(prefix: str) -> tuple[bytes, ...]:
    return tuple(s.encode("utf-8") for s in prefix.split("/") if s)


class Router(Resource):
    """
    Routes each request to a resource by host, then longest prefix.

    Host matching ignores case and port; an exact name beats the longest
    matching C{*.} wildcard, which beats the default table (key C{""}).
    """

    def __init__(
        self,
        tables: Mapping[str, Mapping[str, IResource]],
        max_body: Mapping[str, Mapping[str, int]] | None = None,
        served: Mapping[str, Mapping[str, str]] | None = None,
        stats: Mapping[str, Mapping[str, RouteStats]] | None = None,
        hsts: Mapping[str, bytes] | None = None,
    ) -> None:
        """
        @param tables: for each host (C{""} for the default), a mapping of
            prefix (C{/}-delimited, as in the routes file) to resource.
        @param max_body: for each host, the routes whose C{max_body} is
            their own, by prefix.
        @param served: for each host, who serves each prefix's requests
            (see L{RouteTag.served}).
        @param stats: for each host, the counters of the prefixes that
            keep those of an earlier router; the others get new ones.
        @param hsts: for each host that asks for it, the
            C{Strict-Transport-Security} value of its responses over TLS.
        """
        super().__init__()
        self._hsts = dict(hsts or {})
        self._max_body = {
            (host, _segments(prefix)): size
            for host, sizes in (max_body or {}).items()
            for prefix, size in sizes.items()
        }
        self._exact: dict[bytes, _Table] = {}
        wildcards: list[tuple[bytes, _Table]] = []
        self._default: _Table = {}
        served = served or {}
        stats = stats or {}
        #: Each route's counters, by host and prefix, in the order given.
        self.stats: dict[tuple[str, str], RouteStats] = {}
        for host, routes in tables.items():
            how = served.get(host, {})
            kept = stats.get(host, {})
            table = {}
            for p, r in routes.items():
                counters = self.stats[host, p] = kept.get(p) or RouteStats()
                table[_segments(p)] = (r, RouteTag(host, p, how.get(p), counters))
            if host == "":
                self._default = table
            elif host.startswith("*."):
                wildcards.append((host[1:].encode("ascii"), table))
            else:
                self._exact[host.encode("ascii")] = table
        # The longest suffix is the most specific wildcard.
        self._wildcards = sorted(wildcards, key=lambda w: -len(w[0]))
        # Without host tables, the Host header need not even be parsed.
        self._by_host = bool(self._exact or self._wildcards)
        self._deepest = max(
            (len(k) for t in [self._default, *self._exact.values()] for k in t),
            default=0,
        )
        self._deepest = max(
            [self._deepest, *(len(k) for _, t in self._wildcards for k in t)]
        )

    @property
    def has_own_max_body(self) -> bool:
        """
        Whether any route has a C{max_body} of its own.
        """
        return bool(self._max_body)

    def max_body_for(self, host: bytes, path: bytes) -> int | None:
        """
        The C{max_body} of the route a request for C{path} (raw, as sent)
        on C{host} (port included) goes to, when that route has its own.
        """
        if not self._max_body:
            return None
        name = host.rpartition(b":")[0] if host.rfind(b"]") < host.rfind(b":") else host
        key, table = self._named_table(name)
        segments = [unquote(s) for s in path.partition(b"?")[0].split(b"/")[1:]]
        depth = self._longest(table, segments)
        if depth is None:
            return None
        return self._max_body.get((key, tuple(segments[:depth])))

    def _named_table(self, host: bytes) -> tuple[str, _Table]:
        """
        The route table for a C{Host} name (port already removed), and the
        key it has in the routes file (C{""} for the default host).
        """
        host = host.lower().rstrip(b".")
        if host in self._exact:
            return host.decode("ascii"), self._exact[host]
        for suffix, table in self._wildcards:
            if host.endswith(suffix) and len(host) > len(suffix):
                return "*" + suffix.decode("ascii"), table
        return "", self._default

    def table_for(self, host: bytes) -> _Table:
        """
        @return: the route table for a C{Host} name (port already removed).
        """
        return self._named_table(host)[1]

    def candidates(self, host: bytes, segments: list[bytes]) -> tuple[str, list[int]]:
        """
        What L{getChildWithDefault} weighs for a request (for C{txrouter
        explain}): the key of the table that serves C{host} (port already
        removed; C{""} is the default host), and the length in segments of
        each prefix of that table that matches C{segments}, longest (the
        winner) first.
        """
        key, table = self._named_table(host) if self._by_host else ("", self._default)
        found: list[int] = []
        depth = self._longest(table, segments)
        while depth is not None:
            found.append(depth)
            depth = self._longest(table, segments[: depth - 1]) if depth else None
        return key, found

    def _longest(self, table: _Table, segments: list[bytes]) -> int | None:
        """
        How many of C{segments} the longest matching prefix has, or L{None}.
        """
        for depth in range(min(len(segments), self._deepest), -1, -1):
            if tuple(segments[:depth]) in table:
                return depth
        return None

    def getChildWithDefault(self, name: bytes, request: Any) -> IResource:
        # Twisted has moved the first segment to prepath; take the whole
        # path back and split it at the longest matching prefix instead.
        segments = request.prepath + request.postpath
        if self._by_host:
            table = self.table_for(request.getRequestHostname())
        else:
            table = self._default
        depth = self._longest(table, segments)
        if depth is None:
            return _NO_ROUTE
        resource, request.route = table[tuple(segments[:depth])]
        if self._hsts:
            header = self._hsts.get(request.route.host)
            if header is not None and request.isSecure():
                request.responseHeaders.setRawHeaders(
                    b"strict-transport-security", [header]
                )
        request.prepath = segments[:depth]
        request.postpath = segments[depth:]
        if not request.postpath and not getattr(resource, "answers_bare_prefix", False):
            request.route = request.route.redirected()
            return _ADD_SLASH
        return resource

    def render(self, request: Any) -> bytes:
        # Only reached when the path has no segment at all.
        return _NO_ROUTE.render(request)  # type: ignore[no-any-return]
