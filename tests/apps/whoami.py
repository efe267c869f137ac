"""
A WSGI application for the listener end-to-end tests: it answers, as JSON,
who the client is as the server tells it (C{REMOTE_ADDR}, the scheme) and
who the process serving it runs as (user and group IDs, process ID).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any


def application(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> list[bytes]:
    """
    Answer every request with the facts above.
    """
    facts = {
        "remote_addr": environ.get("REMOTE_ADDR", ""),
        "scheme": environ["wsgi.url_scheme"],
        "host": environ.get("HTTP_HOST", ""),
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "egid": os.getegid(),
        "pid": os.getpid(),
    }
    body = json.dumps(facts).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]
