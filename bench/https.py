"""
HTTPS side by side: txrouter against nginx with the same certificate, in
one run, round by round.

Each server is alone on CPU 0 (``taskset``; nginx with one worker, access
logs off in both, and no limit on the requests of a connection, as
txrouter has none), serving a 1 KiB static file over TLS 1.2/1.3 with
HTTP/2 offered over ALPN; the load generators (Debian's ``nghttp2-client``
h2load, and wrk) run on CPU 1. Per round and server:

* full handshakes/s: batches of 32 h2load clients, each making one
  connection (a new TLS session: a full handshake) for one request;
* resumed connections/s: wrk with ``Connection: close``, one request per
  connection, resuming its TLS session (both servers issue tickets);
* HTTP/1.1 and HTTP/2 requests/s on 32 kept-alive connections (h2load
  ``--h1``; h2load with 1 and with 10 streams at a time per connection).

Usage::

    .venv/bin/python bench/https.py [--duration 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from listening import free_port, wait_listening  # noqa: E402 (beside this script)

from tests.certs import Authority  # noqa: E402

SERVER_CPU, CLIENT_CPU = "0", "1"
NAME = "bench.test"


def _pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") else argv


def _nginx_http2(nginx: str) -> tuple[str, str]:
    """
    How this nginx turns HTTP/2 on: C{http2 on;} from 1.25.1, a C{listen}
    parameter before.
    """
    out = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    version = tuple(int(n) for n in found.groups()) if found else (0, 0, 0)
    return ("", "http2 on;") if version >= (1, 25, 1) else (" http2", "")


def _nginx(folder: Path, port: int, pem: Path, files: Path) -> list[str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    listen_flag, directive = _nginx_http2(nginx)
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = folder / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\npid {folder}/nginx.pid;\n"
        "events { worker_connections 4096; }\n"
        "http {\n  access_log off;\n  sendfile on;\n"
        "  keepalive_requests 1000000;\n  server {\n"
        f"    listen 127.0.0.1:{port} ssl{listen_flag};\n    {directive}\n"
        f"    ssl_certificate {pem};\n    ssl_certificate_key {pem};\n"
        "    ssl_protocols TLSv1.2 TLSv1.3;\n"
        f"    location / {{ root {files}; }}\n  }}\n}}\n"
    )
    return [nginx, "-c", str(conf), "-p", f"{folder}/", "-e", f"{folder}/error.log"]


def _txrouter(folder: Path, port: int, files: Path) -> list[str]:
    plain = free_port()
    (folder / "routes.yaml").write_text(
        f"listen:\n  - tcp:{plain}:interface=127.0.0.1\n"
        f"  - endpoint: tcp:{port}:interface=127.0.0.1\n"
        "    tls: {certificates: [certs/]}\n"
        f"routes:\n  /: {{static: {files}}}\n"
    )
    twistd = Path(sys.executable).parent / "twistd"
    return [str(twistd), "-n", "--pidfile=", "-l", os.devnull, "txrouter"]


def _run(argv: list[str]) -> str:
    done = subprocess.run(
        _pinned(CLIENT_CPU, argv), capture_output=True, text=True, timeout=300
    )
    return done.stdout + done.stderr


def _h2load_rate(output: str, in_flight: int) -> float:
    """
    Requests per second that succeeded; when the duration ends, the
    requests then in flight (at most C{in_flight}) count as failed.
    """
    found = re.search(r"finished in ([0-9.]+)s,", output)
    counts = re.search(r"(\d+) succeeded, (\d+) failed", output)
    if not found or not counts or int(counts.group(2)) > in_flight:
        raise SystemExit(f"h2load failed:\n{output}")
    return int(counts.group(1)) / float(found.group(1))


def full_handshakes(url: str, batches: int) -> float:
    """
    Full handshakes per second: each h2load client opens one connection
    (a new session) for one request, 32 at a time.
    """
    seconds = 0.0
    for _ in range(batches):
        out = _run(["h2load", "--h1", "-n", "32", "-c", "32", url])
        found = re.search(r"finished in ([0-9.]+)(m?s)", out)
        if not found or " 0 failed, 0 errored" not in out:
            raise SystemExit(f"h2load failed:\n{out}")
        value = float(found.group(1))
        seconds += value / 1000 if found.group(2) == "ms" else value
    return batches * 32 / seconds


def resumed(url: str, duration: float) -> float:
    out = _run(
        ["wrk", "-t1", "-c32", f"-d{duration:g}s", "-H", "Connection: close", url]
    )
    found = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if not found or "Non-2xx" in out:
        raise SystemExit(f"wrk failed:\n{out}")
    return float(found.group(1))


def requests(url: str, duration: float, h2: bool, streams: int = 1) -> float:
    protocol = ["-m", str(streams)] if h2 else ["--h1"]
    out = _run(["h2load", *protocol, "-c", "32", "-D", f"{duration:g}", url])
    if ("Application protocol: h2" in out) != h2:
        raise SystemExit(f"h2load did not speak {'h2' if h2 else 'HTTP/1.1'}:\n{out}")
    return _h2load_rate(out, 32 * streams)


def measure(url: str, duration: float) -> list[float]:
    return [
        full_handshakes(url, 40),
        resumed(url, duration),
        requests(url, duration, False),
        requests(url, duration, True),
        requests(url, duration, True, 10),
    ]


COLUMNS = [
    "full handshakes/s",
    "resumed conn/s",
    "HTTP/1.1 req/s",
    "h2 req/s",
    "h2 x10 req/s",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for tool in ("h2load", "wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(
                f"{tool} is missing (apt-get install nghttp2-client wrk nginx-light)"
            )

    folder = Path(tempfile.mkdtemp(prefix="txrouter-bench-https-"))
    files = folder / "files"
    files.mkdir()
    (files / "1k.bin").write_bytes(os.urandom(1024))
    (folder / "certs").mkdir()
    pem = Authority(folder).issue(
        [NAME, "127.0.0.1"], to=folder / "certs" / "bench.pem"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    print(
        f"1 KiB static file over TLS; servers on CPU {SERVER_CPU}, clients on "
        f"CPU {CLIENT_CPU}; {args.duration:g} s per measure; 32 connections"
    )
    print("| round | server | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---:|" * len(COLUMNS))
    try:
        for n in range(1, args.rounds + 1):
            rows = {}
            # Alternate which server goes first, round by round.
            order = ["nginx", "txrouter"] if n % 2 else ["txrouter", "nginx"]
            for server in order:
                port = free_port()
                where = folder / server
                where.mkdir(exist_ok=True)
                if server == "nginx":
                    argv = [*_nginx(where, port, pem, files), "-g", "daemon off;"]
                else:
                    shutil.copytree(
                        folder / "certs", where / "certs", dirs_exist_ok=True
                    )
                    argv = _txrouter(where, port, files)
                process = subprocess.Popen(
                    _pinned(SERVER_CPU, argv),
                    cwd=where,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    wait_listening(port, process)
                    rows[server] = measure(
                        f"https://127.0.0.1:{port}/1k.bin", args.duration
                    )
                finally:
                    process.send_signal(
                        signal.SIGTERM if server == "txrouter" else signal.SIGQUIT
                    )
                    try:
                        process.wait(30)
                    except subprocess.TimeoutExpired:
                        process.kill()
            for server in ("nginx", "txrouter"):
                cells = [f"{v:,.0f}" for v in rows[server]]
                print(f"| {n} | {server} | " + " | ".join(cells) + " |")
            ratios = [
                t / g for t, g in zip(rows["txrouter"], rows["nginx"], strict=True)
            ]
            h2_to_h1 = rows["txrouter"][3] / rows["txrouter"][2]
            print(
                f"| {n} | txrouter ÷ nginx | "
                + " | ".join(f"{r:.2f}" for r in ratios)
                + f" |  (txrouter h2 ÷ h1: {h2_to_h1:.2f}; nginx: "
                f"{rows['nginx'][3] / rows['nginx'][2]:.2f})"
            )
    finally:
        shutil.rmtree(folder, True)


if __name__ == "__main__":
    main()
