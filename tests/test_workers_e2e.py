"""
End to end: worker processes of a real, daemonized C{twistd txrouter}.

Two Django projects whose settings differ (the blog and the wiki of
C{sites/}) and a small WSGI application that answers with its environ are
served on one port, each in processes of its own; the tests drive them over
HTTP on 127.0.0.1 and watch the processes through C{/proc}. Every process a
test starts, or that its router starts, is gone when the test ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    REPO,
    Txrouter,
    prepared_sites,
    request,
    sleeping,
    wait_until,
)
from txrouter.config import DjangoRoute, load_config

pytestmark = pytest.mark.e2e

#: A WSGI application answering with its environ and its process, as JSON.
_DUMP_APP = '''
"""Answer with the WSGI environ (its text values), the body and this process."""

import gc
import hashlib
import json
import os


def application(environ, start_response):
    seen = {k: v for k, v in environ.items() if isinstance(v, str)}
    flags = ("multithread", "multiprocess", "run_once", "input_terminated")
    for key in ("wsgi." + flag for flag in flags):
        seen[key] = environ[key]
    stream = environ["wsgi.input"]
    wrapped = getattr(stream, "_wrapped", stream)  # twisted.web.wsgi's
    seen["input"] = type(getattr(wrapped, "raw", wrapped)).__name__
    body = stream.read(int(environ.get("CONTENT_LENGTH") or 0))
    seen["body"] = [len(body), hashlib.sha256(body).hexdigest()]
    seen["pid"] = os.getpid()
    seen["frozen"] = gc.get_freeze_count()
    seen["flavour"] = os.environ.get("TXROUTER_E2E_FLAVOUR")
    body = json.dumps(seen).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]
'''

_DUMP_MODULE = "txrouter_e2e_dump"

#: A client address other than the router's own, on the loopback network.
_CLIENT_IP = "127.0.0.5"


def _dump_app() -> Path:
    """
    A folder holding the environ-dumping WSGI application.
    """
    folder = Path(tempfile.mkdtemp(prefix="txrouter-dump-"))
    (folder / f"{_DUMP_MODULE}.py").write_text(_DUMP_APP, encoding="utf-8")
    return folder


def _runtime_dir() -> Path:
    """
    A path for a router's runtime folder; the router creates it.
    """
    return Path(tempfile.mkdtemp(prefix="txrouter-wrt-")) / "run"


def _stat(pid: int) -> tuple[str, int] | None:
    """
    The state letter and parent PID of a process, or L{None} if there is no
    such process.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, parent = text[text.rindex(")") + 2 :].split()[:2]
    return state, int(parent)


def _parent(pid: int) -> int | None:
    found = _stat(pid)
    return None if found is None else found[1]


def _gone(pid: int) -> bool:
    """
    Whether a process has exited (a zombie waiting to be reaped counts).
    """
    found = _stat(pid)
    return found is None or found[0] in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return raw.decode(errors="replace").split("\0")


def _is_worker(pid: int) -> bool:
    line = _cmdline(pid)
    return "txrouter.worker" in line and "serve" in line


def _workers_of(router: int) -> set[int]:
    """
    The live worker processes whose parent is C{router}.
    """
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            if _parent(pid) == router and not _gone(pid) and _is_worker(pid):
                found.add(pid)
    return found


def _kill_leftovers(pids: Iterable[int]) -> None:
    """
    SIGKILL whichever of C{pids} is still a live worker process.
    """
    for pid in pids:
        if not _gone(pid) and _is_worker(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _stop(server: Txrouter, also: Iterable[int] = ()) -> None:
    """
    Stop C{server} and make sure none of its workers, nor C{also}, survive.
    """
    workers = set(also)
    if server.pid is not None:
        workers |= _workers_of(server.pid)
    try:
        if server.pid is not None and not _gone(server.pid):
            server.stop()
    finally:
        _kill_leftovers(workers)


def _start(routes: str) -> Txrouter:
    server = Txrouter(routes)
    try:
        return server.start()
    except BaseException:
        _stop(server)
        raise


def _json(port: int, path: str, **headers: str) -> dict[str, Any]:
    """
    GET C{path}, which must answer 200 with JSON.
    """
    status, _, body = request(port, "GET", path, headers=headers, timeout=30)
    if status != 200:
        raise AssertionError(f"GET {path}: {status} {body[:500]!r}")
    return dict(json.loads(body))


def _from_client(
    port: int, path: str, headers: dict[str, str]
) -> tuple[int, bytes, int]:
    """
    GET C{path} from L{_CLIENT_IP}.

    @return: the status, the body and the client's own port.
    """
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=30, source_address=(_CLIENT_IP, 0)
    )
    try:
        connection.connect()
        assert connection.sock is not None
        client_port = connection.sock.getsockname()[1]
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), client_port
    finally:
        connection.close()


