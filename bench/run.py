"""Benchmark txrouter against the servers it replaces, in one run on one machine.

Usage (from the repository root)::

    .venv/bin/python sites/prepare.py            # once: migrate, collectstatic
    .venv/bin/python bench/run.py                # every scenario, every server
    .venv/bin/python bench/run.py --duration 3 --runs 1          # quick check
    .venv/bin/python bench/run.py --only static-1k --servers txrouter,nginx
    .venv/bin/python bench/run.py --threads 2:8 --json results.json
    .venv/bin/python bench/run.py --only proxy-100b,worker-hop,workers-2cores

Method: each server runs alone on 127.0.0.1 on a free port, pinned to CPU 0
(``taskset -c 0``; its worker processes, even those started later, inherit
the pinning, and run.py checks that they did). Once it answers with the
expected body, ``wrk`` pinned to CPU 1 warms it up for 2 s, then
``taskset -c 1 wrk -t1 -c32 -d<duration>s --latency URL`` runs once, and the
server's whole process group is stopped, always. Runs are interleaved: a
scenario runs ``--runs`` rounds, each starting and measuring every server once,
in an order rotated by one from the previous round's, so that a burst of noise
on a shared machine hits several servers instead of one server's every run.
The table shows each server's median req/s and median p99 latency over the
rounds, and txrouter's median req/s divided by each peer's (above 1: txrouter
is faster); a line below it gives that ratio round by round.

Proxy scenarios first start an upstream (nginx) pinned to CPU 1, next to
wrk, for each server in each round. Unpinned scenarios (``workers-2cores``) run server
and ``wrk -t2`` on every CPU.

To add a scenario, write a function per server that returns a L{Launch} and
list them in a L{Scenario} of L{SCENARIOS}.

Only the standard library is used; the servers under test come from the
venv running this script (gunicorn, waitress, Twisted) and from the system
(wrk, nginx, taskset).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SITES = REPO / "sites"
BLOG = SITES / "blog"
FILES = SITES / "files"
VENV_BIN = Path(sys.executable).parent

SERVER_CPU = "0"
CLIENT_CPU = "1"
WRK_THREADS = 1
WRK_CONNECTIONS = 32
WARMUP_SECONDS = 2
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# The server whose req/s each scenario divides by its peers' (by default).
TXROUTER = "txrouter"

# Where each external tool comes from, and how to get it when it is missing.
INSTALL_HINTS = {
    "wrk": "apt-get install wrk",
    "taskset": "apt-get install util-linux",
    "nginx": "apt-get install nginx-light",
    "gunicorn": f"{VENV_BIN}/pip install gunicorn",
    "waitress-serve": f"{VENV_BIN}/pip install waitress",
    "twistd": f"{VENV_BIN}/pip install twisted",
}
# Tools without which nothing can be measured at all.
REQUIRED_TOOLS = ("wrk", "taskset")


# --------------------------------------------------------------------------
# What to run


@dataclass(frozen=True)
class Settings:
    """Knobs shared by every server launcher."""

    # None: txrouter's own default pool.
    threads_min: int | None = None
    threads_max: int | None = None
    # The port of the scenario's upstream server, set for each server of a
    # scenario that has one (0: none).
    upstream: int = 0


@dataclass(frozen=True)
class Launch:
    """How to start one server: command, folder, environment, URL path.

    An empty C{argv} starts nothing and wrk hits C{port} instead of the
    server's own port (the upstream itself, for the C{direct} row).
    """

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    path: str
    port: int = 0


# A launcher gets the port, a private temporary folder, the tool paths and
# the settings, and says how to start its server.
Launcher = Callable[[int, Path, dict[str, str], Settings], Launch]


@dataclass(frozen=True)
class Server:
    """One contender in a scenario: a short name for C{--servers}, a label."""

    name: str
    label: str
    launcher: Launcher
    tools: tuple[str, ...]


@dataclass(frozen=True)
class Target:
    """A goal from an issue: C{ours} req/s / C{theirs} req/s >= C{minimum}."""

    issue: int
    ours: str
    theirs: str
    minimum: float
    # Also: ours' median p99 below theirs'.
    p99_below: bool = False


@dataclass(frozen=True)
class Scenario:
    """One thing to measure, with the body length every server must return.

    C{baseline} names the server whose req/s the ratio column divides by each
    row's. C{upstream}, if set, is started on the client CPU before each
    server (which finds its port in L{Settings.upstream}). An unpinned
    scenario runs its servers and wrk (C{wrk_threads} threads) on every CPU.
    """

    name: str
    description: str
    body_length: int
    servers: tuple[Server, ...]
    baseline: str = TXROUTER
    upstream: Launcher | None = None
    pinned: bool = True
    wrk_threads: int = WRK_THREADS
    targets: tuple[Target, ...] = ()


def base_env(**extra: str) -> dict[str, str]:
    """Return our environment without variables that would steer the servers."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "DJANGO_SETTINGS_MODULE", "DJANGO_DEBUG"}
    }
    env.update(extra)
    return env


