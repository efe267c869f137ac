"""
What the router would do with one request, told without serving it: the
C{txrouter explain} command.

L{explain} sends a made-up request through the code that serves real ones
(the edge's checks in L{RouterRequest}, Twisted's C{Request} and C{Site},
the L{Router}), to a placeholder standing for each route, and then asks the
functions that route's kind serves with what its target would see: the
WSGI environ (L{wsgi_environ}, and for workers the worker's own request
class and router), the ASGI scope of an ASGI worker (L{worker_scope}), the
request a proxy sends (L{outgoing_path},
L{outgoing_headers}), the file a static route reads (L{child_path}), the
answer of a redirect (L{Redirect} itself). Nothing is started: no
application is imported, and no thread, process or connection is made.

    >>> explanation = explain(load_config(Path("routes.yaml")), "/wiki/Main?x=1")
    >>> print(explanation_text(explanation))
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from io import BytesIO
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web import static
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

from txrouter.asgifacts import worker_scope
from txrouter.config import Config
from txrouter.edge import BadRequest, request_target
from txrouter.endpointstrings import listen_address, split_endpoint
from txrouter.errorpage import error_page
from txrouter.forwarding import TrustedProxies, UnsafePath
from txrouter.kinds import Route
from txrouter.kinds.application import worker_settings
from txrouter.kinds.proxy import proxy_settings
from txrouter.proxy import forwarding_for, outgoing_headers, outgoing_path
from txrouter.redirect import Redirect
from txrouter.router import Router
from txrouter.site import RouterRequest
from txrouter.staticfiles import Refused, StaticFiles, child_path
from txrouter.upstream import upstream_address
from txrouter.workerrequest import WorkerRequest, worker_application
from txrouter.wsgi import wsgi_environ

__all__ = ["CLIENT", "explain", "explanation_text"]

#: The client of the made-up request: an address reserved for examples
#: (RFC 5737).
CLIENT = IPv4Address("TCP", "192.0.2.10", 50000)

# What a worker's secret is shown as; the made-up worker checks this one.
_TOKEN = b"(the workers' secret)"

# An HTTP method name (RFC 9110's token).
_TOKEN_CHARS = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

# The environ entries a person is shown (JSON shows every plain one).
_SHOWN = (
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "SERVER_NAME",
    "SERVER_PORT",
    "REMOTE_ADDR",
    "wsgi.url_scheme",
    "wsgi.multiprocess",
)


class _Target(Resource):
    """
    A route's place in the router being explained: routing stops here.
    """

    isLeaf = True

    def __init__(self, route: Route) -> None:
        super().__init__()
        self.route = route


class _Connection:
    """
    What a request asks of its connection, for a request that has none.
    """

    transport = None
    persistent = True

    def __init__(self, site: Site, server: IPv4Address) -> None:
        self.site = site
        self.server = server

    def getPeer(self) -> IPv4Address:
        return CLIENT

    def getHost(self) -> IPv4Address:
        return self.server


class _Probe(RouterRequest):
    """
    A request that goes the way the router sends it, and keeps what it is
    answered instead of sending it.

    @ivar target: the route it reached, if any.
    @ivar body: what was written as the answer.
    """

    target: _Target | None = None
    failure: Failure | None = None

    def __init__(self, channel: Any) -> None:
        super().__init__(channel)
        self.content = BytesIO()
        self.body: list[bytes] = []

    def render(self, resrc: IResource) -> None:
        if isinstance(resrc, _Target):
            self.target = resrc
        else:
            super().render(resrc)

    def write(self, data: bytes) -> None:
        self.body.append(data)

    def finish(self) -> None:
        pass

    def processingFailed(self, reason: Failure) -> None:
        self.failure = reason


class _WorkerProbe(_Probe, WorkerRequest):
    """
    A L{_Probe} as a worker process receives it from the router.
    """

    token = _TOKEN


def _send(
    probe_class: type[_Probe],
    router: Router,
    server: IPv4Address,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    secure: bool = False,
) -> _Probe:
    """
    Make up a request and let C{router} route it as a site would.
    """
    probe = probe_class(_Connection(Site(router, reactor=Clock()), server))
    if secure:
        probe.setHost(server.host.encode("ascii"), server.port, ssl=True)
    for name, value in headers:
        if name.lower() == b"host":
            probe.requestHeaders.setRawHeaders(b"host", [value])
        else:
            probe.requestHeaders.addRawHeader(name, value)
    probe.requestReceived(method, target, b"HTTP/1.1")
    if probe.failure is not None:
        probe.failure.raiseException()
    return probe


def _answer(probe: _Probe, by: str) -> dict[str, Any]:
    """
    The answer a probe was given.
    """
    answer: dict[str, Any] = {
        "by": by,
        "status": probe.code,
        "reason": probe.code_message.decode("latin-1"),
    }
    location = probe.responseHeaders.getRawHeaders(b"location")
    if location:
        answer["location"] = location[-1].decode("latin-1")
    if probe.code == 400:
        # The edge's refusal says why: "400 Bad Request: why.".
        text = b"".join(probe.body).decode("utf-8", "replace").strip()
        answer["message"] = text.removeprefix(f"400 {answer['reason']}: ").rstrip(".")
    return answer


@dataclass(frozen=True)
class _Request:
    """
    The made-up request: its target and C{Host}, where that came from, its
    scheme, and the address it arrives at (the first C{listen} entry).
    """

    target: bytes
    host: str
    host_from: str
    secure: bool
    server: IPv4Address


def _request(config: Config, url: str, host: str | None, verb: bytes) -> _Request:
    first = config.listen[0]
    address = listen_address(first)
    secure = split_endpoint(first)[0][0].lower() in ("ssl", "tls")
    if address.family == "tcp" and address.port is not None:
        server = IPv4Address("TCP", address.place, address.port)
        name = "localhost" if address.place in ("0.0.0.0", "::") else address.place
        name = f"[{name}]" if ":" in name else name
        if address.port != (443 if secure else 80):
            name += f":{address.port}"
    else:
        server, name = IPv4Address("TCP", "127.0.0.1", 80), "localhost"
    # Escaped as a client would: spaces, and anything outside ASCII.
    target = quote(url, safe="!#$%&'()*+,/:;=?@[]~").encode("ascii")
    host_from = "listen[0]"
    if not url.startswith("/"):
        try:
            origin_form, authority = request_target(verb, target)
        except BadRequest:
            authority = None  # the edge will refuse it, and say why
        if authority is not None:
            secure = url[:8].lower().startswith("https://")
            name, host_from = authority.decode("ascii"), "the URL"
            if host is not None:
                target = origin_form
    if host is not None:
        name, host_from = host, "--host"
    return _Request(target, name, host_from, secure, server)


def explain(
    config: Config, url: str, host: str | None = None, method: str = "GET"
) -> dict[str, Any]:
    """
    What the router would do with a request for C{url}.

    @param url: a path with its query (C{/blog/x?y=1}) or an absolute URL
        (C{https://shop.example.com/}), whose host is the C{Host} unless
        C{host} is given. Characters a client would escape are escaped.
    @param host: the C{Host} header; by default the URL's, else the
        address of the first C{listen} entry.
    @param method: the request method, in any case.
    @return: plain data (see L{explanation_text}); C{matched} is false when
        no route takes the request (the router answers 404 or 400 itself).
    @raise ValueError: C{method} is not an HTTP method name.
    """
    if not _TOKEN_CHARS.fullmatch(method):
        raise ValueError(f"not an HTTP method: {method!r}")
    verb = method.upper().encode("ascii")
    request = _request(config, url, host, verb)
    router = Router(
        {
            name: {prefix: _Target(route) for prefix, route in table.items()}
            for name, table in config.tables.items()
        }
    )
    host_header = [(b"host", request.host.encode("utf-8"))]
    probe = _send(
        _Probe,
        router,
        request.server,
        verb,
        request.target,
        host_header,
        request.secure,
    )
    result: dict[str, Any] = {
        "request": {
            "method": verb.decode("ascii"),
            "target": request.target.decode("ascii"),
            "host": request.host,
            "host_from": request.host_from,
            "scheme": "https" if request.secure else "http",
            "client": CLIENT.host,
        },
        "matched": False,
    }
    if probe.postpath is None or probe.path == b"*":
        # Refused at the edge, or "OPTIONS *": answered before any routing.
        result["answer"] = _answer(probe, "router")
        return result
    result.update(_weighed(config, router, probe))
    if probe.target is None:
        # No prefix matches (404), or one without its slash (301).
        result["answer"] = _answer(probe, "router")
        result["matched"] = any(p["matches"] for p in result["prefixes"])
        return result
    route = probe.target.route
    result["matched"] = True
    result["route"] = {
        "host": result["host"]["table"],
        "prefix": route.prefix,
        "kind": route.kind,
        "origin": str(route.origin),
        "summary": _summary(route),
    }
    trusted = TrustedProxies(config.trusted_proxies)
    result.update(_KINDS.get(route.kind, _other)(config, route, probe, trusted))
    return result


def _weighed(config: Config, router: Router, probe: _Probe) -> dict[str, Any]:
    """
    The host table the router chose for a routed probe, and the prefixes
    of that table: those that match, and the one that wins.
    """
    segments = [*(probe.prepath or []), *(probe.postpath or [])]
    hostname = probe.getRequestHostname()
    key, depths = router.candidates(hostname, segments)
    matching = [
        "/" + "".join(s.decode("utf-8") + "/" for s in segments[:depth])
        for depth in depths
    ]
    return {
        "host": {
            "name": hostname.decode("latin-1"),
            "table": key,
            "match": "default" if not key else "wildcard" if key[0] == "*" else "exact",
            "host_tables": sorted(name for name in config.tables if name),
        },
        "prefixes": [
            {
                "prefix": prefix,
                "matches": prefix in matching,
                "wins": matching[:1] == [prefix],
            }
            for prefix in config.tables.get(key, {})
        ],
    }


def _summary(route: Any) -> str:
    kind: str = route.kind
    if kind == "django":
        return f"django {route.project} (settings {route.settings})"
    if kind in ("wsgi", "asgi"):
        path = f" (path {route.path})" if route.path else ""
        return f"{kind} {route.app}{path}"
    if kind == "static":
        cache = f" (cache {route.cache})" if route.cache is not None else ""
        return f"static {route.root}{cache}"
    if kind == "proxy":
        return "proxy " + ", ".join(route.upstreams)
    if kind == "redirect":
        return f"redirect {route.target} (status {route.status})"
    return kind


def _plain(environ: dict[str, Any]) -> dict[str, Any]:
    return {
        name: value
        for name, value in sorted(environ.items())
        if isinstance(value, (str, bool, int))
    }


def _application(
    config: Config, route: Any, probe: _Probe, trusted: TrustedProxies
) -> dict[str, Any]:
    """
    A C{django:} or C{wsgi:} route: where it runs, and its environ.
    """
    note = _django_note(route)
    if not route.workers:
        runs = {"in": "router", "threads": asdict(config.threads)}
        return {**note, "runs": runs, "environ": _plain(wsgi_environ(probe))}
    runs = {"in": "workers", "workers": route.workers, "threads": asdict(route.threads)}
    to_worker = _to_worker(route, probe, trusted)
    if to_worker is None:
        return {**note, "runs": runs, "answer": _unsafe(probe)}
    path, headers, sent = to_worker
    worker = Router({"": {route.prefix: _Target(route)}})
    server = IPv4Address("TCP", "127.0.0.1", 0)
    seen = _send(_WorkerProbe, worker, server, probe.method, path, headers)
    if seen.target is None:
        return {**note, "runs": runs, "sent": sent, "answer": _answer(seen, "worker")}
    application = worker_application(lambda environ, start: environ, route.workers > 1)
    environ = application(wsgi_environ(seen), None)
    return {**note, "runs": runs, "sent": sent, "environ": _plain(environ)}


def _django_note(route: Any) -> dict[str, Any]:
    """
    What explain cannot tell of a Django project: which paths are its
    static and media files, read from settings that explain does not
    import.
    """
    if route.kind == "django" or getattr(route, "settings", None):
        return {
            "note": "the router itself serves the project's STATIC_URL and "
            "MEDIA_URL from STATIC_ROOT and MEDIA_ROOT; explain reads no "
            "settings, so it shows paths under them going to the project"
        }
    return {}


def _to_worker(
    route: Any, probe: _Probe, trusted: TrustedProxies
) -> tuple[bytes, list[tuple[bytes, bytes]], dict[str, Any]] | None:
    """
    The request the proxy engine sends one of a route's workers: its path
    and headers, and both as shown; L{None} for a path it refuses.
    """
    settings = worker_settings(route, trusted, _TOKEN)
    try:
        # A worker's base path is its route's prefix (txrouter.workers).
        path = route.prefix.encode("utf-8") + outgoing_path(probe)
    except UnsafePath:
        return None
    headers = outgoing_headers(probe, settings, None, b"localhost")
    sent = {
        "request_line": f"{probe.method.decode()} {path.decode('latin-1')} HTTP/1.1",
        "headers": _headers(headers),
    }
    return path, headers, sent


def _asgi(
    config: Config, route: Any, probe: _Probe, trusted: TrustedProxies
) -> dict[str, Any]:
    """
    An C{asgi:} route: its workers, and the scope its application gets.
    """
    note = _django_note(route)
    runs = {"in": "workers", "workers": route.workers, "server": "daphne"}
    to_worker = _to_worker(route, probe, trusted)
    if to_worker is None:
        return {**note, "runs": runs, "answer": _unsafe(probe)}
    path, headers, sent = to_worker
    target, _, query = path.partition(b"?")
    # The scope as Daphne makes it of the request (a UNIX socket has no
    # peer address), then as the application sees it.
    made = {
        "type": "http",
        "http_version": "1.1",
        "method": probe.method.decode("ascii"),
        "path": unquote(target.decode("ascii")),
        "raw_path": target,
        "root_path": route.prefix.rstrip("/"),
        "scheme": "http",
        "query_string": query,
        "headers": [(n.lower(), v) for n, v in headers if b"_" not in n],
        "client": None,
        "server": None,
    }
    seen = worker_scope(made, _TOKEN, route.prefix)
    assert seen is not None  # it carries the token it was sent with
    scope = {key: _plain_value(value) for key, value in seen.items()}
    return {**note, "runs": runs, "sent": sent, "scope": scope}


def _plain_value(value: Any) -> Any:
    """
    A scope's value as plain data: text for bytes, lists for tuples.
    """
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_plain_value(item) for item in value]
    return value


def _unsafe(probe: _Probe) -> dict[str, Any]:
    """
    The proxy engine's answer to a path it will not send (L{UnsafePath}).
    """
    error_page(probe, 400)
    answer = _answer(probe, "route")
    answer["message"] += (
        ": a segment hides a '/' next to a dot-segment (..%2F), which the "
        "upstream could follow out of its base path"
    )
    return answer


def _headers(pairs: list[tuple[bytes, bytes]]) -> list[list[str]]:
    return [[name.decode("latin-1"), value.decode("latin-1")] for name, value in pairs]


def _proxy(
    config: Config, route: Any, probe: _Probe, trusted: TrustedProxies
) -> dict[str, Any]:
    """
    A C{proxy:} route: the request each of its upstreams would get.
    """
    settings = proxy_settings(route, trusted)
    forwarding = forwarding_for(probe, settings)
    try:
        path = outgoing_path(probe)
    except UnsafePath:
        return {"answer": _unsafe(probe)}
    upstreams = []
    for url in route.upstreams:
        host, base = upstream_address(url)
        where = (base + path).decode("latin-1")
        upstream: dict[str, Any] = {"upstream": url}
        if url.startswith("unix:"):
            upstream["socket"] = url[len("unix:") :]
            upstream["url"] = f"http://{host.decode()}{where}"
        else:
            upstream["url"] = f"{urlsplit(url).scheme}://{host.decode()}{where}"
        upstream["request_line"] = f"{probe.method.decode()} {where} HTTP/1.1"
        headers = outgoing_headers(probe, settings, forwarding, host)
        upstream["headers"] = _headers(headers)
        upstreams.append(upstream)
    return {"upstreams": upstreams}


def _static(
    config: Config, route: Any, probe: _Probe, trusted: TrustedProxies
) -> dict[str, Any]:
    """
    A C{static:} route: the file it reads, or why it refuses the path.
    """
    files = StaticFiles.for_root(route.root, route.cache)
    path = files.path
    for segment in probe.postpath or []:
        found = child_path(files.root, path, segment, os.path.isdir(path))
        if isinstance(found, Refused):
            refused = {"status": found.status, "reason": found.reason}
            return {"root": str(route.root), "refused": refused}
        path = found
    resource = files.createSimilarFile(path)
    if resource.isdir() or probe.method not in (b"GET", b"HEAD"):
        # A folder redirects to itself with a slash; another method is 405.
        probe.render(resource)
        return {"root": str(route.root), "answer": _answer(probe, "route")}
    content_type, _ = static.getTypeAndEncoding(
        os.path.basename(path),
        files.contentTypes,
        files.contentEncodings,
        files.defaultType,
    )
    file: dict[str, Any] = {
        "path": path,
        "size": os.path.getsize(path),
        "content_type": content_type,
    }
    if route.cache is not None:
        file["cache_control"] = f"max-age={route.cache}"
    return {"root": str(route.root), "file": file}


def _redirect(
    config: Config, route: Any, probe: _Probe, trusted: TrustedProxies
) -> dict[str, Any]:
    """
    A C{redirect:} route: its answer.
    """
    probe.render(Redirect(route.target, route.status))
    return {"answer": _answer(probe, "route")}


def _other(
    config: Config, route: Any, probe: _Probe, trusted: TrustedProxies
) -> dict[str, Any]:
    """
    A kind that explain knows nothing more of.
    """
    return {}


_KINDS = {
    "django": _application,
    "wsgi": _application,
    "asgi": _asgi,
    "static": _static,
    "proxy": _proxy,
    "redirect": _redirect,
}


def explanation_text(explanation: dict[str, Any]) -> str:
    """
    An explanation (L{explain}) as a person reads it.
    """
    lines: list[str] = []

    def say(label: str, *values: str) -> None:
        for i, value in enumerate(values):
            head = f"{label}:" if label and i == 0 else ""
            lines.append(f"{head:<10}{value}".rstrip())

    request = explanation["request"]
    say("request", f"{request['method']} {request['target']}")
    say(
        "",
        f"Host: {request['host']} (from {request['host_from']}), "
        f"{request['scheme']}, from {request['client']} (an example client)",
    )
    host = explanation.get("host")
    if host is not None:
        say("host", _host_text(host))
        prefixes = explanation["prefixes"]
        width = max((len(p["prefix"]) for p in prefixes), default=0)
        say(
            "prefixes",
            *(
                f"{p['prefix']:<{width}}  "
                + ("matches, the longest: it wins" if p["wins"] else "matches")
                if p["matches"]
                else f"{p['prefix']:<{width}}  -"
                for p in prefixes
            ),
        )
        if not prefixes:
            say("prefixes", "(this table has none)")
    route = explanation.get("route")
    if route is not None:
        say("route", f"{route['origin']}: {route['summary']}")
    runs = explanation.get("runs")
    if runs is not None and "server" in runs:
        count = runs["workers"]
        processes = "process" if count == 1 else "processes"
        say(
            "runs",
            f"in {count} worker {processes} of its own, served by Daphne, "
            "reached through the proxy engine",
        )
    elif runs is not None:
        threads = f"threads {runs['threads']['min']}-{runs['threads']['max']}"
        if runs["in"] == "router":
            say("runs", f"in the router process, on the shared pool ({threads})")
        else:
            count = runs["workers"]
            processes = "process" if count == 1 else "processes"
            say(
                "runs",
                f"in {count} worker {processes} of its own ({threads} each), "
                "reached through the proxy engine",
            )
    sent = explanation.get("sent")
    if sent is not None:
        say(
            "sent",
            f"{sent['request_line']}  (to a worker)",
            *(f"{name}: {value}" for name, value in sent["headers"]),
        )
    environ = explanation.get("environ")
    if environ is not None:
        shown = [name for name in _SHOWN if name in environ]
        shown += [name for name in environ if name.startswith("HTTP_")]
        width = max(map(len, shown))
        say("environ", *(f"{name:<{width}}  {environ[name]}" for name in shown))
    scope = explanation.get("scope")
    if scope is not None:
        shown = ["type", "method", "path", "root_path", "query_string"]
        shown += ["scheme", "http_version", "client", "server"]
        width = max(map(len, shown))
        say(
            "scope",
            *(f"{key:<{width}}  {_scope_text(scope[key])}" for key in shown),
            *(f"{name}: {value}" for name, value in scope["headers"]),
        )
    for upstream in explanation.get("upstreams", []):
        socket = upstream.get("socket")
        say(
            "upstream",
            upstream["url"] + (f"  (over the socket {socket})" if socket else ""),
            upstream["request_line"],
            *(f"{name}: {value}" for name, value in upstream["headers"]),
        )
    if len(explanation.get("upstreams", [])) > 1:
        say("", "(each request goes to the least busy upstream that is up)")
    file = explanation.get("file")
    if file is not None:
        details = f"{file['size']} bytes, {file['content_type']}"
        if "cache_control" in file:
            details += f", Cache-Control: {file['cache_control']}"
        say("file", f"{file['path']} ({details})")
    refused = explanation.get("refused")
    if refused is not None:
        say("refused", f"{refused['status']}: {refused['reason']}")
    answer = explanation.get("answer")
    if answer is not None:
        say("answer", _answer_text(explanation, answer))
    if "note" in explanation:
        say("note", explanation["note"])
    return "\n".join(lines)


def _scope_text(value: Any) -> str:
    """
    A scope's value as a person reads it: C{client} and C{server} as
    C{host:port}.
    """
    if isinstance(value, list):
        return ":".join(map(str, value))
    return str(value)


def _host_text(host: dict[str, Any]) -> str:
    name, table = host["name"], host["table"]
    if host["match"] == "exact":
        return f"{name}: its own table, hosts[{table!r}]"
    if host["match"] == "wildcard":
        return f"{name}: the wildcard table hosts[{table!r}]"
    if host["host_tables"]:
        tables = ", ".join(host["host_tables"])
        return f"{name}: no host table matches ({tables}): the default table"
    return f"{name}: the default table (the file has no host tables)"


def _answer_text(explanation: dict[str, Any], answer: dict[str, Any]) -> str:
    text = f"{answer['status']} {answer['reason']}"
    if "location" in answer:
        text += f", Location: {answer['location']}"
    if "message" in answer:
        text += f" ({answer['message']})"
    if answer["by"] != "router":
        return text
    if "host" not in explanation:
        if explanation["request"]["target"] == "*":
            return f"{text}: 'OPTIONS *' asks about the server, not a route"
        return f"{text}: refused before routing"
    if explanation["matched"]:
        return f"{text}: a prefix without its trailing slash, redirected by the router"
    return f"{text}: no route matches this URL"