def _pids_of(
    port: int, path: str, count: int, starting: bool = False, **headers: str
) -> set[int]:
    """
    Ask C{path} who answers until C{count} different processes have.

    @param starting: the workers are starting: a 503 means "not yet".
    """
    seen: set[int] = set()

    def enough() -> bool:
        status, _, body = request(port, "GET", path, headers=headers)
        if starting and status == 503:
            return False
        if status != 200:
            raise AssertionError(f"GET {path}: {status} {body[:500]!r}")
        seen.add(json.loads(body)["pid"])
        return len(seen) >= count

    wait_until(enough, f"{count} processes to answer {path}", timeout=30)
    return seen


def _busy_worker(port: int, path: str, pids: set[int]) -> int:
    """
    With one long request in flight on a two-worker route, every other
    request goes to the idle worker (least outstanding requests, round-robin
    among equals): wait until three in a row do, and return the busy one.
    """
    streak: list[int] = []

    def settled() -> bool:
        streak.append(_json(port, path)["pid"])
        return len(streak) >= 3 and len(set(streak[-3:])) == 1

    wait_until(settled, "the long request to reach a worker", timeout=10)
    (busy,) = pids - {streak[-1]}
    return busy


def _in_thread(port: int, path: str) -> tuple[threading.Thread, list[Any]]:
    """
    Start a GET of C{path} in a thread; its (status, headers, body) is put
    in the returned list.
    """
    answers: list[Any] = []

    def run() -> None:
        try:
            answers.append(request(port, "GET", path, timeout=30))
        except Exception as e:
            answers.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, answers


