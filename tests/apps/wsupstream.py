"""
A WebSocket server for the tunnel tests (the C{websockets} package's own,
so that the other end of every tunnel is an implementation of RFC 6455
that is not ours). Run as C{python wsupstream.py PORT}; it prints C{ready}
once it listens on 127.0.0.1:PORT.

What it does depends on the path:

  - C{/echo}: sends back every message, text as text, binary as binary;
  - C{/room}: sends every message to every connection of C{/room};
  - C{/headers}: sends the handshake's headers, as JSON, then echoes;
  - C{/close/CODE}: closes at once with C{CODE} and the reason C{bye};
  - C{/flood/MIB}: sends MIB MiB in 64 KiB binary messages, as fast as
    the connection takes them, then the text C{done};
  - C{/closes}: sends, as JSON, the close codes the clients of C{/echo}
    closed with so far.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

_room: set[ServerConnection] = set()
_closes: list[int] = []


async def _echo(connection: ServerConnection) -> None:
    async for message in connection:
        await connection.send(message)


async def handle(connection: ServerConnection) -> None:
    path = connection.request.path if connection.request else "/"
    if path == "/echo":
        try:
            await _echo(connection)
        finally:
            received = connection.close_code
            if received is not None:
                _closes.append(received)
    elif path == "/room":
        _room.add(connection)
        try:
            async for message in connection:
                for member in list(_room):
                    await member.send(message)
        finally:
            _room.discard(connection)
    elif path == "/headers":
        assert connection.request is not None
        headers: dict[str, Any] = {}
        for name, value in connection.request.headers.raw_items():
            headers.setdefault(name.lower(), []).append(value)
        await connection.send(json.dumps(headers))
        await _echo(connection)
    elif path.startswith("/close/"):
        await connection.close(int(path.rsplit("/", 1)[1]), "bye")
    elif path.startswith("/flood/"):
        chunk = b"\x00" * 65536
        for _ in range(int(path.rsplit("/", 1)[1]) * 16):
            await connection.send(chunk)
        await connection.send("done")
        await connection.wait_closed()
    elif path == "/closes":
        await connection.send(json.dumps(_closes))
    else:
        await connection.close(1008, "unknown path")


async def main(port: int) -> None:
    async with serve(handle, "127.0.0.1", port, max_size=None, compression=None):
        print("ready", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
