"""
A WSGI application for end-to-end tests: each path proves one behaviour of
the server around it. Gates are files in a folder named by the query string,
so the test (another process) can hold and release a request without timing.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

_BARRIER_PARTIES = 12
_barrier = threading.Barrier(_BARRIER_PARTIES, timeout=30)
_GATE_LIMIT = 60.0


def _wait_for(path: Path) -> bool:
    deadline = time.monotonic() + _GATE_LIMIT
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _text(start_response: Callable[..., Any], status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(
        status,
        [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))],
    )
    return [data]


def _gate(gate: Path, start_response: Callable[..., Any]) -> list[bytes]:
    (gate / "started").touch()
    if not _wait_for(gate / "release"):
        return _text(start_response, "500 Internal Server Error", "never released")
    return _text(start_response, "200 OK", "released")


def _stream(gate: Path, start_response: Callable[..., Any]) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first chunk\n"
    _wait_for(gate / "release")
    yield b"second chunk\n"


def _barrier_wait(start_response: Callable[..., Any]) -> list[bytes]:
    try:
        index = _barrier.wait()
    except threading.BrokenBarrierError:
        return _text(start_response, "500 Internal Server Error", "barrier broken")
    return _text(start_response, "200 OK", f"passed {index}")


def application(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> Iterator[bytes] | list[bytes]:
    """
    Route on C{PATH_INFO}: C{/environ}, C{/echo}, C{/gate}, C{/stream},
    C{/barrier}, C{/boom}.
    """
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    gate = Path(query.get("gate", ["/nonexistent"])[0])
    if path == "/environ":
        keys = ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REMOTE_ADDR", "HTTP_HOST")
        lines = [f"{k}={environ.get(k, '')}" for k in keys]
        lines.append(f"wsgi.url_scheme={environ['wsgi.url_scheme']}")
        return _text(start_response, "200 OK", "\n".join(lines) + "\n")
    if path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        digest = hashlib.sha256(body).hexdigest()
        return _text(start_response, "200 OK", f"{len(body)} {digest}")
    if path == "/gate":
        return _gate(gate, start_response)
    if path == "/stream":
        return _stream(gate, start_response)
    if path == "/barrier":
        return _barrier_wait(start_response)
    if path == "/boom":
        raise RuntimeError("boom, on purpose")
    return _text(start_response, "404 Not Found", "no such probe")
