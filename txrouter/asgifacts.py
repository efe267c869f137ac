"""
The facts of a request to an ASGI worker: the router speaks for its client
over a UNIX socket, so what the application reads from the connection
(client address, scheme, server) comes from the router's headers instead,
exactly as for a WSGI worker (L{txrouter.workerrequest}).

The router sends them with the worker's secret token as C{X-Txrouter-*}
headers (L{txrouter.forwarding.worker_headers}). L{router_facts} wraps the
application: a request that does not carry the token is refused (403; a
WebSocket is closed before it is accepted, which Daphne answers with 403),
the C{x-txrouter-*} headers are removed, and the scope gets the client's
address, scheme and C{Host}, and the route prefix as C{root_path}. Nothing
a client sends can set them: the router drops any C{X-Txrouter-*} header a
client sent, and only the router knows the token.

    >>> application = router_facts(django_asgi_app, token, "/live/")

Pure ASGI: no reactor, no server; C{lifespan} scopes pass through.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ASGIApp", "router_facts", "worker_scope"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
#: An ASGI 3 application.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_PREFIX = b"x-txrouter-"
# Twisted's own reading of a Host header (twisted.web.http), so that the
# server name is what a WSGI worker's SERVER_NAME is: an IPv6 literal
# keeps its brackets.
_HOST = re.compile(rb"^(?P<host>\[[^\]]+\]|[^:]+)(:[0-9]*)?$")
_REFUSED = b"403 Forbidden: not from this worker's router.\n"


def _number(value: bytes | None) -> int:
    return int(value) if value is not None and value.isdigit() else 0


def _server(headers: list[tuple[bytes, bytes]], port: int) -> tuple[str, int] | None:
    """
    The server as the client named it: its C{Host} without the port, and
    the port the router received the request on.
    """
    hosts = [value for name, value in headers if name.lower() == b"host"]
    match = _HOST.match(hosts[-1].strip()) if hosts else None
    if match is None:
        return None
    return match.group("host").decode("latin-1"), port


def worker_scope(scope: Scope, token: bytes, prefix: str) -> Scope | None:
    """
    The scope an application sees for an C{http} or C{websocket} C{scope}
    that Daphne made from a request of the router.

    @param token: the worker's secret; a request without it is not the
        router's.
    @param prefix: the route prefix, with its trailing slash.
    @return: a new scope, or L{None} when the request does not carry
        C{token}.
    """
    own: dict[bytes, bytes] = {}
    headers: list[tuple[bytes, bytes]] = []
    for name, value in scope.get("headers", ()):
        lower = bytes(name).lower()
        if lower.startswith(_PREFIX):
            own[lower[len(_PREFIX) :]] = bytes(value)
        else:
            headers.append((name, value))
    if not token or not hmac.compare_digest(own.get(b"token", b""), token):
        return None
    secure = own.get(b"scheme") == b"https"
    websocket = scope["type"] == "websocket"
    seen = dict(scope)
    seen["headers"] = headers
    client = own.get(b"client")
    seen["client"] = (
        (client.decode("ascii", "replace"), _number(own.get(b"client-port")))
        if client
        else None
    )
    if websocket:
        seen["scheme"] = "wss" if secure else "ws"
    else:
        seen["scheme"] = "https" if secure else "http"
        protocol = own.get(b"protocol")
        if protocol in (b"HTTP/1.0", b"HTTP/1.1"):
            # The client's own protocol; the router's connection to us
            # stays HTTP/1.1.
            seen["http_version"] = protocol[len(b"HTTP/") :].decode("ascii")
    seen["server"] = _server(headers, _number(own.get(b"server-port")))
    seen["root_path"] = prefix.rstrip("/")
    return seen


async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(_REFUSED)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _REFUSED})


def router_facts(application: ASGIApp, token: bytes, prefix: str) -> ASGIApp:
    """
    Wrap an ASGI application so that it sees each request as its client
    made it to the router (see L{worker_scope}), and only requests of the
    router that holds C{token}.
    """

    async def from_router(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await application(scope, receive, send)
            return
        seen = worker_scope(scope, token, prefix)
        if seen is None:
            await _refuse(scope, receive, send)
            return
        await application(seen, receive, send)

    return from_router
