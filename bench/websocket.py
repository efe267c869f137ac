"""
WebSocket messages per second through a txrouter proxy route, against a
direct connection to the same server, side by side in one run.

The server is C{tests/apps/wsupstream.py} (the C{websockets} package's
server, echoing every message); the clients are C{websockets} asyncio
clients in this process, each sending a message and waiting for its echo,
as fast as it can. Each round measures the direct connection and the
tunnel one after the other, the same way; the server, the router and the
clients share the machine's CPUs.

Usage::

    .venv/bin/python bench/websocket.py [--duration 5] [--rounds 3]
        [--connections 16] [--size 100]

It prints, per round, echoes per second (each is one message each way)
and MiB/s for 1 MiB messages, direct and through txrouter, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from listening import free_port, wait_listening  # beside this script
from websockets.asyncio.client import connect

REPO = Path(__file__).resolve().parent.parent
UPSTREAM = REPO / "tests" / "apps" / "wsupstream.py"


async def _echoes(url: str, connections: int, size: int, duration: float) -> float:
    """
    Echoes per second over C{connections} connections to C{url}.
    """
    message = b"x" * size
    count = 0
    stop = time.monotonic() + duration

    async def one() -> None:
        nonlocal count
        async with connect(url, max_size=None, compression=None) as client:
            while time.monotonic() < stop:
                await client.send(message)
                await client.recv()
                count += 1

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(connections)))
    return count / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--size", type=int, default=100)
    args = parser.parse_args()

    up_port, router_port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, str(UPSTREAM), str(up_port)])
    folder = Path(tempfile.mkdtemp(prefix="txrouter-bench-ws-"))
    (folder / "routes.yaml").write_text(
        f"listen: tcp:{router_port}:interface=127.0.0.1\n"
        f"routes:\n  /ws/: {{proxy: 'http://127.0.0.1:{up_port}/'}}\n"
    )
    twistd = Path(sys.executable).parent / "twistd"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    router = subprocess.Popen(
        [str(twistd), "-n", "--pidfile=", "-l", os.devnull, "txrouter"],
        cwd=folder,
        env=env,
    )
    try:
        wait_listening(up_port, upstream)
        wait_listening(router_port, router)
        direct = f"ws://127.0.0.1:{up_port}/echo"
        tunnel = f"ws://127.0.0.1:{router_port}/ws/echo"
        print(
            f"{args.connections} connections, {args.size} B messages, "
            f"{args.duration:g} s per measure; 1 MiB messages on 1 connection"
        )
        print(
            "| round | direct echo/s | txrouter echo/s | ratio "
            "| direct MiB/s | txrouter MiB/s | ratio |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for n in range(1, args.rounds + 1):
            row = []
            for connections, size in ((args.connections, args.size), (1, 1 << 20)):
                a = asyncio.run(_echoes(direct, connections, size, args.duration))
                b = asyncio.run(_echoes(tunnel, connections, size, args.duration))
                if size == 1 << 20:
                    a, b = a * 2, b * 2  # MiB each way per echo
                row += [f"{a:,.0f}", f"{b:,.0f}", f"{b / a:.2f}"]
            print(f"| {n} | " + " | ".join(row) + " |")
    finally:
        for process in (router, upstream):
            process.send_signal(signal.SIGTERM)
        for process in (router, upstream):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
