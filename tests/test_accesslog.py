"""
Unit tests of L{txrouter.accesslog}: the JSON line of each kind of route
through a real L{RouterSite} over a route table built from a routes file
(worker and upstream connections in memory), the client address behind
trusted proxies, escaping and bounds, the combined format as Twisted writes
it, C{access_log_format} in the reader and the schema, a format change on
reload, and SIGUSR1.
"""

from __future__ import annotations

import json
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from twisted.internet import _producer_helpers
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Cooperator
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import log as legacy_log
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from tests.support import APPS
from tests.test_proxy import Client, FakeEndpoint
from tests.test_wsgi import ImmediateReactor
from txrouter.accesslog import (
    COMBINED,
    FORMATS,
    JSON,
    MAX_LINE,
    VALUE_LIMITS,
    AccessLog,
    AccessLogService,
    RouteTag,
    client_address,
    json_line,
)
from txrouter.build import Engines, build_table
from txrouter.config import load_config
from txrouter.errors import ConfigError
from txrouter.forwarding import TrustedProxies
from txrouter.proxyclient import ProxyClient
from txrouter.reloader import _cannot_change_in_place
from txrouter.routetable import RouteKey
from txrouter.schema import routes_schema
from txrouter.site import RouterSite
from txrouter.upstream import Upstream
from txrouter.workers import WorkerMonitor

pytestmark = pytest.mark.unit

PEER = IPv4Address("TCP", "203.0.113.7", 40000)
#: 2023-11-14T22:13:20Z
EPOCH = 1_700_000_000.0

ROUTES = """\
listen: tcp:8080:interface=127.0.0.1
access_log: access.log
access_log_format: {format}
trusted_proxies: ["10.0.0.0/8"]
routes:
  /: {{wsgi: "probe:application", path: {apps}}}
  /wiki/: {{wsgi: "probe:application", path: {apps}, workers: 1}}
  /api/: {{proxy: "http://127.0.0.1:9000/v1/"}}
  /files/: {{static: files}}
  /old/: {{redirect: /new/, status: 301}}
hosts:
  shop.example.com: {{routes: {{/: {{static: files}}}}}}
  "*.example.org": {{routes: {{/only/: {{static: files}}}}}}
"""


class InlinePool:
    """
    A thread pool that runs each call at once, in the caller's thread.
    """

    max = 2

    def callInThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