def txrouter_config(tmp: Path, port: int, routes: str, settings: Settings) -> Path:
    """Write a routes.yaml (no access_log key: access log off) and return it."""
    config = tmp / "routes.yaml"
    config.write_text(
        f"listen: tcp:{port}:interface=127.0.0.1\n"
        f"{threads_line(settings)}"
        f"routes:\n  {routes}\n"
    )
    return config


def threads_line(settings: Settings) -> str:
    """The C{threads:} setting asked for on the command line, if any."""
    if settings.threads_max is None:
        return ""
    return f"threads: {{min: {settings.threads_min}, max: {settings.threads_max}}}\n"


def txrouter_launch(
    tools: dict[str, str], config: Path, tmp: Path, path: str
) -> Launch:
    """Start C{twistd -n txrouter} with the plugin found from the repo root."""
    # `python -m twisted` runs `twist`, not `twistd`; run the venv's twistd.
    argv = [sys.executable, tools["twistd"], "-n", "--pidfile=", "txrouter"]
    argv += ["--config", str(config)]
    return Launch(argv, tmp, base_env(PYTHONPATH=str(REPO)), path)


def txrouter_django_workers(workers: int) -> Launcher:
    """Return a launcher of txrouter serving sites/blog at / with C{workers}.

    C{workers: 0} is in-process, on the router's pool; else each worker
    process gets a pool of the same size.
    """

    def launch(port: int, tmp: Path, tools: dict[str, str], s: Settings) -> Launch:
        # Explicit even for 0: the default depends on the number of projects.
        route = f"django: {BLOG}, workers: {workers}"
        if workers and s.threads_max is not None:
            route += f", threads: {{min: {s.threads_min}, max: {s.threads_max}}}"
        config = txrouter_config(tmp, port, f"/: {{{route}}}", s)
        return txrouter_launch(tools, config, tmp, "/hello/")

    return launch


txrouter_django = txrouter_django_workers(0)


def txrouter_static(port: int, tmp: Path, tools: dict[str, str], s: Settings) -> Launch:
    """txrouter serving sites/files at /files/."""
    config = txrouter_config(tmp, port, f"/files/: {{static: {FILES}}}", s)
    return txrouter_launch(tools, config, tmp, "/files/")


def twistd_web(tools: dict[str, str], port: int, *args: str) -> list[str]:
    """Return the command line of C{twistd -n web} listening on C{port}."""
    listen = f"tcp:{port}:interface=127.0.0.1"
    return [
        sys.executable,
        tools["twistd"],
        "-n",
        "--pidfile=",
        "web",
        "--listen",
        listen,
        *args,
    ]


def twistd_wsgi(port: int, tmp: Path, tools: dict[str, str], s: Settings) -> Launch:
    """Twisted's own C{twistd web --wsgi} (it logs every request)."""
    argv = twistd_web(tools, port, "--wsgi", "blog.wsgi.application")
    env = base_env(PYTHONPATH=str(BLOG), DJANGO_SETTINGS_MODULE="blog.settings")
    return Launch(argv, tmp, env, "/hello/")


def twistd_path(port: int, tmp: Path, tools: dict[str, str], s: Settings) -> Launch:
    """Twisted's own C{twistd web --path} (it logs every request)."""
    return Launch(twistd_web(tools, port, "--path", str(FILES)), tmp, base_env(), "/")


def gunicorn_sync_workers(workers: int) -> Launcher:
    """Return a launcher of gunicorn with C{workers} sync workers, no access
    log (its default)."""

    def launch(port: int, tmp: Path, tools: dict[str, str], s: Settings) -> Launch:
        argv = [
            tools["gunicorn"],
            "-w",
            str(workers),
            "-k",
            "sync",
            "-b",
            f"127.0.0.1:{port}",
            "--chdir",
            str(BLOG),
            "blog.wsgi:application",
        ]
        return Launch(argv, BLOG, base_env(), "/hello/")

    return launch


gunicorn_sync = gunicorn_sync_workers(1)


def waitress_4t(port: int, tmp: Path, tools: dict[str, str], s: Settings) -> Launch:
    """waitress, 4 threads (it has no access log)."""
    argv = [
        tools["waitress-serve"],
        "--threads=4",
        f"--listen=127.0.0.1:{port}",
        "blog.wsgi:application",
    ]
    return Launch(argv, BLOG, base_env(), "/hello/")


