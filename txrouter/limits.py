"""
L{Limits}: what the shared edge allows one client, so that one slow or
hostile client cannot hold the router's connections, memory or time.

The defaults follow nginx, HAProxy and Envoy; each says its answer:

| limit | default | answer |
| --- | --- | --- |
| C{head_timeout}: receiving a whole request head | 10 s | 408, close |
| C{body_timeout}: a pause between two reads of a body | 60 s | 408, close |
| C{send_timeout}: a client that takes no more of a response | 60 s | close |
| C{keepalive_timeout}: an idle keep-alive connection | 75 s | close |
| C{max_request_line} | 8 KiB | 414 |
| C{max_header}: one header field | 8 KiB | 431 |
| C{max_head}: request line and all header fields | 32 KiB | 431 |
| C{max_headers}: number of header fields | 100 | 431 |
| C{max_body}: a request body (per route too) | 10 MiB | 413 |
| C{max_connections}: open connections per C{listen:} entry | 10,000 | closed at once |
| C{max_streams}: concurrent streams of an HTTP/2 connection | 128 | connection closed |

A deadline counts only the time in which the router waits for the client:
not while it answers an earlier request of the connection, nor while it
holds reading because the client takes nothing of a response (then
C{send_timeout} runs). C{keepalive_timeout} closes only a connection with
no request being received or answered and no response still going out.
Each listener counts its own connections; refusals are logged with its
address. An HTTP/2 connection keeps the same limits per stream
(L{txrouter.http2}); C{max_streams} is nginx's
C{http2_max_concurrent_streams}.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KiB", "Limits", "MiB"]

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Limits:
    """
    The edge's limits (see the module's table).
    """

    head_timeout: float = 10.0
    body_timeout: float = 60.0
    send_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    max_request_line: int = 8 * KiB
    max_header: int = 8 * KiB
    max_head: int = 32 * KiB
    max_headers: int = 100
    max_body: int = 10 * MiB
    max_connections: int = 10_000
    max_streams: int = 128