class TwoProjectsTests(SynchronousTestCase):
    """
    A daemon with the blog in the router process at C{/}, the wiki in two
    workers at C{/wiki/}, the blog again in a worker on the host
    C{blog.localhost}, and the environ-dumping app both in two workers
    (C{/env/}) and in the router process (C{/env-here/}).
    """

    server: ClassVar[Txrouter]
    dump: ClassVar[Path]
    runtime: ClassVar[Path]
    startup: ClassVar[list[tuple[int, dict[str, str]]]]

    @classmethod
    def setUpClass(cls) -> None:
        sites = prepared_sites()
        cls.dump = dump = _dump_app()
        cls.runtime = _runtime_dir()
        cls.server = _start(
            f"""
listen: tcp:{{port}}:interface=127.0.0.1
threads: {{min: 2, max: 20}}
drain_timeout: 10
runtime_dir: {cls.runtime}
routes:
  /: {{django: {sites / "blog"}, workers: 0}}
  /wiki/: {{django: {sites / "wiki"}, workers: 2}}
  /env/:
    wsgi: "{_DUMP_MODULE}:application"
    path: {dump}
    workers: 2
    env: {{TXROUTER_E2E_FLAVOUR: in a worker}}
  /env-here/: {{wsgi: "{_DUMP_MODULE}:application", path: {dump}}}
hosts:
  blog.localhost: {{routes: {{/: {{django: {sites / "blog"}, workers: 1}}}}}}
"""
        )
        try:
            cls.startup = []
            port = cls.server.port

            def wiki_ready() -> bool:
                status, headers, _ = request(port, "GET", "/wiki/whoami/")
                cls.startup.append((status, headers))
                return status == 200

            wait_until(wiki_ready, "the wiki to answer", timeout=30)
            cls.all_serving()
        except BaseException:
            _stop(cls.server)
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        _stop(cls.server)
        shutil.rmtree(cls.dump, ignore_errors=True)
        shutil.rmtree(cls.runtime.parent, ignore_errors=True)

    @classmethod
    def all_serving(cls) -> None:
        """
        Wait until every worker answers (some tests kill workers).
        """
        port = cls.server.port
        _pids_of(port, "/wiki/whoami/", 2, starting=True)
        _pids_of(port, "/env/", 2, starting=True)
        _pids_of(port, "/whoami/", 1, starting=True, Host="blog.localhost")

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def router(self) -> int:
        assert self.server.pid is not None
        return self.server.pid

    def test_starting_workers_answer_503(self) -> None:
        """
        Before a route's worker answers, its requests get 503 with
        C{Retry-After}, never a 502 or a hang; then 200.
        """
        statuses = [status for status, _ in self.startup]
        self.assertEqual(statuses[-1], 200)
        self.assertEqual(set(statuses[:-1]) - {503}, set(), statuses)
        for _, headers in self.startup[:-1]:
            self.assertTrue(headers.get("retry-after", "").isdigit(), headers)

    def test_own_settings(self) -> None:
        """
        Each project sees only its own settings: name, title, apps, database.
        """
        blog = _json(self.port, "/whoami/")
        wiki = _json(self.port, "/wiki/whoami/")
        self.assertEqual((blog["project"], wiki["project"]), ("blog", "wiki"))
        self.assertEqual(blog["site_title"], "txrouter example blog")
        self.assertEqual(wiki["site_title"], "txrouter example wiki")
        self.assertIn("django.contrib.admin", blog["installed_apps"])
        self.assertNotIn("django.contrib.admin", wiki["installed_apps"])
        self.assertIn("django.contrib.humanize", wiki["installed_apps"])
        self.assertNotIn("django.contrib.humanize", blog["installed_apps"])
        sites = prepared_sites()
        self.assertEqual(blog["db_name"], str(sites / "blog" / "db.sqlite3"))
        self.assertEqual(wiki["db_name"], str(sites / "wiki" / "db.sqlite3"))

    def test_own_processes(self) -> None:
        """
        The in-process blog runs in the router (the pidfile's PID); the wiki
        and the host's blog run in worker processes that are the router's
        children.
        """
        self.assertEqual(int(self.server.pidfile.read_text()), self.router)
        blog = _json(self.port, "/whoami/")
        wiki = _json(self.port, "/wiki/whoami/")
        hosted = _json(self.port, "/whoami/", Host="blog.localhost")
        self.assertEqual(blog["pid"], self.router)
        self.assertEqual(hosted["project"], "blog")
        self.assertEqual(len({blog["pid"], wiki["pid"], hosted["pid"]}), 3)
        for pid in (wiki["pid"], hosted["pid"]):
            self.assertEqual(_parent(pid), self.router)
            self.assertTrue(_is_worker(pid), _cmdline(pid))

    def test_django_environ(self) -> None:
        """
        In a worker, Django sees the prefix as SCRIPT_NAME (reverse() and
        static() include it), the real client's address, its Host and its
        scheme.
        """
        status, body, _ = _from_client(
            self.port, "/wiki/whoami/", {"Host": "example.localhost:1234"}
        )
        self.assertEqual(status, 200, body)
        seen = json.loads(body)
        self.assertEqual(seen["project"], "wiki")
        self.assertEqual(seen["script_name"], "/wiki")
        self.assertEqual(seen["path_info"], "/whoami/")
        self.assertEqual(seen["path"], "/wiki/whoami/")
        self.assertEqual(seen["reverse_hello"], "/wiki/hello/")
        self.assertEqual(seen["static_url"], "/wiki/static/pages/wiki.css")
        self.assertEqual(seen["remote_addr"], _CLIENT_IP)
        self.assertEqual(seen["host"], "example.localhost:1234")
        self.assertEqual(seen["scheme"], "http")

    def test_wsgi_environ_as_in_process(self) -> None:
        """
        A WSGI app in a worker gets the same environ as in the router
        process, but for SCRIPT_NAME (its own prefix) and REMOTE_PORT (the
        client's port, each request its own).
        """
        headers = {
            "Host": "example.localhost:1234",
            "X-Custom": "kept",
            "X-Forwarded-For": "198.51.100.7",
        }
        answers = {}
        for prefix in ("/env/", "/env-here/"):
            status, body, client_port = _from_client(
                self.port, prefix + "a/b%20c?x=1&y=%2F", headers
            )
            self.assertEqual(status, 200, body)
            answers[prefix] = seen = json.loads(body)
            self.assertEqual(seen.pop("SCRIPT_NAME"), prefix.rstrip("/"))
            self.assertEqual(seen.pop("REMOTE_PORT"), str(client_port))
        worker, here = answers["/env/"], answers["/env-here/"]
        worker.pop("frozen")
        here.pop("frozen")
        self.assertEqual(here.pop("pid"), self.router)
        self.assertEqual(_parent(worker.pop("pid")), self.router)
        # Two workers are several processes (see test_multiprocess_flag).
        worker.pop("wsgi.multiprocess")
        here.pop("wsgi.multiprocess")
        self.assertEqual(worker.pop("flavour"), "in a worker")
        self.assertEqual(here.pop("flavour"), None)
        self.assertEqual(here["REMOTE_ADDR"], _CLIENT_IP)
        self.assertEqual(here["HTTP_X_FORWARDED_FOR"], "198.51.100.7")
        self.assertEqual(worker, here)

    def test_startup_heap_frozen(self) -> None:
        """
        The router (daemonized) and each worker keep what they made at
        startup out of the garbage collector's passes (L{txrouter.heap}):
        Twisted, txrouter and the application are tens of thousands of
        objects.
        """
        for prefix in ("/env/", "/env-here/"):
            self.assertGreater(_json(self.port, prefix)["frozen"], 10_000, prefix)

    def test_http10_client(self) -> None:
        """
        An HTTP/1.0 client's request reaches the app in a worker as
        HTTP/1.0 (C{SERVER_PROTOCOL}), as it does in the router process.
        """
        for prefix in ("/env-here/", "/env/"):
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                s.sendall(f"GET {prefix} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
                answer = b"".join(iter(lambda: s.recv(65536), b""))
            head, _, body = answer.partition(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"HTTP/1.0 200"), answer)
            self.assertEqual(json.loads(body)["SERVER_PROTOCOL"], "HTTP/1.0", prefix)

    def test_no_router_headers(self) -> None:
        """
        No C{X-Txrouter-*} nor forwarding header reaches the application,
        and a client cannot pass for another address with them.
        """
        status, body, _ = _from_client(
            self.port,
            "/env/",
            {
                "X-Txrouter-Client": "203.0.113.9",
                "X-Txrouter-Scheme": "https",
                "X-Txrouter-Token": "0" * 32,
            },
        )
        self.assertEqual(status, 200, body)
        seen = json.loads(body)
        leaked = [
            key
            for key in seen
            if key.startswith(("HTTP_X_TXROUTER", "HTTP_X_FORWARDED"))
            or key in ("HTTP_FORWARDED", "HTTP_VIA")
        ]
        self.assertEqual(leaked, [])
        self.assertEqual(seen["REMOTE_ADDR"], _CLIENT_IP)
        self.assertEqual(seen["wsgi.url_scheme"], "http")

    def test_route_env(self) -> None:
        """
        A route's C{env:} map is the worker's environment, and only its own.
        """
        self.assertEqual(_json(self.port, "/env/")["flavour"], "in a worker")
        wiki = _json(self.port, "/wiki/whoami/")["pid"]
        environ = Path(f"/proc/{wiki}/environ").read_bytes().split(b"\0")
        self.assertFalse([v for v in environ if v.startswith(b"TXROUTER_E2E_")])

    def test_multiprocess_flag(self) -> None:
        """
        An app run by two worker processes is told so:
        C{wsgi.multiprocess} is true (PEP 3333), as it is not in the router.
        """
        self.assertIs(_json(self.port, "/env-here/")["wsgi.multiprocess"], False)
        self.assertIs(_json(self.port, "/env/")["wsgi.multiprocess"], True)

    def test_runtime_dir(self) -> None:
        """
        The worker sockets are in the configured runtime folder, mode 0700.
        """
        self.all_serving()
        mode = stat.S_IMODE(self.runtime.stat().st_mode)
        self.assertEqual(oct(mode), oct(0o700))
        sockets = sorted(self.runtime.glob("*.sock"))
        self.assertEqual(len(sockets), 5, sockets)
        for path in sockets:
            self.assertTrue(stat.S_ISSOCK(path.stat().st_mode), path)

    def test_worker_refuses_strangers(self) -> None:
        """
        A worker answers 403 to a request that does not come from its router,
        with or without a made-up token.
        """
        self.all_serving()
        for path in sorted(self.runtime.glob("*.sock")):
            for extra in (b"", b"X-Txrouter-Token: " + b"0" * 32 + b"\r\n"):
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(10)
                    s.connect(str(path))
                    s.sendall(
                        b"GET /wiki/whoami/ HTTP/1.1\r\nHost: localhost\r\n"
                        b"X-Txrouter-Client: 203.0.113.9\r\n" + extra + b"\r\n"
                    )
                    head = s.recv(100)
                self.assertTrue(head.startswith(b"HTTP/1.1 403"), (path, head))

    def test_static_by_router(self) -> None:
        """
        A worker project's static files are served by the router itself
        (no Django middleware header), under the route's prefix.
        """
        status, headers, body = request(self.port, "GET", "/wiki/static/pages/wiki.css")
        self.assertEqual(status, 200)
        self.assertIn("text/css", headers["content-type"])
        css = prepared_sites() / "wiki" / "staticfiles" / "pages" / "wiki.css"
        self.assertEqual(body, css.read_bytes())
        self.assertNotIn("x-frame-options", headers)
        status, _, _ = request(self.port, "GET", "/wiki/media/readme.txt")
        self.assertEqual(status, 200)

    def test_large_post(self) -> None:
        """
        A 1 MiB POST reaches the worker's Django whole.
        """
        body = os.urandom(1024 * 1024)
        status, _, answer = request(
            self.port,
            "POST",
            "/wiki/echo/",
            body=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        self.assertEqual(status, 200, answer[:500])
        seen = json.loads(answer)
        self.assertEqual(seen["length"], len(body))
        self.assertEqual(seen["sha256"], hashlib.sha256(body).hexdigest())

    def test_chunked_post(self) -> None:
        """
        A chunked POST reaches Django whole both in the router process and
        in a worker, and a WSGI app sees it the same way in both.
        """
        body = os.urandom(200_000)
        digest = hashlib.sha256(body).hexdigest()
        for path in ("/echo/", "/wiki/echo/"):
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                connection.request(
                    "POST",
                    path,
                    body=iter([body[:70_000], body[70_000:]]),
                    headers={"Content-Type": "application/octet-stream"},
                    encode_chunked=True,
                )
                response = connection.getresponse()
                answer = response.read()
            finally:
                connection.close()
            self.assertEqual(response.status, 200, answer[:500])
            seen = json.loads(answer)
            self.assertEqual((seen["length"], seen["sha256"]), (len(body), digest))
        environs = {}
        for prefix in ("/env/", "/env-here/"):
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                connection.request(
                    "POST", prefix, body=iter([b"abc", b"de"]), encode_chunked=True
                )
                response = connection.getresponse()
                environs[prefix] = json.loads(response.read())
            finally:
                connection.close()
        for seen in environs.values():
            self.assertEqual(seen["CONTENT_LENGTH"], "5")
            self.assertNotIn("HTTP_TRANSFER_ENCODING", seen)
            self.assertIs(seen["wsgi.input_terminated"], True)

    def test_spooled_body_passed_as_a_file(self) -> None:
        """
        A body the router spooled to a file reaches a worker as that file's
        descriptor, not as a second copy: the application reads it whole
        from the file. A small body (in memory) is sent as bytes, and an
        in-process application reads the router's own spool.
        """
        big = os.urandom(300_000)
        cases = [
            ("/env/", big, "PassedBody"),
            ("/env/", b"small", "BytesIO"),
            ("/env-here/", big, "FileIO"),  # its temporary file
        ]
        for path, body, kind in cases:
            status, _, answer = request(self.port, "POST", path, body=body)
            self.assertEqual(status, 200, answer[:500])
            seen = json.loads(answer)
            self.assertEqual(seen["input"], kind, path)
            self.assertEqual(
                seen["body"], [len(body), hashlib.sha256(body).hexdigest()], path
            )
            self.assertEqual(seen["CONTENT_LENGTH"], str(len(body)))

    def test_streaming(self) -> None:
        """
        A streamed response comes through the worker chunk by chunk: the
        first line arrives well before the last one is produced.
        """
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", "/wiki/stream/?n=3&delay=0.3")
            response = connection.getresponse()
            self.assertEqual(response.status, 200)
            self.assertEqual(response.readline(), b"chunk 0\n")
            first = time.monotonic()
            self.assertEqual(response.readline(), b"chunk 1\n")
            self.assertEqual(response.readline(), b"chunk 2\n")
            last = time.monotonic()
            self.assertEqual(response.read(), b"")
        finally:
            connection.close()
        self.assertGreater(last - first, 0.45)

    def test_two_workers(self) -> None:
        """
        C{workers: 2} is two processes: 40 requests, eight at a time, are
        answered by exactly two PIDs, both the router's children.
        """
        self.all_serving()
        pids: list[int] = []
        errors: list[BaseException] = []

        def client() -> None:
            try:
                for _ in range(5):
                    pids.append(_json(self.port, "/wiki/whoami/")["pid"])
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(len(pids), 40)
        self.assertEqual(len(set(pids)), 2, pids)
        for pid in set(pids):
            self.assertNotEqual(pid, self.router)
            self.assertEqual(_parent(pid), self.router)

    def test_kill_worker_mid_request(self) -> None:
        """
        SIGKILL of the worker that holds a request: that request gets 502
        (it is not run again elsewhere), and a new worker answers within a
        few seconds.
        """
        pids = _pids_of(self.port, "/wiki/whoami/", 2, starting=True)
        # Leave idle kept-alive connections to both workers in the router's
        # pool, so the slow request rides one, as most requests do.
        warm = [_in_thread(self.port, "/wiki/whoami/") for _ in range(8)]
        for warming, _ in warm:
            warming.join(30)
        self.assertEqual({answer[0][0] for _, answer in warm}, {200})
        thread, answers = _in_thread(self.port, "/wiki/slow/?s=5")
        self.addCleanup(thread.join, 30)
        busy = _busy_worker(self.port, "/wiki/whoami/", pids)
        killed = time.monotonic()
        os.kill(busy, signal.SIGKILL)
        thread.join(30)
        self.assertEqual(len(answers), 1)
        status, _, body = answers[0]
        self.assertEqual(
            (status, body[:15]),
            (502, b"502 Bad Gateway"),
            f"after {time.monotonic() - killed:.1f}s",
        )
        new = self.replaced(busy, pids)
        self.assertEqual(_pids_of(self.port, "/wiki/whoami/", 2), pids - {busy} | {new})

    def test_killed_worker_replaced(self) -> None:
        """
        SIGKILL of a worker: every request is still answered, by the other
        worker, until a new worker, the router's child, answers too.
        """
        pids = _pids_of(self.port, "/wiki/whoami/", 2, starting=True)
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        new = self.replaced(victim, pids)
        self.assertEqual(
            _pids_of(self.port, "/wiki/whoami/", 2), pids - {victim} | {new}
        )

    def replaced(self, killed: int, pids: set[int]) -> int:
        """
        Once the router has reaped the C{killed} worker, ask the wiki until a
        worker not in C{pids} answers; every request must succeed meanwhile.

        @return: the new worker's PID.
        """
        wait_until(
            lambda: not Path(f"/proc/{killed}").exists(),
            "the router to reap its killed worker",
            timeout=10,
        )
        seen: set[int] = set()

        def new_worker() -> bool:
            seen.add(_json(self.port, "/wiki/whoami/")["pid"])
            return bool(seen - pids)

        wait_until(new_worker, "a new wiki worker", timeout=10)
        self.assertNotIn(killed, seen)
        (new,) = seen - pids
        self.assertEqual(_parent(new), self.router)
        self.assertTrue(_is_worker(new), _cmdline(new))
        return new


class BrokenProjectTests(SynchronousTestCase):
    """
    A daemon with a project whose settings raise at C{/broken/}, beside the
    blog (in the router) and the wiki (in a worker).
    """

    server: ClassVar[Txrouter]
    broken: ClassVar[Path]
    started: ClassVar[float]

    @classmethod
    def setUpClass(cls) -> None:
        sites = prepared_sites()
        cls.broken = broken = Path(tempfile.mkdtemp(prefix="txrouter-broken-")) / "wiki"
        shutil.copytree(sites / "wiki", broken)
        with (broken / "wiki" / "settings.py").open("a", encoding="utf-8") as f:
            f.write('\nraise RuntimeError("broken on purpose")\n')
        cls.server = _start(
            f"""
listen: tcp:{{port}}:interface=127.0.0.1
drain_timeout: 10
routes:
  /: {{django: {sites / "blog"}, workers: 0}}
  /wiki/: {{django: {sites / "wiki"}, workers: 1}}
  /broken/: {{django: {broken}, workers: 1}}
"""
        )
        cls.started = time.monotonic()

    @classmethod
    def tearDownClass(cls) -> None:
        _stop(cls.server)
        shutil.rmtree(cls.broken.parent, ignore_errors=True)

    def assert_unavailable(self, path: str) -> None:
        """
        C{path} answers 503 with C{Retry-After}, at once.
        """
        before = time.monotonic()
        status, headers, body = request(self.server.port, "GET", path, timeout=5)
        self.assertEqual(status, 503, body)
        self.assertTrue(headers.get("retry-after", "").isdigit(), headers)
        self.assertLess(time.monotonic() - before, 2.0)

    def test_route_answers_503(self) -> None:
        """
        For two seconds, every request to the broken route gets 503 with
        C{Retry-After}, promptly.
        """
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            self.assert_unavailable("/broken/")
            self.assert_unavailable("/broken/whoami/?x=1")

    def test_others_serve(self) -> None:
        """
        The other projects keep serving beside the broken one.
        """
        wait_until(
            lambda: request(self.server.port, "GET", "/wiki/whoami/")[0] == 200,
            "the wiki to answer",
            timeout=30,
        )
        self.assertEqual(_json(self.server.port, "/wiki/whoami/")["project"], "wiki")
        self.assertEqual(_json(self.server.port, "/whoami/")["project"], "blog")
        self.assert_unavailable("/broken/")

    def test_log_names_cause(self) -> None:
        """
        The log names the broken route and the cause.
        """
        wait_until(
            lambda: "RuntimeError: broken on purpose" in self.server.log(),
            "the cause in the log",
            timeout=15,
        )
        lines = [
            line
            for line in self.server.log().splitlines()
            if "RuntimeError: broken on purpose" in line
        ]
        self.assertTrue(all("/broken/" in line for line in lines), lines)

    def test_restarts_back_off(self) -> None:
        """
        The broken worker is restarted with back-off, not in a tight loop:
        over six seconds it is started a few times, but no more than five.
        """
        wait_until(
            lambda: time.monotonic() - self.started >= 6.5,
            "six seconds of the broken worker",
            timeout=30,
        )
        attempts = self.server.log().count("RuntimeError: broken on purpose")
        self.assertGreaterEqual(attempts, 2, self.server.log())
        self.assertLessEqual(attempts, 5, self.server.log())
        self.assert_unavailable("/broken/")


class LifecycleTests(SynchronousTestCase):
    """
    No worker process outlives its router.
    """

    def test_sigterm_drains(self) -> None:
        """
        SIGTERM while a worker holds a request: the request completes with
        200, then the router exits and leaves no worker and no socket.
        """
        runtime = _runtime_dir()
        self.addCleanup(shutil.rmtree, runtime.parent, ignore_errors=True)
        wiki = prepared_sites() / "wiki"
        server = _start(
            f"""
listen: tcp:{{port}}:interface=127.0.0.1
drain_timeout: 20
runtime_dir: {runtime}
routes:
  /wiki/: {{django: {wiki}, workers: 2}}
"""
        )
        assert server.pid is not None
        workers: set[int] = set()
        self.addCleanup(lambda: _stop(server, workers))
        pids = _pids_of(server.port, "/wiki/whoami/", 2, starting=True)
        workers |= _workers_of(server.pid)
        self.assertEqual(workers, pids)
        self.assertEqual(len(list(runtime.glob("*.sock"))), 2)
        thread, answers = _in_thread(server.port, "/wiki/slow/?s=2")
        self.addCleanup(thread.join, 30)
        _busy_worker(server.port, "/wiki/whoami/", pids)
        server.terminate()
        thread.join(30)
        self.assertEqual(len(answers), 1)
        self.assertEqual(answers[0][0], 200, answers)
        self.assertEqual(answers[0][2], b"slept")
        wait_until(lambda: _gone(server.pid), "the router to exit", timeout=30)
        self.assertEqual([pid for pid in workers if not _gone(pid)], [])
        self.assertEqual(list(runtime.glob("*.sock")), [])
        self.assertFalse(server.pidfile.exists())

    def test_sigterm_within_drain_timeout(self) -> None:
        """
        SIGTERM while views in the router process and in a worker run past
        C{drain_timeout}: the router is gone within C{drain_timeout} + 2 s,
        every stage (drain, workers, thread pool) included.
        """
        sites = prepared_sites()
        server = _start(
            f"""
listen: tcp:{{port}}:interface=127.0.0.1
drain_timeout: 2
routes:
  /: {{django: {sites / "blog"}, workers: 0}}
  /wiki/: {{django: {sites / "wiki"}, workers: 1}}
"""
        )
        assert server.pid is not None
        workers: set[int] = set()
        self.addCleanup(lambda: _stop(server, workers))
        workers |= _pids_of(server.port, "/wiki/whoami/", 1, starting=True)
        slow = [_in_thread(server.port, p) for p in ("/slow/?s=25", "/wiki/slow/?s=25")]
        for thread, _ in slow:
            self.addCleanup(thread.join, 30)
        wait_until(
            lambda: all(sleeping(pid) for pid in [server.pid, *workers]),
            "both slow views to be running",
        )
        started = time.monotonic()
        server.terminate()
        wait_until(lambda: _gone(server.pid), "the router to exit", timeout=15)
        self.assertLess(time.monotonic() - started, 2 + 2)
        wait_until(lambda: all(_gone(pid) for pid in workers), "the worker to exit")

    def test_router_killed(self) -> None:
        """
        When the daemonized router is SIGKILLed, its workers exit by
        themselves within a few seconds.
        """
        dump = _dump_app()
        runtime = _runtime_dir()
        self.addCleanup(shutil.rmtree, dump, ignore_errors=True)
        self.addCleanup(shutil.rmtree, runtime.parent, ignore_errors=True)
        server = _start(
            f"""
listen: tcp:{{port}}:interface=127.0.0.1
runtime_dir: {runtime}
routes:
  /env/: {{wsgi: "{_DUMP_MODULE}:application", path: {dump}, workers: 2}}
"""
        )
        self.addCleanup(_stop, server)
        assert server.pid is not None
        workers = _pids_of(server.port, "/env/", 2, starting=True)
        self.addCleanup(_kill_leftovers, workers)
        self.assertEqual(_workers_of(server.pid), workers)
        os.kill(server.pid, signal.SIGKILL)
        wait_until(lambda: _gone(server.pid), "the router to die", timeout=10)
        wait_until(
            lambda: all(_gone(pid) for pid in workers),
            "the orphaned workers to exit",
            timeout=6,
        )

    def test_router_killed_while_worker_starts(self) -> None:
        """
        A worker still importing its application when its router is
        SIGKILLed exits within about a second, not when its import ends.
        """
        folder = Path(tempfile.mkdtemp(prefix="txrouter-slowapp-"))
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        (folder / "slowapp.py").write_text(
            "import time\ntime.sleep(60)\n"
            "def application(environ, start_response):\n    return []\n"
        )
        server = _start(
            f"""
listen: tcp:{{port}}:interface=127.0.0.1
routes:
  /slow/: {{wsgi: "slowapp:application", path: {folder}, workers: 1}}
"""
        )
        self.addCleanup(_stop, server)
        assert server.pid is not None
        wait_until(lambda: _workers_of(server.pid), "the worker to start")
        workers = _workers_of(server.pid)
        self.addCleanup(_kill_leftovers, workers)
        wait_until(lambda: all(sleeping(pid) for pid in workers), "the worker's import")
        os.kill(server.pid, signal.SIGKILL)
        wait_until(lambda: _gone(server.pid), "the router to die", timeout=10)
        wait_until(
            lambda: all(_gone(pid) for pid in workers),
            "the starting worker to exit",
            timeout=2,
        )


class CheckCommandTests(SynchronousTestCase):
    """
    C{txrouter check} and the C{workers} default for several Django projects.
    """

    def check(self, routes: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        folder = Path(tempfile.mkdtemp(prefix="txrouter-check-"))
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        path = folder / "routes.yaml"
        path.write_text(textwrap.dedent(routes), encoding="utf-8")
        python_path = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p
        )
        result = subprocess.run(
            [sys.executable, "-m", "txrouter.cli", "check", str(path)],
            cwd=folder,
            env={**os.environ, "PYTHONPATH": python_path},
            capture_output=True,
            text=True,
            timeout=120,
        )
        return result, path

    def test_two_projects_default_to_workers(self) -> None:
        """
        Two Django projects without C{workers} pass the check, each with one
        worker by default.
        """
        sites = prepared_sites()
        result, path = self.check(
            f"""
            listen: tcp:8080:interface=127.0.0.1
            routes:
              /: {{django: {sites / "blog"}}}
              /wiki/: {{django: {sites / "wiki"}}}
            """
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("OK", result.stdout)
        routes = load_config(path).routes()
        workers = [r.workers for r in routes if isinstance(r, DjangoRoute)]
        self.assertEqual(workers, [1, 1])

    def test_two_projects_in_process(self) -> None:
        """
        Two Django projects with C{workers: 0} fail the check, which names
        C{workers}.
        """
        sites = prepared_sites()
        result, _ = self.check(
            f"""
            listen: tcp:8080:interface=127.0.0.1
            routes:
              /: {{django: {sites / "blog"}, workers: 0}}
              /wiki/: {{django: {sites / "wiki"}, workers: 0}}
            """
        )
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertIn("workers", result.stderr)
        self.assertIn("routes['/wiki/']", result.stderr)
