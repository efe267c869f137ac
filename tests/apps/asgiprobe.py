"""
A plain ASGI 3 application for end-to-end tests (no framework): each path
proves one behaviour of the server around it. A gate is a folder named by
the query string, so the test (another process) can hold and release a
request without timing.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_GATE_LIMIT = 60.0


async def _answer(send: Send, status: int, body: bytes, kind: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", kind),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _seen(scope: dict[str, Any]) -> dict[str, Any]:
    """
    The scope as JSON can hold it, with this process's ID.
    """
    seen = {
        key: scope.get(key)
        for key in ("type", "path", "root_path", "scheme", "http_version")
    }
    seen["client"] = list(scope["client"]) if scope.get("client") else None
    seen["server"] = list(scope["server"]) if scope.get("server") else None
    seen["query_string"] = scope.get("query_string", b"").decode("latin-1")
    seen["headers"] = [
        [name.decode("latin-1"), value.decode("latin-1")]
        for name, value in scope["headers"]
    ]
    seen["pid"] = os.getpid()
    seen["frozen"] = gc.get_freeze_count()  # txrouter.heap
    seen["flavour"] = os.environ.get("TXROUTER_E2E_FLAVOUR")
    return seen


async def _gate(gate: Path, send: Send) -> None:
    (gate / "started").touch()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _GATE_LIMIT
    while not (gate / "release").exists():
        if loop.time() > deadline:
            await _answer(send, 500, b"never released", b"text/plain")
            return
        await asyncio.sleep(0.02)
    await _answer(send, 200, b"released", b"text/plain")


async def _websocket(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """
    Accept, send the scope as the first message, then echo until closed.
    """
    message = await receive()
    assert message["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps(_seen(scope))})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({**message, "type": "websocket.send"})


async def application(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """
    Route on the path after C{root_path}: C{/scope}, C{/echo}, C{/gate};
    a WebSocket gets its scope, then its messages back.
    """
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    if scope["type"] != "http":
        return  # lifespan: nothing to set up
    path = scope["path"].removeprefix(scope["root_path"])
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if path == "/scope":
        body = json.dumps(_seen(scope)).encode()
        await _answer(send, 200, body, b"application/json")
    elif path == "/echo":
        data = await _body(receive)
        answer = f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode()
        await _answer(send, 200, answer, b"text/plain")
    elif path == "/gate":
        await _gate(Path(query.get("gate", ["/nonexistent"])[0]), send)
    else:
        await _answer(send, 404, b"no such probe", b"text/plain")
