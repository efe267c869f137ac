"""The upstreams of ``bench/soak.py``: two small HTTP/1.1 servers in one
asyncio process, a healthy one and a faulted one that the soak switches
between behaviours by lines on stdin.

Usage (``soak.py`` starts it; it needs nothing but the standard library)::

    python bench/soak_upstream.py

It binds two free ports on 127.0.0.1 and prints ``ready HEALTHY FAULTED``.
Then each line read on stdin sets the faulted server's mode, and is
answered with ``ok MODE`` once the mode is in force:

  - ``healthy``: answer as the healthy server does;
  - ``stall-head``: read each request and never answer it;
  - ``stall-body``: send the head and 1,000 bytes of a 100,000-byte body,
    then nothing more;
  - ``refuse``: close the listening socket and every open connection
    (connections are refused, as from a server that is down); the next
    mode listens again on the same port.

A stalled connection is closed when the mode changes, or when its peer
closes it. Both servers answer by path (anything before the last segment
is ignored, so ``/v1/echo`` is ``echo``):

  - ``echo``: the request body's length and SHA-256, as JSON;
  - ``big?n=N``: ``N`` bytes with a ``Content-Length``;
  - ``chunked?n=N``: ``N`` bytes in 4 KiB chunks;
  - ``slow?s=S``: waits ``S`` seconds (at most 30), then 200;
  - anything else: the 100 bytes of L{HELLO}.

EOF on stdin stops the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sys
from urllib.parse import parse_qs, urlsplit

__all__ = ["HELLO", "MODES", "big_body"]

#: What both servers answer to a path they have no special answer for.
HELLO = b"hello from the soak upstream".ljust(99, b".") + b"\n"

MODES = ("healthy", "stall-head", "stall-body", "refuse")

_LONGEST_SLEEP = 30.0
_STALLED_LENGTH = 100_000
_STALLED_SENT = 1_000
_PIECE = 65536


def big_body(n: int) -> bytes:
    """
    C{n} bytes that a shifted or truncated copy does not match.
    """
    pattern = bytes(range(251))  # a prime period
    return (pattern * (n // len(pattern) + 1))[:n]


class _Server:
    """
    One listening server and its open connections.
    """

    def __init__(self, name: str, faulted: bool) -> None:
        self.name = name
        self.faulted = faulted
        self.mode = "healthy"
        self.port = 0
        self.listener: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        # Set, and replaced by a fresh one, at each change of mode.
        self.changed = asyncio.Event()

    async def listen(self) -> None:
        self.listener = await asyncio.start_server(
            self.serve, "127.0.0.1", self.port, reuse_address=True, backlog=256
        )
        self.port = self.listener.sockets[0].getsockname()[1]

    async def set_mode(self, mode: str) -> None:
        previous, self.mode = self.mode, mode
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()
        if mode == "refuse" and self.listener is not None:
            self.listener.close()
            self.listener = None
            for writer in list(self.writers):
                writer.transport.abort()
        elif previous == "refuse" and self.listener is None:
            await self.listen()

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.writers.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        except ValueError:
            pass  # not HTTP as the router sends it: drop the connection
        finally:
            self.writers.discard(writer)
            writer.transport.abort()

    async def _one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """
        Read and answer one request; return whether to read another.
        """
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ")
        headers: dict[str, str] = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        keep_alive = (
            version == "HTTP/1.1"
            and "close" not in headers.get("connection", "").lower()
        )
        if self.faulted and self.mode == "stall-head":
            await self._stall(reader)
            return False
        if self.faulted and self.mode == "stall-body":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n"
                % _STALLED_LENGTH
                + big_body(_STALLED_SENT)
            )
            await writer.drain()
            await self._stall(reader)
            return False
        await _answer(method, target, body, writer, keep_alive)
        return keep_alive

    async def _stall(self, reader: asyncio.StreamReader) -> None:
        """
        Wait until the mode changes or the peer goes away.
        """
        changed = asyncio.ensure_future(self.changed.wait())
        gone = asyncio.ensure_future(reader.read(65536))
        try:
            while True:
                await asyncio.wait({changed, gone}, return_when=asyncio.FIRST_COMPLETED)
                if changed.done() or gone.result() == b"":
                    return
                gone = asyncio.ensure_future(reader.read(65536))
        finally:
            for task in (changed, gone):
                task.cancel()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _answer(
    method: str,
    target: str,
    body: bytes,
    writer: asyncio.StreamWriter,
    keep_alive: bool,
) -> None:
    parts = urlsplit(target)
    name = parts.path.rstrip("/").rpartition("/")[2]
    query = parse_qs(parts.query)
    connection = b"" if keep_alive else b"Connection: close\r\n"
    if name == "slow":
        seconds = float(query.get("s", ["1"])[0])
        await asyncio.sleep(min(max(seconds, 0.0), _LONGEST_SLEEP))
    if name == "echo":
        payload = json.dumps(
            {
                "method": method,
                "length": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        ).encode()
        content_type = b"application/json"
    elif name in ("big", "chunked"):
        payload = big_body(int(query.get("n", ["0"])[0]))
        content_type = b"application/octet-stream"
    else:
        payload = HELLO
        content_type = b"text/plain"
    if name == "chunked":
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\n%s"
            b"Transfer-Encoding: chunked\r\n\r\n" % (content_type, connection)
        )
        for start in range(0, len(payload), 4096):
            piece = payload[start : start + 4096]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
    else:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\n%sContent-Length: %d\r\n\r\n"
            % (content_type, connection, len(payload))
        )
        if method != "HEAD":
            view = memoryview(payload)
            for start in range(0, len(payload), _PIECE):
                writer.write(view[start : start + _PIECE])
                await writer.drain()
    await writer.drain()


async def _main() -> None:
    loop = asyncio.get_running_loop()
    healthy = _Server("healthy", faulted=False)
    faulted = _Server("faulted", faulted=True)
    await healthy.listen()
    await faulted.listen()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    print(f"ready {healthy.port} {faulted.port}", flush=True)
    while line := await stdin.readline():
        mode = line.decode().strip()
        if mode not in MODES:
            print(f"error unknown mode {mode!r}", flush=True)
            continue
        try:
            await faulted.set_mode(mode)
        except OSError as e:
            print(f"error {mode}: {e}", flush=True)
            continue
        print(f"ok {mode}", flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