NGINX_CONF = """\
{user}worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    types {{ text/plain txt; application/octet-stream bin; }}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{server}
}}
"""
NGINX_STATIC = """\
    server {{
        listen 127.0.0.1:{port};
        location /files/ {{ alias {files}/; }}
    }}"""
# The upstream of the proxy scenario: 100 bytes, no quote, backslash or $.
UPSTREAM_BODY = "upstream says hello " * 5
NGINX_UPSTREAM = """\
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 100000;
        location / {{ default_type text/plain; return 200 "{body}"; }}
    }}"""
NGINX_PROXY = """\
    upstream up {{ server 127.0.0.1:{upstream}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""


def nginx_launch(tools: dict[str, str], tmp: Path, server: str, path: str) -> Launch:
    """Start nginx (one worker, access log off) with C{server} in C{http}."""
    # As root, workers would switch to "nobody"; stay root so they can read
    # the files wherever the repository lives.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, tmp=tmp, server=server))
    argv = [
        tools["nginx"],
        "-c",
        str(conf),
        "-p",
        f"{tmp}/",
        "-e",
        f"{tmp}/error.log",
        "-g",
        "daemon off;",
    ]
    return Launch(argv, tmp, base_env(), path)


def nginx_static(port: int, tmp: Path, tools: dict[str, str], s: Settings) -> Launch:
    """nginx, one worker, sendfile on, access log off."""
    server = NGINX_STATIC.format(port=port, files=FILES)
    return nginx_launch(tools, tmp, server, "/files/")


def nginx_upstream(port: int, tmp: Path, tools: dict[str, str], s: Settings) -> Launch:
    """The proxy scenario's upstream: nginx answering 100 bytes of text."""
    server = NGINX_UPSTREAM.format(port=port, body=UPSTREAM_BODY)
    return nginx_launch(tools, tmp, server, "/")


def nginx_proxy(port: int, tmp: Path, tools: dict[str, str], s: Settings) -> Launch:
    """nginx C{proxy_pass}, keeping up to 32 upstream connections alive."""
    server = NGINX_PROXY.format(port=port, upstream=s.upstream)
    return nginx_launch(tools, tmp, server, "/")


def txrouter_proxy(port: int, tmp: Path, tools: dict[str, str], s: Settings) -> Launch:
    """txrouter proxying / to the upstream."""
    routes = f'/: {{proxy: "http://127.0.0.1:{s.upstream}/"}}'
    return txrouter_launch(tools, txrouter_config(tmp, port, routes, s), tmp, "/")


# Twisted's own reverse proxy in a Site that logs every request to a file,
# as `twistd web` would; argv: port, upstream port, access log.
RPR_SCRIPT = """\
import sys

from twisted.internet import reactor
from twisted.web.proxy import ReverseProxyResource
from twisted.web.server import Site

port, upstream, access_log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
site = Site(ReverseProxyResource("127.0.0.1", upstream, b""), logPath=access_log)
reactor.listenTCP(port, site, interface="127.0.0.1")
reactor.run()
"""


def twisted_rpr(port: int, tmp: Path, tools: dict[str, str], s: Settings) -> Launch:
    """Twisted's C{ReverseProxyResource} (a connection per request, logged)."""
    script = tmp / "rpr.py"
    script.write_text(RPR_SCRIPT)
    argv = [sys.executable, str(script), str(port), str(s.upstream)]
    return Launch([*argv, str(tmp / "access.log")], tmp, base_env(), "/")


def direct(port: int, tmp: Path, tools: dict[str, str], s: Settings) -> Launch:
    """No server: wrk hits the upstream itself."""
    return Launch([], tmp, base_env(), "/", port=s.upstream)


STATIC_SERVERS = (
    Server(TXROUTER, "txrouter", txrouter_static, ("twistd",)),
    Server("twistd-web", "twistd web --path", twistd_path, ("twistd",)),
    Server("nginx", "nginx 1 worker", nginx_static, ("nginx",)),
)

