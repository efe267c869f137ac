"""
The recording WSGI application behind the raw-request corpus
(C{tests/corpus/}): it answers 200 with a JSON description of what it got,
and keeps that description too, so that a test can tell whether, and how,
a request reached it.

    >>> seen = []
    >>> app = recording_application(seen.append)     # in memory
    >>> application                                   # to a file, for twistd

C{application} appends one JSON line per request to C{seen.jsonl} beside
this module: C{tests/test_corpus_e2e.py} copies the module into a scratch
folder first, so that the file never lands in the repository. It imports
nothing but the standard library, as it runs in the router and in worker
processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["SEEN", "application", "describe", "recording_application"]

#: Where L{application} writes, one JSON line per request.
SEEN = Path(__file__).resolve().with_name("seen.jsonl")

_NOT_HEADERS = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}


def describe(environ: dict[str, Any], body: bytes) -> dict[str, Any]:
    """
    What an application learns of a request, in the form the corpus checks
    (see C{tests/corpus/cases.toml}): strings as PEP 3333 gives them (bytes
    as latin-1), header names in lower case with C{-}.
    """
    headers = {
        key[5:].lower().replace("_", "-"): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key, name in _NOT_HEADERS.items():
        if environ.get(key):
            headers[name] = environ[key]
    return {
        "route": environ.get("SCRIPT_NAME", ""),
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""),
        "host": environ.get("HTTP_HOST", ""),
        "client": environ.get("REMOTE_ADDR", ""),
        "headers": headers,
        "body": body.decode("latin-1"),
    }


def recording_application(
    keep: Callable[[dict[str, Any]], object],
) -> Callable[..., list[bytes]]:
    """
    A WSGI application that reads the whole body, gives L{describe}'s
    record to C{keep} before it answers, and answers 200 with it as JSON.
    A request is recorded even when its body cannot be read (the server
    closed it under the app): it reached the app all the same.
    """

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            body = environ["wsgi.input"].read(length) if length else b""
        except Exception as e:  # whatever the failure, the request got here
            body = f"(unreadable: {e!r})".encode()
        record = describe(environ, body)
        keep(record)
        data = json.dumps(record).encode("ascii")
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        )
        return [data]

    return app


def _append(record: dict[str, Any]) -> None:
    line = (json.dumps(record) + "\n").encode("ascii")
    # One write with O_APPEND: lines from the router and its workers never
    # interleave, and each is there before the answer leaves.
    fd = os.open(SEEN, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


application = recording_application(_append)
