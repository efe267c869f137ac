"""
End to end: the raw-request corpus (C{tests/corpus/}) sent over real
sockets to one daemonized router, on three routes serving the same
recording app (L{tests.corpusapp}): in the router process (C{/inp/}), in a
worker process (C{/wrk/}), and a C{proxy:} route to a recording upstream
(C{/prx/}, L{tests.upstreams.RecordingUpstream}).

Each case's bytes go out in one C{sendall}; the answers are read until the
case's count has come or the router closes. The statuses, whether (and
what) the app or the upstream got, and the connection's state must be what
the case says: after a refusal the router closes; after a valid request, a
GET sent next on the same connection is served. A closed case is followed
by a request on a new connection, so that anything the router still sent
on to the app arrives before what reached it is counted.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.corpus import (
    CASES,
    FOLLOW_UP,
    LIMITS,
    ROUTES,
    Answer,
    Case,
    follow_up,
    follow_up_problems,
    parse_answers,
    problems,
    record_from_upstream,
)
from tests.support import Txrouter, request, stop_daemon, wait_until
from tests.upstreams import RecordingUpstream, _Handler

pytestmark = pytest.mark.e2e

#: Seconds a socket waits for the router: generous on a busy machine; no
#: expected outcome depends on it.
TIMEOUT = 15.0

_APP = Path(__file__).resolve().with_name("corpusapp.py")
#: The paths of the requests the test adds to a case's.
_OWN_PATHS = (FOLLOW_UP, "/barrier")

_ROUTES_FILE = """\
listen: tcp:{{port}}:interface=127.0.0.1
limits: {limits}
routes:
  /inp/: {{wsgi: "corpusapp:application", path: {folder}, workers: 0}}
  /wrk/: {{wsgi: "corpusapp:application", path: {folder}, workers: 1}}
  /prx/: {{proxy: "{upstream}/"}}
