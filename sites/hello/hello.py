"""A dependency-free WSGI app that echoes its mount point."""

from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]


def application(
    environ: dict[str, Any], start_response: StartResponse
) -> Iterable[bytes]:
    """Say hello and report ``SCRIPT_NAME`` and ``PATH_INFO``."""
    text = (
        "hello from wsgi\n"
        f"SCRIPT_NAME={environ.get('SCRIPT_NAME', '')}\n"
        f"PATH_INFO={environ.get('PATH_INFO', '')}\n"
    )
    # PEP 3333 environ strings are latin-1 "bytes as str": encode them back
    # to get the original bytes of the URL.
    body = text.encode("latin-1")
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ],
    )
    return [body]