# The hook for new scenarios: scenario name -> servers. A server's URL is its
# Launch.path followed by the scenario's file name for static scenarios.
SCENARIOS: dict[str, Scenario] = {
    "django-hello": Scenario(
        "django-hello",
        "Django view returning 100 bytes of text (sites/blog /hello/)",
        100,
        (
            Server(TXROUTER, "txrouter", txrouter_django, ("twistd",)),
            Server("twistd-web", "twistd web --wsgi", twistd_wsgi, ("twistd",)),
            Server("gunicorn", "gunicorn sync 1 worker", gunicorn_sync, ("gunicorn",)),
            Server("waitress", "waitress 4 threads", waitress_4t, ("waitress-serve",)),
        ),
    ),
    "static-1k": Scenario(
        "static-1k", "static file, 1 KiB (sites/files/1k.txt)", 1024, STATIC_SERVERS
    ),
    "static-100k": Scenario(
        "static-100k",
        "static file, 100 KiB (sites/files/100k.bin)",
        102400,
        STATIC_SERVERS,
    ),
    "proxy-100b": Scenario(
        "proxy-100b",
        "reverse proxy of a 100-byte upstream response "
        "(upstream: nginx 1 worker on CPU 1, with wrk)",
        len(UPSTREAM_BODY),
        (
            Server(TXROUTER, "txrouter proxy:", txrouter_proxy, ("twistd", "nginx")),
            Server(
                "twisted-rpr",
                "Twisted ReverseProxyResource",
                twisted_rpr,
                ("nginx",),
            ),
            Server(
                "nginx-proxy",
                "nginx proxy_pass, keepalive 32",
                nginx_proxy,
                ("nginx",),
            ),
            Server("direct", "direct to the upstream", direct, ("nginx",)),
        ),
        upstream=nginx_upstream,
        targets=(Target(3, TXROUTER, "twisted-rpr", 2.5, p99_below=True),),
    ),
    "worker-hop": Scenario(
        "worker-hop",
        "Django view returning 100 bytes (sites/blog /hello/), "
        "in-process vs one worker process (router and worker on CPU 0)",
        100,
        (
            Server(
                TXROUTER,
                "txrouter workers: 0 (in-process)",
                txrouter_django,
                ("twistd",),
            ),
            Server(
                "txrouter-worker",
                "txrouter workers: 1",
                txrouter_django_workers(1),
                ("twistd",),
            ),
        ),
        baseline="txrouter-worker",
        targets=(Target(4, "txrouter-worker", TXROUTER, 0.6),),
    ),
    "workers-2cores": Scenario(
        "workers-2cores",
        "Django view returning 100 bytes (sites/blog /hello/), "
        "two worker processes, unpinned on both cores",
        100,
        (
            Server(
                TXROUTER, "txrouter workers: 2", txrouter_django_workers(2), ("twistd",)
            ),
            Server(
                "gunicorn",
                "gunicorn sync 2 workers",
                gunicorn_sync_workers(2),
                ("gunicorn",),
            ),
        ),
        pinned=False,
        wrk_threads=2,
        targets=(Target(4, TXROUTER, "gunicorn", 0.8),),
    ),
}
# The file each static scenario appends to its servers' Launch.path.
URL_SUFFIX = {"static-1k": "1k.txt", "static-100k": "100k.bin"}


# --------------------------------------------------------------------------
# Tools


def find_tools() -> dict[str, str]:
    """Map each tool we know of to its path; missing tools are left out."""
    search = os.pathsep.join(
        [str(VENV_BIN), os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]
    )
    found = {}
    for name in INSTALL_HINTS:
        # Python tools must come from this venv, not from anywhere on PATH.
        where = (
            str(VENV_BIN)
            if name in {"gunicorn", "waitress-serve", "twistd"}
            else search
        )
        path = shutil.which(name, path=where)
        if path:
            found[name] = path
    return found


def missing_tools(servers: list[Server], tools: dict[str, str]) -> list[str]:
    """Return the tools needed by C{servers} (and wrk, taskset) not installed."""
    needed = {*REQUIRED_TOOLS, *(t for server in servers for t in server.tools)}
    return sorted(needed - tools.keys())


def install_advice(missing: list[str]) -> str:
    """Say exactly what to install for each missing tool."""
    return "\n".join(f"  {name}: {INSTALL_HINTS[name]}" for name in missing)


def check_cpus() -> str | None:
    """Return why pinning cannot work here, or None when CPUs 0 and 1 exist."""
    cpus = os.sched_getaffinity(0)
    if not {int(SERVER_CPU), int(CLIENT_CPU)} <= cpus:
        allowed = sorted(cpus)
        return (
            f"need CPUs {SERVER_CPU} and {CLIENT_CPU}; this process may use {allowed}"
        )
    return None