"""


class _AnyMethod(_Handler):
    """
    The recording upstream's handler, for every method: the stock one
    answers only the common ones, and a 501 it does not record for the
    others (C{TRACE}, C{CONNECT}), which would hide that they got there.
    """

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)


def _children(pid: int) -> list[int]:
    """
    The processes whose parent is C{pid} (a router's workers).
    """
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@dataclass
class CorpusRouter:
    """
    The running router, its upstream, and what each has seen so far.
    """

    server: Txrouter
    upstream: RecordingUpstream
    folder: Path
    _offset: int = 0
    _upstream_seen: int = 0

    def take(self) -> list[dict[str, Any]]:
        """
        The records of the requests that reached the app (on any route) or
        the upstream since the last call.
        """
        path = self.folder / "seen.jsonl"
        data = path.read_bytes()[self._offset :] if path.exists() else b""
        complete = data[: data.rfind(b"\n") + 1]  # a line being written waits
        self._offset += len(complete)
        records = [json.loads(line) for line in complete.splitlines()]
        seen = self.upstream.seen()
        records += [
            record_from_upstream(s.method, s.target, s.headers, s.body)
            for s in seen[self._upstream_seen :]
        ]
        self._upstream_seen = len(seen)
        return records


@pytest.fixture(scope="module")
def corpus_router() -> Iterator[CorpusRouter]:
    """
    One daemonized router for the whole module, with its three routes
    ready, stopped (with its workers and the upstream) at the end.
    """
    folder = Path(tempfile.mkdtemp(prefix="txrouter-corpus-"))
    shutil.copy(_APP, folder / "corpusapp.py")
    upstream = RecordingUpstream().start()
    # RecordingUpstream has no option for this: its server's handler class
    # is swapped before any request.
    upstream._server.RequestHandlerClass = _AnyMethod
    limits = "{" + ", ".join(f"{k}: {v}" for k, v in LIMITS.items()) + "}"
    server = Txrouter(
        _ROUTES_FILE.format(limits=limits, folder=folder, upstream=upstream.url)
    )
    try:
        server.start()
        wait_until(
            lambda: request(server.port, "GET", "/wrk/ready")[0] == 200,
            "the worker route to answer",
            timeout=60,
        )
        router = CorpusRouter(server, upstream, folder)
        router.take()
        yield router
    finally:
        workers = _children(server.pid) if server.pid is not None else []
        stop_daemon(server, workers, folder, upstream.stop)


def _read_answers(
    sock: socket.socket, head: bool, count: int, closes: Callable[[int], bool]
) -> tuple[list[Answer], bytes, bool]:
    """
    Read until C{count} answers have come (and then, if C{closes} says so
    of the last status, until the router closes), or until it closes.

    @return: the answers, the bytes after them, and whether it closed.
    """
    data, eof = b"", False
    while True:
        answers, rest = parse_answers(data, head, eof)
        if eof:
            return answers, rest, True
        if len(answers) >= count and not closes(answers[-1].status):
            return answers, rest, False
        try:
            more = sock.recv(65536)
        except TimeoutError:
            return answers, rest + b"(no more within the timeout)", False
        except ConnectionResetError:
            more = b""
        eof = not more
        data += more


@pytest.mark.usefixtures("_attach")
class CorpusE2ETests(SynchronousTestCase):
    """
    Every corpus case on every route of one router; the methods are made
    below, one per case and route: C{test_ROUTE_CASE}.
    """

    router: CorpusRouter

    def connect(self) -> socket.socket:
        sock = socket.create_connection(
            ("127.0.0.1", self.router.server.port), timeout=TIMEOUT
        )
        self.addCleanup(sock.close)
        return sock

    def barrier(self, route: str) -> None:
        """
        A request to C{route} on a new connection, answered.
        """
        sock = self.connect()
        sock.sendall(
            b"GET /%s/barrier HTTP/1.1\r\nHost: example.com\r\n"
            b"Connection: close\r\n\r\n" % route.encode()
        )
        answers, _, _ = _read_answers(sock, False, 1, lambda status: True)
        self.assertEqual([a.status for a in answers], [200], "the barrier request")

    def check(self, case: Case, route: str) -> None:
        """
        Send C{case} to C{route} and fail with every problem of its run.
        """
        late = [r for r in self.router.take() if r["path"] not in _OWN_PATHS]
        self.assertEqual(late, [], "requests reached the app after their test")
        sock = self.connect()
        sock.sendall(case.raw_for(route))
        answers, rest, closed = _read_answers(
            sock, case.head, len(case.allowed), case.closes
        )
        if closed:
            self.barrier(route)
        else:
            with contextlib.suppress(OSError):
                sock.sendall(follow_up(route))
            more = _read_answers(sock, False, 1, lambda status: False)
        records = self.router.take()
        reached = [r for r in records if r["path"] not in _OWN_PATHS]
        found = problems(case, route, answers, rest, reached, closed)
        if not closed and not found:
            mine = [r for r in records if r["path"] == FOLLOW_UP]
            found += follow_up_problems(more[0], more[1], mine)
        self.assertEqual(found, [], f"{case.name} on /{route}/: {case.why}")


@pytest.fixture(scope="class")
def _attach(request: pytest.FixtureRequest, corpus_router: CorpusRouter) -> None:
    """
    Give the test class the module's router (trial classes take no
    fixture arguments).
    """
    request.cls.router = corpus_router


def _method(case: Case, route: str) -> Callable[[CorpusE2ETests], None]:
    def test(self: CorpusE2ETests) -> None:
        self.check(case, route)

    test.__doc__ = f"{case.name} on /{route}/: {case.why}"
    bug = case.bug_in(f"e2e-{route}", "e2e")
    if bug is not None:
        return pytest.mark.xfail(strict=True, reason=bug)(test)
    return test


for _case in CASES.values():
    for _route in ROUTES:
        _name = f"test_{_route}_{_case.name.replace('-', '_')}"
        setattr(CorpusE2ETests, _name, _method(_case, _route))
del _case, _route, _name