def get(path: bytes, host: bytes = b"example.com", *headers: bytes) -> bytes:
    """
    Raw bytes of a bodiless HTTP/1.1 request.
    """
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: " + host, *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class World:
    """
    A router built from L{ROUTES}, its site logging to a file, the clock
    at L{EPOCH}; the worker of C{/wiki/} (PID 4242) and the upstream of
    C{/api/} answer in memory, as the test makes them.
    """

    def __init__(self, test: SynchronousTestCase, format: str = JSON) -> None:
        self.folder = Path(test.mktemp()).resolve()
        (self.folder / "files").mkdir(parents=True)
        (self.folder / "files" / "a.txt").write_bytes(b"hello, file\n")
        path = self.folder / "routes.yaml"
        path.write_text(ROUTES.format(format=format, apps=APPS))
        self.config = config = load_config(path)
        self.reactor = reactor = ImmediateReactor()
        reactor.advance(EPOCH)
        # Static files are sent by a pull producer, which Twisted drives
        # with the global cooperator: here, one step a turn of this clock.
        cooperator = Cooperator(
            terminationPredicateFactory=lambda: lambda: True,
            scheduler=lambda step: reactor.callLater(0, step),
        )
        test.patch(_producer_helpers, "cooperate", cooperator.cooperate)
        engines = Engines(
            reactor=reactor,
            pool=InlinePool(),  # type: ignore[arg-type]
            client=ProxyClient(reactor),
            trusted=TrustedProxies(config.trusted_proxies),
            monitor=WorkerMonitor(reactor, kill_time=1),
            runtime_dir=str(self.folder / "run"),
            drain_timeout=1,
        )
        table = build_table(config, engines)
        wiki = table.routes[RouteKey("", "/wiki/")].workers
        assert wiki is not None
        [self.worker] = wiki.group.members
        self.worker.pid = 4242
        self.worker.ready = True
        self.worker_end = self.worker.endpoint = FakeEndpoint(reactor)
        api = table.routes[RouteKey("", "/api/")].upstreams
        assert api is not None
        [upstream] = api.members
        self.upstream_end = upstream.endpoint = FakeEndpoint(reactor)
        assert config.access_log is not None
        self.log_path = Path(config.access_log)
        self.access_log = AccessLog(
            config.access_log, config.access_log_format, engines.trusted, reactor
        )
        self.access_log.open()
        test.addCleanup(self.access_log.close)
        self.site = RouterSite(table.router, reactor, self.access_log, config.limits)

    def send(self, raw: bytes, peer: Any = PEER) -> Client:
        """
        A new client connection from C{peer} that sends C{raw}.
        """
        client = Client(self, peer)  # type: ignore[arg-type]
        client.send(raw)
        return client

    def text(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def lines(self) -> list[dict[str, Any]]:
        """
        The access log's lines so far, each parsed as JSON.
        """
        return [json.loads(line) for line in self.text().splitlines()]

    def last(self) -> dict[str, Any]:
        return self.lines()[-1]


class JsonLineTests(SynchronousTestCase):
    """
    A JSON line has every field, in order, with the right types.
    """

    def test_fields(self) -> None:
        """
        An in-process request: time in UTC with milliseconds, the client,
        the Host, method, path and query as sent, status, body bytes,
        duration, route and who served it, referer and user agent.
        """
        world = World(self)
        world.reactor.advance(0.25)
        world.send(
            get(b"/environ?x=1&y=%20", b"Example.COM:8080", b"User-Agent: probe/1")
        )
        line = world.last()
        self.assertEqual(
            list(line),
            [
                "time",
                "client",
                "host",
                "method",
                "path",
                "protocol",
                "status",
                "body_bytes",
                "duration",
                "route",
                "served_by",
                "worker_pid",
                "upstream",
                "referer",
                "user_agent",
            ],
        )
        body = world.text().splitlines()[-1]
        self.assertNotIn(" ", body.replace("probe/1", "").replace("in process", ""))
        self.assertEqual(line["time"], "2023-11-14T22:13:20.250Z")
        self.assertEqual(line["client"], "203.0.113.7")
        self.assertEqual(line["host"], "Example.COM:8080")
        self.assertEqual(line["method"], "GET")
        self.assertEqual(line["path"], "/environ?x=1&y=%20")
        self.assertEqual(line["protocol"], "HTTP/1.1")
        self.assertEqual(line["status"], 200)
        self.assertGreater(line["body_bytes"], 0)
        self.assertEqual(line["duration"], 0.0)
        self.assertEqual(line["route"], {"host": "", "prefix": "/"})
        self.assertEqual(line["served_by"], "in process")
        self.assertIsNone(line["worker_pid"])
        self.assertIsNone(line["upstream"])
        self.assertIsNone(line["referer"])
        self.assertEqual(line["user_agent"], "probe/1")

    def test_duration(self) -> None:
        """
        The duration runs from routing to the end of the response, and the
        time is the end's.
        """
        world = World(self)
        world.send(get(b"/api/slow"))
        world.reactor.advance(1.5)
        [connection] = world.upstream_end.connections
        connection.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        line = world.last()
        self.assertEqual(line["duration"], 1.5)
        self.assertEqual(line["time"], "2023-11-14T22:13:21.500Z")
        self.assertEqual(line["body_bytes"], 2)

    def test_one_line_per_request(self) -> None:
        """
        Each answered request is one line, ended by a newline, in order.
        """
        world = World(self)
        for n in range(5):
            world.send(get(b"/files/a.txt?n=%d" % n))
        text = world.text()
        self.assertTrue(text.endswith("\n"))
        self.assertEqual(
            [line["path"] for line in world.lines()],
            [f"/files/a.txt?n={n}" for n in range(5)],
        )


class ServedByTests(SynchronousTestCase):
    """
    Each line names the route (its table and prefix as in routes.yaml) and
    who served the request.
    """

    def setUp(self) -> None:
        self.world = World(self)

    def served(self) -> tuple[Any, ...]:
        line = self.world.last()
        return (
            line["status"],
            line["route"],
            line["served_by"],
            line["worker_pid"],
            line["upstream"],
        )

    def test_worker(self) -> None:
        """
        A worker route: the worker's PID.
        """
        self.world.send(get(b"/wiki/Page"))
        [connection] = self.world.worker_end.connections
        connection.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(
            self.served(),
            (200, {"host": "", "prefix": "/wiki/"}, "worker", 4242, None),
        )

    def test_no_worker_ready(self) -> None:
        """
        A worker route with no worker ready answers 503: no PID.
        """
        self.world.worker.ready = False
        self.world.send(get(b"/wiki/Page"))
        self.assertEqual(
            self.served(),
            (503, {"host": "", "prefix": "/wiki/"}, "worker", None, None),
        )

    def test_upstream(self) -> None:
        """
        A proxy route: the upstream's URL as routes.yaml names it.
        """
        self.world.send(get(b"/api/x?q=1"))
        [connection] = self.world.upstream_end.connections
        connection.respond(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(
            self.served(),
            (
                201,
                {"host": "", "prefix": "/api/"},
                "upstream",
                None,
                "http://127.0.0.1:9000/v1/",
            ),
        )

    def test_upstream_down(self) -> None:
        """
        An upstream that cannot be reached: its URL still says which.
        """
        self.world.upstream_end.refuse = ConnectionRefusedError()
        self.world.send(get(b"/api/x"))
        status, _, served, _, upstream = self.served()
        self.assertEqual(
            (status, served, upstream), (502, "upstream", "http://127.0.0.1:9000/v1/")
        )

    def test_in_process(self) -> None:
        """
        An application in the router process.
        """
        self.world.send(get(b"/environ"))
        self.assertEqual(
            self.served(), (200, {"host": "", "prefix": "/"}, "in process", None, None)
        )

    def test_static(self) -> None:
        """
        A static folder, on a host of its own.
        """
        self.world.send(get(b"/files/a.txt"))
        self.assertEqual(
            self.served(),
            (200, {"host": "", "prefix": "/files/"}, "static", None, None),
        )
        self.world.send(get(b"/a.txt", b"Shop.Example.com"))
        self.assertEqual(
            self.served(),
            (200, {"host": "shop.example.com", "prefix": "/"}, "static", None, None),
        )

    def test_redirect(self) -> None:
        """
        A redirect route; and a route's prefix without its slash, which the
        router redirects itself.
        """
        self.world.send(get(b"/old/x"))
        self.assertEqual(
            self.served(),
            (301, {"host": "", "prefix": "/old/"}, "redirect", None, None),
        )
        self.world.send(get(b"/wiki"))
        self.assertEqual(
            self.served(),
            (301, {"host": "", "prefix": "/wiki/"}, "redirect", None, None),
        )

    def test_no_route(self) -> None:
        """
        A request no route takes (404): no route, no server.
        """
        self.world.send(get(b"/elsewhere", b"a.example.org"))
        self.assertEqual(self.served(), (404, None, None, None, None))

    def test_refused_at_the_edge(self) -> None:
        """
        A request refused before routing (400): no route, no duration.
        """
        self.world.send(get(b"/files/a.txt", b"a.example", b"Host: b.example"))
        line = self.world.last()
        self.assertEqual((line["status"], line["route"]), (400, None))
        self.assertIsNone(line["duration"])
        self.assertIsNone(line["served_by"])


class ClientAddressTests(SynchronousTestCase):
    """
    L{client_address}: the address the router believes.
    """

    TRUSTED = TrustedProxies(["10.0.0.0/8", "2001:db8::/32"])

    CASES: list[tuple[str, Any, list[bytes], str | None]] = [
        ("untrusted peer", PEER, [b"198.51.100.1"], "203.0.113.7"),
        ("trusted peer, no header", IPv4Address("TCP", "10.0.0.5", 1), [], "10.0.0.5"),
        (
            "trusted peer: rightmost untrusted hop",
            IPv4Address("TCP", "10.0.0.5", 1),
            [b"198.51.100.1, 10.0.0.9"],
            "198.51.100.1",
        ),
        (
            "hops left of an untrusted one are not believed",
            IPv4Address("TCP", "10.0.0.5", 1),
            [b"6.6.6.6, 198.51.100.1, 10.1.1.1"],
            "198.51.100.1",
        ),
        (
            "several header lines, in order",
            IPv4Address("TCP", "10.0.0.5", 1),
            [b"198.51.100.1", b"10.0.0.7"],
            "198.51.100.1",
        ),
        (
            "every hop trusted: the leftmost",
            IPv4Address("TCP", "10.0.0.5", 1),
            [b"10.0.0.9, 10.0.0.8"],
            "10.0.0.9",
        ),
        (
            "empty hops are skipped",
            IPv4Address("TCP", "10.0.0.5", 1),
            [b" , 198.51.100.1 ,, "],
            "198.51.100.1",
        ),
        (
            "IPv6 trusted peer",
            IPv6Address("TCP", "2001:db8::1", 1),
            [b"2001:db8::2, 2001:db8::1"],
            "2001:db8::2",
        ),
        (
            "IPv4 peer seen through a dual-stack listener",
            IPv6Address("TCP", "::ffff:10.0.0.5", 1),
            [b"198.51.100.1"],
            "198.51.100.1",
        ),
        (
            "a hop that is not an address is what the proxy said",
            IPv4Address("TCP", "10.0.0.5", 1),
            [b"unknown"],
            "unknown",
        ),
        ("UNIX-socket peer", UNIXAddress(b"/run/x.sock"), [b"198.51.100.1"], None),
        (
            "a long hop is cut",
            IPv4Address("TCP", "10.0.0.5", 1),
            [b"x" * 1000],
            "x" * VALUE_LIMITS["client"] + "\u2026",
        ),
    ]

    def test_table(self) -> None:
        """
        Each case gives its address.
        """
        for name, peer, values, expected in self.CASES:
            request = DummyRequest([b""])
            request.client = peer
            request.requestHeaders = Headers({b"X-Forwarded-For": values})
            self.assertEqual(client_address(request, self.TRUSTED), expected, name)

    def test_through_the_site(self) -> None:
        """
        A JSON line names the client behind the routes file's trusted
        proxies.
        """
        world = World(self)
        world.send(
            get(b"/files/a.txt", b"a", b"X-Forwarded-For: 198.51.100.1, 10.2.3.4"),
            IPv4Address("TCP", "10.0.0.5", 1234),
        )
        self.assertEqual(world.last()["client"], "198.51.100.1")
        world.send(get(b"/files/a.txt", b"a", b"X-Forwarded-For: 198.51.100.1"))
        self.assertEqual(world.last()["client"], "203.0.113.7")


class EscapingTests(SynchronousTestCase):
    """
    Values from the request cannot break a line, forge a field or make a
    line long.
    """

    def test_escaped(self) -> None:
        """
        Quotes, backslashes, tabs, UTF-8 and bytes that are not UTF-8 in
        headers are escaped: the line stays one line of ASCII, and reads
        back as sent (non-UTF-8 bytes as C{\\xNN}).
        """
        world = World(self)
        agent = b'x", "status": 999, "a\\b\tc \xc3\xa9 \xff'
        world.send(
            get(b"/files/a.txt", b"a", b"User-Agent: " + agent, b"Referer: \xfe")
        )
        raw = world.log_path.read_bytes()
        self.assertEqual(raw.count(b"\n"), 1)
        raw.decode("ascii")  # every non-ASCII character is escaped
        line = world.last()
        self.assertEqual(line["status"], 200)
        self.assertEqual(line["user_agent"], 'x", "status": 999, "a\\b\tc é \\xff')
        self.assertEqual(line["referer"], "\\xfe")

    def test_bounded(self) -> None:
        """
        A long path, Host and user agent are cut to their limits, each
        marked as cut.
        """
        world = World(self)
        path = b"/files/" + b"a" * 6000
        world.send(get(path, b"h" * 1000, b"User-Agent: " + b"u" * 4000))
        line = world.last()
        self.assertEqual(line["path"], path[: VALUE_LIMITS["path"]].decode() + "\u2026")
        self.assertEqual(line["host"], "h" * VALUE_LIMITS["host"] + "\u2026")
        self.assertEqual(
            line["user_agent"], "u" * VALUE_LIMITS["user_agent"] + "\u2026"
        )

    def test_worst_line(self) -> None:
        """
        Every value at its limit, made of the bytes that escape longest,
        still makes a line of at most L{MAX_LINE} bytes.
        """
        request = DummyRequest([b""])
        request.client = IPv4Address("TCP", "10.0.0.5", 1)
        worst = {name: b"\x01" * (limit + 100) for name, limit in VALUE_LIMITS.items()}
        request.requestHeaders = Headers(
            {
                b"host": [worst["host"]],
                b"referer": [worst["referer"]],
                b"user-agent": [worst["user_agent"]],
                b"x-forwarded-for": [worst["client"]],
            }
        )
        request.method = worst["method"]
        request.uri = worst["path"]
        request.clientproto = worst["protocol"]
        request.code = 200
        request.sentLength = 10**15
        request.routed_at = 0.0
        request.route = RouteTag("", "/", "worker")
        request.upstream = Upstream("w", None, b"", b"/")  # type: ignore[arg-type]
        request.upstream.pid = 4_194_304
        line = json_line(request, 10**10 + 0.5, TrustedProxies(["10.0.0.0/8"]))
        self.assertLessEqual(len(line.encode()), MAX_LINE)
        self.assertGreater(len(line.encode()), MAX_LINE * 0.9)
        self.assertEqual(json.loads(line)["path"], "\x01" * 2048 + "\u2026")


class CombinedFormatTests(SynchronousTestCase):
    """
    The combined format is the line Twisted's own C{Site} writes.
    """

    def test_as_twisted_writes_it(self) -> None:
        """
        The same requests, logged by Twisted's C{Site} and by ours, give the
        same bytes.
        """
        world = World(self, COMBINED)
        ours = [
            get(b"/files/a.txt?x=1", b"a", b"User-Agent: probe/1", b"Referer: /r"),
            get(b"/files/nothing", b"a", b'User-Agent: "q" \\ \xff'),
        ]
        twisted_log = world.folder / "twisted.log"
        reactor = MemoryReactorClock()
        reactor.advance(EPOCH)
        theirs = Site(world.site.resource, logPath=str(twisted_log), reactor=reactor)
        theirs.startFactory()
        self.addCleanup(theirs.stopFactory)
        for raw in ours:
            world.send(raw)
            channel = theirs.buildProtocol(PEER)
            channel.makeConnection(StringTransport(peerAddress=PEER))
            channel.dataReceived(raw)
            world.reactor.advance(0)
        self.assertEqual(world.log_path.read_bytes(), twisted_log.read_bytes())
        self.assertEqual(len(world.text().splitlines()), 2)

    def test_twistd_log(self) -> None:
        """
        C{access_log: "-"} writes the lines to twistd's log, in either
        format.
        """
        written: list[str] = []

        class File:
            def write(self, text: str) -> None:
                written.append(text)

        self.patch(legacy_log, "logfile", File())
        reactor = MemoryReactorClock()
        access_log = AccessLog("-", JSON, TrustedProxies(()), reactor)
        access_log.open()
        world = World(self)
        site = RouterSite(world.site.resource, reactor, access_log)
        channel = site.buildProtocol(PEER)
        channel.makeConnection(StringTransport(peerAddress=PEER))
        channel.dataReceived(get(b"/files/a.txt"))
        world.reactor.advance(0)
        [line] = written
        self.assertTrue(line.endswith("}\n"))
        self.assertEqual(json.loads(line)["route"], {"host": "", "prefix": "/files/"})


class ReopenTests(SynchronousTestCase):
    """
    Reopening the file: lines before go to the old file, lines after to a
    new one at the same path, each whole.
    """

    def test_reopen(self) -> None:
        """
        After a rename and a reopen, new lines go to a new file.
        """
        world = World(self)
        world.send(get(b"/files/a.txt?n=1"))
        moved = world.log_path.with_name("access.log.1")
        world.log_path.rename(moved)
        world.send(get(b"/files/a.txt?n=2"))
        world.access_log.reopen()
        world.send(get(b"/files/a.txt?n=3"))
        old = [json.loads(line)["path"] for line in moved.read_text().splitlines()]
        self.assertEqual(old, ["/files/a.txt?n=1", "/files/a.txt?n=2"])
        self.assertEqual([line["path"] for line in world.lines()], ["/files/a.txt?n=3"])

    def test_cannot_reopen(self) -> None:
        """
        A path that cannot be opened any more leaves the old file in use.
        """
        world = World(self)
        folder = world.folder / "logs"
        folder.mkdir()
        access_log = AccessLog(
            str(folder / "a.log"), JSON, TrustedProxies(()), world.reactor
        )
        access_log.open()
        self.addCleanup(access_log.close)
        (folder / "a.log").rename(world.folder / "a.log.1")
        folder.rmdir()
        self.assertRaises(OSError, access_log.reopen)
        world.site.access_log = access_log
        world.send(get(b"/files/a.txt"))
        self.assertEqual(len((world.folder / "a.log.1").read_text().splitlines()), 1)

    def test_closed(self) -> None:
        """
        Nothing is written before the file is opened or after it is closed.
        """
        world = World(self)
        world.access_log.close()
        world.send(get(b"/files/a.txt"))
        self.assertEqual(world.text(), "")


class DrainTests(SynchronousTestCase):
    """
    The file is not the listening ports' to close.
    """

    def test_after_ports_close(self) -> None:
        """
        A request that ends after the last port has stopped listening (as
        the router drains) is logged.
        """
        world = World(self)
        world.site.doStart()
        world.send(get(b"/api/slow"))
        world.site.doStop()
        [connection] = world.upstream_end.connections
        connection.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(world.last()["path"], "/api/slow")


class QueueingReactor(MemoryReactorClock):
    """
    A memory reactor whose C{callFromThread} queues the call for the test
    to run, as the reactor thread would.
    """

    def __init__(self) -> None:
        super().__init__()
        self.queued: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.queued.append((f, args))

    def run_queued(self) -> None:
        queued, self.queued = self.queued, []
        for f, args in queued:
            f(*args)


class SignalTests(SynchronousTestCase):
    """
    L{AccessLogService}: the file is opened at start, closed at stop, and
    reopened on SIGUSR1 in the reactor thread, after what SIGUSR1 did
    before (twistd's rotation of its own log file).
    """

    def setUp(self) -> None:
        self.addCleanup(signal.signal, signal.SIGUSR1, signal.getsignal(signal.SIGUSR1))
        self.before: list[int] = []
        signal.signal(signal.SIGUSR1, lambda number, frame: self.before.append(number))
        self.reactor = QueueingReactor()
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        self.path = self.folder / "access.log"
        self.access_log = AccessLog(
            str(self.path), JSON, TrustedProxies(()), self.reactor
        )
        self.events: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            self.events.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def test_lifecycle(self) -> None:
        """
        The file is opened (created) at start and closed at stop; the
        handler that was there before is put back at stop.
        """
        previous = signal.getsignal(signal.SIGUSR1)
        service = AccessLogService(self.reactor, self.access_log)
        self.assertFalse(self.path.exists())
        service.startService()
        self.assertTrue(self.path.exists())
        self.assertIsNot(signal.getsignal(signal.SIGUSR1), previous)
        service.stopService()
        self.assertIs(signal.getsignal(signal.SIGUSR1), previous)
        self.assertIsNone(self.access_log._fd)

    def test_sigusr1(self) -> None:
        """
        SIGUSR1 runs the previous handler, then reopens the file in the
        reactor thread and says so, once.
        """
        service = AccessLogService(self.reactor, self.access_log)
        service.startService()
        self.addCleanup(service.stopService)
        self.path.rename(self.folder / "access.log.1")
        signal.raise_signal(signal.SIGUSR1)
        self.assertEqual(self.before, [signal.SIGUSR1])
        self.assertFalse(self.path.exists())  # nothing done in the handler
        self.reactor.run_queued()
        self.assertTrue(self.path.exists())
        reopened = [e for e in self.events if "SIGUSR1" in e]
        self.assertEqual(reopened, [f"SIGUSR1: reopened the access log {self.path}"])

    def test_without_access_log(self) -> None:
        """
        Without an access log SIGUSR1 is still taken (its default would
        end the router), and says there is nothing to reopen.
        """
        service = AccessLogService(self.reactor, None)
        service.startService()
        self.addCleanup(service.stopService)
        signal.raise_signal(signal.SIGUSR1)
        self.reactor.run_queued()
        self.assertEqual(self.before, [signal.SIGUSR1])
        self.assertIn("SIGUSR1: no access log file to reopen", self.events)

    def test_default_before(self) -> None:
        """
        When SIGUSR1 had its default action before, it is ignored after
        the stop rather than ending a router that is finishing.
        """
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        service = AccessLogService(self.reactor, self.access_log)
        service.startService()
        service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGUSR1), signal.SIG_IGN)