# --------------------------------------------------------------------------
# Server lifecycle


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    launch: Launch, log: Path, tools: dict[str, str], cpu: str | None
) -> subprocess.Popen[bytes]:
    """Start the server pinned to C{cpu} (None: unpinned), in a process group
    of its own; the processes it starts later inherit the pinning."""
    pin = [tools["taskset"], "-c", cpu] if cpu is not None else []
    with log.open("wb") as out:
        return subprocess.Popen(
            [*pin, *launch.argv],
            cwd=launch.cwd,
            env=launch.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server's whole process group, even if Ctrl-C is pressed again."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        terminate_group(proc)
    finally:
        signal.signal(signal.SIGINT, previous)


def terminate_group(proc: subprocess.Popen[bytes]) -> None:
    """Send SIGTERM to the process group, then SIGKILL if it lingers."""
    for sig, timeout in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc.poll()
            if not group_alive(proc.pid):
                return
            time.sleep(0.1)
    proc.poll()


def group_alive(pgid: int) -> bool:
    """Tell whether any process of group C{pgid} is still alive."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # A zombie leader still counts: reap it, then look again.
    with suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class ServerFailed(Exception):
    """The server exited, never answered, or answered the wrong thing."""


def tail(log: Path, lines: int = 30) -> str:
    """Return the last lines of a server's output."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def fetch(url: str) -> tuple[int, int]:
    """GET C{url}; return (status, body length)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, len(response.read())
    except urllib.error.HTTPError as e:
        return e.code, len(e.read())


def wait_ready(
    url: str, proc: subprocess.Popen[bytes] | None, log: Path, length: int
) -> None:
    """Wait until C{url} answers 200 with C{length} bytes, or raise ServerFailed.

    This also waits for worker processes: until one is ready, txrouter
    answers 503.
    """
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerFailed(f"exited with status {proc.returncode}:\n{tail(log)}")
        try:
            status, got = fetch(url)
        except (OSError, urllib.error.URLError) as e:
            last = f"no answer ({e})"
        else:
            if status == 200 and got == length:
                return
            last = f"status {status}, {got} bytes (expected 200, {length} bytes)"
        time.sleep(0.2)
    raise ServerFailed(f"not ready after {READY_TIMEOUT:.0f} s: {last}\n{tail(log)}")


def group_pids(pgid: int) -> list[int]:
    """Return the processes of group C{pgid} (from /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        # The fields after the command name: state, ppid, pgrp, ...
        with suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rpartition(")")[2].split()[2]) == pgid:
                pids.append(int(stat.parent.name))
    return sorted(pids)


def check_pinning(proc: subprocess.Popen[bytes], cpu: str | None) -> str:
    """Describe the server's processes; raise ServerFailed if one escaped C{cpu}."""
    pids = group_pids(proc.pid)
    if cpu is None:
        return f"{len(pids)} process(es), unpinned"
    for pid in pids:
        with suppress(OSError):  # it just exited
            cpus = os.sched_getaffinity(pid)
            if cpus != {int(cpu)}:
                raise ServerFailed(f"process {pid} runs on CPUs {sorted(cpus)}")
    return f"{len(pids)} process(es), all on CPU {cpu}"


@contextmanager
def running(
    launch: Launch, log: Path, tools: dict[str, str], cpu: str | None = SERVER_CPU
) -> Iterator[subprocess.Popen[bytes] | None]:
    """Run the server for the duration of the block; always stop it.

    A launch without a command starts nothing and yields None.
    """
    if not launch.argv:
        yield None
        return
    proc = start(launch, log, tools, cpu)
    try:
        yield proc
    finally:
        stop(proc)


# --------------------------------------------------------------------------
# wrk


@dataclass
class WrkRun:
    """What one wrk run measured."""

    requests_per_second: float
    p99_ms: float
    errors: int
    # The scenario's round (from 1) it was measured in; 0 until known.
    round: int = 0


LATENCY_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def parse_wrk(output: str) -> WrkRun:
    """Parse req/s, the p99 latency and the error counts from wrk's output."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p99 = re.search(r"^\s+99(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\b", output, re.M)
    if not rps or not p99:
        raise ValueError(f"cannot read wrk's output:\n{output}")
    errors = sum(
        int(n)
        for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output)
        + re.findall(r"Non-2xx or 3xx responses: (\d+)", output)
    )
    return WrkRun(float(rps[1]), float(p99[1]) * LATENCY_UNITS_MS[p99[2]], errors)


def wrk(url: str, seconds: int, tools: dict[str, str], scenario: Scenario) -> WrkRun:
    """Run wrk against C{url} for C{seconds}, pinned to the client CPU unless
    the scenario is unpinned."""
    pin = [tools["taskset"], "-c", CLIENT_CPU] if scenario.pinned else []
    argv = [
        *pin,
        tools["wrk"],
        f"-t{scenario.wrk_threads}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{seconds}s",
        "--latency",
        url,
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if result.returncode != 0:
        raise ServerFailed(f"wrk failed ({result.returncode}): {result.stderr.strip()}")
    return parse_wrk(result.stdout)


# --------------------------------------------------------------------------
# Measuring


@dataclass
class Result:
    """The outcome for one server in one scenario."""

    server: str
    label: str
    url: str = ""
    runs: list[WrkRun] = field(default_factory=list)
    problem: str = ""

    @property
    def rps(self) -> float:
        """Median req/s over the runs."""
        return statistics.median(r.requests_per_second for r in self.runs)

    @property
    def p99_ms(self) -> float:
        """Median p99 latency (ms) over the runs."""
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def errors(self) -> int:
        """Socket errors and non-2xx/3xx responses over all runs."""
        return sum(r.errors for r in self.runs)


def server_url(scenario: Scenario, port: int, launch: Launch) -> str:
    """Return the URL wrk hits for this server in this scenario."""
    port = launch.port or port
    return f"http://127.0.0.1:{port}{launch.path}{URL_SUFFIX.get(scenario.name, '')}"


def start_upstream(
    scenario: Scenario, tmp: Path, tools: dict[str, str], stack: ExitStack
) -> int:
    """Start the scenario's upstream on the client CPU until C{stack} closes;
    return its port once it answers."""
    assert scenario.upstream is not None
    tmp.mkdir()
    port = free_port()
    launch = scenario.upstream(port, tmp, tools, Settings())
    url = f"http://127.0.0.1:{port}{launch.path}"
    log = tmp / "server.log"
    proc = stack.enter_context(running(launch, log, tools, CLIENT_CPU))
    try:
        wait_ready(url, proc, log, scenario.body_length)
    except ServerFailed as e:
        raise ServerFailed(f"upstream {e}") from None
    return port


def measure(
    scenario: Scenario,
    server: Server,
    args: argparse.Namespace,
    tools: dict[str, str],
    result: Result,
    round_number: int,
) -> None:
    """Measure one round of one server into C{result}: start it (after the
    scenario's upstream, if any), wait until it answers, warm it up, run wrk
    once, stop it; on failure, set C{result.problem}."""
    cpu = SERVER_CPU if scenario.pinned else None
    # The stack stops the servers before their folder is removed, whatever
    # happens (failure, Ctrl-C, SIGTERM).
    with (
        tempfile.TemporaryDirectory(prefix="txrouter-bench-") as name,
        ExitStack() as stack,
    ):
        tmp = Path(name)
        log = tmp / "server.log"
        try:
            settings = args.settings
            if scenario.upstream is not None:
                upstream = start_upstream(scenario, tmp / "upstream", tools, stack)
                settings = replace(settings, upstream=upstream)
            port = free_port()
            launch = server.launcher(port, tmp, tools, settings)
            result.url = server_url(scenario, port, launch)
            proc = stack.enter_context(running(launch, log, tools, cpu))
            wait_ready(result.url, proc, log, scenario.body_length)
            if proc is not None:
                progress(f"    {check_pinning(proc, cpu)}")
            wrk(result.url, WARMUP_SECONDS, tools, scenario)
            run = wrk(result.url, args.duration, tools, scenario)
            run.round = round_number
            progress(
                f"    {run.requests_per_second:,.0f} req/s, "
                f"p99 {run.p99_ms:.2f} ms, errors {run.errors}"
            )
            result.runs.append(run)
        except (ServerFailed, ValueError, subprocess.TimeoutExpired) as e:
            result.problem = str(e)
            progress(f"    FAILED: {e}")


def rotated(items: list[Result], by: int) -> list[Result]:
    """Return C{items} rotated left C{by} places: round 1 starts with the first
    item, round 2 with the second, and so on."""
    if not items:
        return []
    by %= len(items)
    return items[by:] + items[:by]


def progress(message: str) -> None:
    """Report progress on stderr, keeping stdout for the tables."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Reporting


NONE = "\N{EN DASH}"  # what the tables show when there is no figure


def ratio(ours: Result | None, theirs: Result) -> str:
    """Return the baseline's req/s divided by C{theirs}, or a dash."""
    if ours is None or not ours.runs or not theirs.runs:
        return NONE
    return f"{ours.rps / theirs.rps:.2f}"


def summary(problem: str) -> str:
    """Shorten a problem to its first and last lines (the cause is often last)."""
    lines = [line.strip() for line in problem.strip().splitlines() if line.strip()]
    if not lines:
        return "?"
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def target_line(target: Target, results: list[Result]) -> str:
    """Say whether the issue's target was met in this run."""
    measured = {r.server: r for r in results if r.runs}
    goal = f"{target.ours} ÷ {target.theirs} ≥ {target.minimum:.2f}"
    if target.p99_below:
        goal += f" and p99 below {target.theirs}'s"
    line = f"- issue {target.issue} target: {goal}: "
    ours, theirs = measured.get(target.ours), measured.get(target.theirs)
    if ours is None or theirs is None:
        return line + "not measured"
    value = ours.rps / theirs.rps
    met = value >= target.minimum
    line += f"{value:.2f}"
    if target.p99_below:
        met = met and ours.p99_ms < theirs.p99_ms
        line += f", p99 {ours.p99_ms:.2f} vs {theirs.p99_ms:.2f} ms"
    return line + (", met" if met else ", NOT met")


def method_line(scenario: Scenario) -> str:
    """Say how a scenario departs from the method in the header, if it does."""
    if scenario.pinned:
        return ""
    return (
        f"Unpinned: servers and wrk -t{scenario.wrk_threads} "
        f"-c{WRK_CONNECTIONS} share every CPU.\n\n"
    )


def table(scenario: Scenario, results: list[Result]) -> str:
    """Render one scenario's results as a Markdown table, problems and
    targets below it."""
    ours = next((r for r in results if r.server == scenario.baseline), None)
    lines = [
        f"### {scenario.name}: {scenario.description}",
        "",
        f"{method_line(scenario)}"
        f"| server | req/s | p99 (ms) | errors | {scenario.baseline} ÷ server |",
        "|---|---:|---:|---:|---:|",
    ]
    notes = []
    for r in results:
        if r.runs:
            lines.append(
                f"| {r.label} | {r.rps:,.0f} | {r.p99_ms:.2f} | "
                f"{r.errors} | {ratio(ours, r)} |"
            )
        else:
            lines.append(f"| {r.label} |{f' {NONE} |' * 4}")
        if r.problem:
            notes.append(f"- {r.label}: {summary(r.problem)}")
    notes += [target_line(target, results) for target in scenario.targets]
    notes += per_round_lines(scenario, results)
    return "\n".join(lines + (["", *notes] if notes else []))


def per_round_lines(scenario: Scenario, results: list[Result]) -> list[str]:
    """Give the baseline's req/s divided by each peer's, round by round (a
    dash for a round either of them missed), to show the spread."""
    ours = next((r for r in results if r.server == scenario.baseline), None)
    if ours is None or not ours.runs:
        return []
    mine = {run.round: run.requests_per_second for run in ours.runs}
    lines = []
    for theirs in results:
        if theirs is ours or not theirs.runs:
            continue
        peer = {run.round: run.requests_per_second for run in theirs.runs}
        rounds = sorted(mine.keys() | peer.keys())
        figures = ", ".join(
            f"{mine[n] / peer[n]:.2f}" if n in mine and n in peer else NONE
            for n in rounds
        )
        lines.append(f"- per-round {scenario.baseline} ÷ {theirs.server}: {figures}")
    return lines


def to_json(results: dict[str, list[Result]], args: argparse.Namespace) -> str:
    """Serialise every run and median, with the settings used."""
    settings = asdict(args.settings)
    del settings["upstream"]  # set per server, seen in its URL
    return json.dumps(
        {
            "duration_s": args.duration,
            "runs": args.runs,
            "wrk": {"threads": WRK_THREADS, "connections": WRK_CONNECTIONS},
            "cpus": {"server": SERVER_CPU, "client": CLIENT_CPU},
            "settings": settings,
            "scenarios": {
                name: [
                    {
                        "server": r.server,
                        "pinned": SCENARIOS[name].pinned,
                        "wrk_threads": SCENARIOS[name].wrk_threads,
                        "label": r.label,
                        "url": r.url,
                        "rps": r.rps if r.runs else None,
                        "p99_ms": r.p99_ms if r.runs else None,
                        "errors": r.errors,
                        "runs": [asdict(run) for run in r.runs],
                        "problem": r.problem,
                    }
                    for r in rs
                ]
                for name, rs in results.items()
            },
        },
        indent=2,
    )


# --------------------------------------------------------------------------
# Command line


def comma_list(text: str) -> list[str]:
    """Split C{a,b,c} into names, ignoring blanks."""
    return [part.strip() for part in text.split(",") if part.strip()]


def thread_range(text: str) -> Settings:
    """Parse C{MIN:MAX} into the txrouter thread pool settings."""
    low, sep, high = text.partition(":")
    try:
        settings = Settings(int(low), int(high if sep else low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX, got {text!r}") from None
    assert settings.threads_min is not None and settings.threads_max is not None
    if (
        not 0 <= settings.threads_min <= settings.threads_max
        or not settings.threads_max
    ):
        raise argparse.ArgumentTypeError(f"need 0 <= MIN <= MAX, MAX >= 1: {text!r}")
    return settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    servers = sorted({s.name for sc in SCENARIOS.values() for s in sc.servers})
    parser = argparse.ArgumentParser(
        description="Benchmark txrouter against its peers (see bench/README.md)."
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="rounds, each running wrk once per server (interleaved)",
    )
    parser.add_argument(
        "--only",
        type=comma_list,
        default=list(SCENARIOS),
        metavar="SCENARIO[,..]",
        help=", ".join(SCENARIOS),
    )
    parser.add_argument(
        "--servers",
        type=comma_list,
        default=None,
        metavar="NAME[,..]",
        help=", ".join(servers),
    )
    parser.add_argument(
        "--threads",
        type=thread_range,
        default=Settings(),
        dest="settings",
        metavar="MIN:MAX",
        help="txrouter's thread pool (default: txrouter's own, 2:8)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="OUT.json",
        help="also write every run to this file",
    )
    args = parser.parse_args(argv)
    if args.duration < 1 or args.runs < 1:
        parser.error("--duration and --runs must be at least 1")
    unknown = [name for name in args.only if name not in SCENARIOS]
    if unknown:
        parser.error(
            f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    if args.servers is not None:
        unknown = [name for name in args.servers if name not in servers]
        if unknown:
            parser.error(
                f"unknown server {', '.join(unknown)}; choose from {', '.join(servers)}"
            )
    return args


def chosen_servers(scenario: Scenario, names: list[str] | None) -> list[Server]:
    """Return the scenario's servers, filtered by C{--servers}."""
    return [s for s in scenario.servers if names is None or s.name in names]


def run_scenario(
    scenario: Scenario,
    args: argparse.Namespace,
    tools: dict[str, str],
    results: list[Result],
) -> None:
    """Measure every chosen server of one scenario into C{results}, in
    C{args.runs} interleaved rounds.

    Each round starts, measures and stops every server once; each round's
    order is the previous one's rotated by one. A server that fails is left
    out of the later rounds.
    """
    contenders = []
    for server in chosen_servers(scenario, args.servers):
        result = Result(server.name, server.label)
        results.append(result)
        missing = [t for t in server.tools if t not in tools]
        if missing:
            advice = "; ".join(f"{t}: {INSTALL_HINTS[t]}" for t in missing)
            result.problem = f"skipped, install {advice}"
            progress(f"{scenario.name} / {server.label}: skipped ({advice})")
            continue
        contenders.append(result)
    servers = {s.name: s for s in scenario.servers}
    for index in range(args.runs):
        for result in rotated(contenders, index):
            if result.problem:
                continue
            progress(f"{scenario.name} round {index + 1}/{args.runs} / {result.label}")
            measure(scenario, servers[result.server], args, tools, result, index + 1)


def stop_on_sigterm() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so that servers still get stopped."""

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios and print one table per scenario."""
    args = parse_args(argv)
    tools = find_tools()
    scenarios = [SCENARIOS[name] for name in args.only]
    servers = [s for sc in scenarios for s in chosen_servers(sc, args.servers)]
    missing = missing_tools(servers, tools)
    if missing:
        print(
            f"run.py: missing tools; install them with:\n{install_advice(missing)}",
            file=sys.stderr,
        )
        if any(name in REQUIRED_TOOLS for name in missing):
            return 2
    cpu_problem = check_cpus()
    if cpu_problem:
        print(f"run.py: {cpu_problem}", file=sys.stderr)
        return 2
    stop_on_sigterm()
    results: dict[str, list[Result]] = {}
    interrupted = False
    try:
        for scenario in scenarios:
            # Filled in place, so an interruption keeps what was measured.
            results[scenario.name] = []
            run_scenario(scenario, args, tools, results[scenario.name])
    except KeyboardInterrupt:
        interrupted = True
        progress("interrupted: servers stopped; results so far follow")
    print(
        f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{args.duration}s, "
        f"median of {args.runs} interleaved round(s); server on CPU {SERVER_CPU}, "
        f"wrk on CPU {CLIENT_CPU} (unless a scenario says otherwise)\n"
    )
    for name, rs in results.items():
        print(table(SCENARIOS[name], rs), end="\n\n")
    if args.json:
        args.json.write_text(to_json(results, args) + "\n")
    failed = any(
        r.problem and not r.problem.startswith("skipped")
        for rs in results.values()
        for r in rs
    )
    return 130 if interrupted else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