class ConfigTests(SynchronousTestCase):
    """
    C{access_log_format} in the reader, the schema and a reload.
    """

    def setUp(self) -> None:
        self.folder = Path(self.mktemp()).resolve()
        (self.folder / "pub").mkdir(parents=True)

    def read(self, text: str) -> Any:
        path = self.folder / "routes.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return load_config(path)

    def test_default(self) -> None:
        """
        Without the key, the combined format.
        """
        config = self.read(
            """
            listen: tcp:8080
            access_log: access.log
            routes: {/: {static: pub}}
            """
        )
        self.assertEqual(config.access_log_format, "combined")

    def test_json(self) -> None:
        """
        C{json} is read.
        """
        config = self.read(
            """
            listen: tcp:8080
            access_log: access.log
            access_log_format: json
            routes: {/: {static: pub}}
            """
        )
        self.assertEqual(config.access_log_format, "json")

    def test_bad_values(self) -> None:
        """
        Any other value (another case, another type) is refused with its
        line and what to write instead.
        """
        for value, shown in [
            ("xml", "str 'xml'"),
            ("JSON", "str 'JSON'"),
            ("[json]", "a list"),
            ("1", "int 1"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                self.read(
                    f"""
                    listen: tcp:8080
                    access_log: access.log
                    routes: {{/: {{static: pub}}}}
                    access_log_format: {value}
                    """
                )
            [problem] = caught.exception.problems
            self.assertEqual(
                str(problem).split(": ", 1)[1],
                "access_log_format: expected 'combined' or 'json', got " + shown,
            )
            self.assertTrue(str(problem).startswith(f"{problem.file}:4: "))

    def test_schema(self) -> None:
        """
        The schema takes exactly the reader's formats, with its default.
        """
        schema = routes_schema()
        option = schema["properties"]["access_log_format"]
        self.assertEqual(option["default"], FORMATS[0])
        check = jsonschema.Draft202012Validator(schema)
        base = {"listen": "tcp:8080", "routes": {"/": {"static": "pub"}}}
        for value in FORMATS:
            self.assertTrue(check.is_valid({**base, "access_log_format": value}))
        for value in ("xml", "JSON", ["json"], 1):
            self.assertFalse(check.is_valid({**base, "access_log_format": value}))

    def test_reload(self) -> None:
        """
        A reload may change the format, not the file.
        """
        text = """
            listen: tcp:8080
            access_log: {log}
            access_log_format: {format}
            routes: {{/: {{static: pub}}}}
            """
        old = self.read(text.format(log="access.log", format="combined"))
        new = self.read(text.format(log="access.log", format="json"))
        self.assertEqual(_cannot_change_in_place(old, new), [])
        moved = self.read(text.format(log="other.log", format="json"))
        [refused] = _cannot_change_in_place(old, moved)
        self.assertIn("access_log: the log file is opened at start", refused)

    def test_site_switches(self) -> None:
        """
        The site writes the new format from the next line on; it notes
        routing times in either format (the route's counters take them).
        """
        world = World(self, COMBINED)
        world.send(get(b"/files/a.txt?n=1"))
        trusted = TrustedProxies(["203.0.113.0/24"])
        world.site.configure_access_log(JSON, trusted)
        world.send(get(b"/files/a.txt?n=2", b"a", b"X-Forwarded-For: 198.51.100.1"))
        first, second = world.text().splitlines()
        self.assertTrue(first.startswith('"203.0.113.7" - - ['), first)
        line = json.loads(second)
        self.assertEqual(
            (line["path"], line["client"]), ("/files/a.txt?n=2", "198.51.100.1")
        )
        self.assertEqual(line["duration"], 0.0)
        timed = DummyRequest([b"files", b"a.txt"])
        world.site.getResourceFor(timed)
        self.assertEqual(timed.routed_at, EPOCH)
        world.site.configure_access_log(COMBINED, trusted)
        world.reactor.advance(1)
        combined = DummyRequest([b"files", b"a.txt"])
        world.site.getResourceFor(combined)
        self.assertEqual(combined.routed_at, EPOCH + 1)
