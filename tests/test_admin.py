"""
Unit tests of the admin endpoint: its listener and private folder
(L{txrouter.admin}), its resources driven with C{DummyRequest}, the client
that finds and calls it (L{txrouter.adminclient}), and the C{txrouter
reload|restart|status} commands (L{txrouter.cli}) against a tiny HTTP
server on a real UNIX socket.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import shutil
import socket
import socketserver
import stat
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from txrouter.admin import AdminListener, admin_site, private_folder, unix_path_of
from txrouter.adminclient import AdminUnreachable, admin_endpoint, call
from txrouter.assembly import build_service
from txrouter.cli import main
from txrouter.config import default_admin, load_config
from txrouter.errors import ConfigError, ListenError
from txrouter.reloader import Outcome

pytestmark = pytest.mark.unit

ROUTES = """
    listen: tcp:8080:interface=127.0.0.1
    routes:
      /files/: {static: pub}
"""


def scratch(case: SynchronousTestCase) -> Path:
    """
    A new folder (mode 0700) under the temporary folder, removed after the
    test; short enough for a UNIX socket's path.
    """
    root = Path(tempfile.mkdtemp(prefix="txa-")).resolve()
    case.addCleanup(shutil.rmtree, root, ignore_errors=True)
    return root


def write_routes(folder: Path, text: str = ROUTES, name: str = "routes.yaml") -> Path:
    """
    Write a routes file (and the static folder it names) into C{folder}.
    """
    (folder / "pub").mkdir(exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def live_unix_socket(case: SynchronousTestCase, path: Path) -> socket.socket:
    """
    A UNIX socket listening on C{path}, as a live router's would be.
    """
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    case.addCleanup(live.close)
    live.bind(str(path))
    live.listen(5)
    return live


def stale_unix_socket(path: Path) -> None:
    """
    Leave a socket file at C{path} that nothing listens on, as a router
    that was killed leaves it.
    """
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    gone.bind(str(path))
    gone.close()


class PrivateFolderTests(SynchronousTestCase):
    """
    L{private_folder} makes, or accepts, a folder of this user's alone.
    """

    def setUp(self) -> None:
        self.root = scratch(self)

    def test_makes_folder(self) -> None:
        """
        A folder that does not exist is made with mode 0700.
        """
        folder = self.root / "admin"
        private_folder(folder)
        self.assertTrue(folder.is_dir())
        self.assertEqual(mode_of(folder), 0o700)

    def test_accepts_existing_private_folder(self) -> None:
        """
        An existing folder of ours with mode 0700 is accepted as it is.
        """
        folder = self.root / "admin"
        folder.mkdir(mode=0o700)
        (folder / "kept").write_text("x")
        private_folder(folder)
        self.assertEqual(mode_of(folder), 0o700)
        self.assertEqual((folder / "kept").read_text(), "x")

    def test_refuses_open_folder(self) -> None:
        """
        A folder with any group or other permission bit is refused, and its
        mode is left alone.
        """
        for mode in (0o750, 0o705, 0o710, 0o701, 0o777):
            folder = self.root / f"open-{mode:o}"
            folder.mkdir()
            folder.chmod(mode)
            with self.assertRaises(ListenError, msg=oct(mode)) as raised:
                private_folder(folder)
            self.assertIn(str(folder), str(raised.exception))
            self.assertIn("0700", str(raised.exception))
            self.assertEqual(mode_of(folder), mode)

    def test_refuses_symlink(self) -> None:
        """
        A symbolic link to a private folder is refused: whoever can change
        the link chooses where the socket goes.
        """
        target = self.root / "target"
        target.mkdir(mode=0o700)
        link = self.root / "link"
        link.symlink_to(target)
        with self.assertRaises(ListenError):
            private_folder(link)

    def test_refuses_file(self) -> None:
        """
        A path that is a file is refused.
        """
        path = self.root / "file"
        path.write_text("not a folder")
        with self.assertRaises(ListenError):
            private_folder(path)
        self.assertEqual(path.read_text(), "not a folder")


class UnixPathOfTests(SynchronousTestCase):
    """
    L{unix_path_of} reads the socket path of a C{unix:} endpoint string.
    """

    def test_table(self) -> None:
        """
        The path, positional or named, of a C{unix:} string, absolute as
        Twisted binds it, with backslash escapes undone; L{None} for another
        type.
        """
        table = [
            ("unix:/a/b.sock", "/a/b.sock"),
            ("unix:/a/b.sock:mode=600", "/a/b.sock"),
            ("unix:address=/a/b.sock:mode=600", "/a/b.sock"),
            ("unix:mode=600:address=/a/b.sock", "/a/b.sock"),
            ("unix:run/admin.sock", os.path.abspath("run/admin.sock")),
            ("unix:/a\\:b/admin.sock", "/a:b/admin.sock"),
            ("tcp:80", None),
            ("tcp:9901:interface=127.0.0.1", None),
            ("haproxy:tcp:80", None),
        ]
        self.assertEqual([(s, unix_path_of(s)) for s, _ in table], table)


class AdminListenerTests(SynchronousTestCase):
    """
    L{AdminListener} checks the place of a UNIX admin socket before it
    listens there, unless the socket was handed over (C{fresh = False}).
    """

    def setUp(self) -> None:
        self.root = scratch(self)
        self.folder = self.root / "admin"
        self.path = self.folder / "admin.sock"
        self.reactor = MemoryReactor()

    def listener(self, description: str | None = None) -> AdminListener:
        description = description or f"unix:{self.path}:mode=600"
        endpoint = serverFromString(self.reactor, description)
        return AdminListener(description, endpoint, Factory())

    def listened_on(self) -> list[str]:
        return [str(address) for address, *_ in self.reactor.unixServers]

    def test_makes_private_folder(self) -> None:
        """
        The socket's folder is made with mode 0700, then the socket listens.
        """
        listener = self.listener()
        listener.privilegedStartService()
        self.assertEqual(mode_of(self.folder), 0o700)
        self.assertEqual(self.listened_on(), [str(self.path)])
        self.assertIsNotNone(listener.port)

    def test_escaped_colon_in_path(self) -> None:
        """
        A folder name with an escaped C{:} is the folder made and checked.
        """
        folder = self.root / "a:b"
        description = f"unix:{str(folder).replace(':', chr(92) + ':')}/s.sock"
        self.listener(description).privilegedStartService()
        self.assertEqual(mode_of(folder), 0o700)
        self.assertEqual(self.listened_on(), [str(folder / "s.sock")])

    def test_abstract_namespace(self) -> None:
        """
        A socket in Linux's abstract namespace has no folder nor file to
        check: it just listens.
        """
        self.listener("unix:\0txrouter-test-admin").privilegedStartService()
        self.assertEqual(len(self.reactor.unixServers), 1)
        self.assertFalse(self.folder.exists())

    def test_refuses_open_folder(self) -> None:
        """
        A socket folder open to others is refused before anything listens.
        """
        self.folder.mkdir()
        self.folder.chmod(0o755)
        with self.assertRaises(ListenError):
            self.listener().privilegedStartService()
        self.assertEqual(self.listened_on(), [])

    def test_removes_stale_socket(self) -> None:
        """
        A socket file nobody listens on (left by a router that is gone) is
        removed, and the listener takes its place.
        """
        self.folder.mkdir(mode=0o700)
        stale_unix_socket(self.path)
        self.assertTrue(stat.S_ISSOCK(self.path.lstat().st_mode))
        self.listener().privilegedStartService()
        self.assertFalse(self.path.exists())
        self.assertEqual(self.listened_on(), [str(self.path)])

    def test_refuses_live_socket(self) -> None:
        """
        A socket a live process listens on is left alone and refused: another
        router serves the same routes file.
        """
        self.folder.mkdir(mode=0o700)
        live = live_unix_socket(self, self.path)
        with self.assertRaises(ListenError) as raised:
            self.listener().privilegedStartService()
        self.assertIn("another router", str(raised.exception))
        self.assertIn(str(self.path), str(raised.exception))
        self.assertEqual(self.listened_on(), [])
        # Still there and still answering.
        self.assertTrue(stat.S_ISSOCK(self.path.lstat().st_mode))
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(self.path))
            live.accept()[0].close()

    def test_refuses_non_socket(self) -> None:
        """
        A path that exists and is not a socket is refused and left as it is.
        """
        self.folder.mkdir(mode=0o700)
        self.path.write_text("mine")
        with self.assertRaises(ListenError) as raised:
            self.listener().privilegedStartService()
        self.assertIn("is not a socket", str(raised.exception))
        self.assertEqual(self.path.read_text(), "mine")
        self.assertEqual(self.listened_on(), [])

    def test_handed_over_checks_nothing(self) -> None:
        """
        With C{fresh = False} (the socket is handed over by the router this
        one replaces) neither the folder nor the live socket is looked at.
        """
        self.folder.mkdir()
        self.folder.chmod(0o755)
        live_unix_socket(self, self.path)
        listener = self.listener()
        listener.fresh = False
        listener.privilegedStartService()
        self.assertEqual(self.listened_on(), [str(self.path)])
        self.assertEqual(mode_of(self.folder), 0o755)
        self.assertTrue(stat.S_ISSOCK(self.path.lstat().st_mode))

    def test_handed_over_missing_folder(self) -> None:
        """
        With C{fresh = False}, no folder is made.
        """
        listener = self.listener()
        listener.fresh = False
        listener.privilegedStartService()
        self.assertFalse(self.folder.exists())
        self.assertEqual(self.listened_on(), [str(self.path)])

    def test_tcp(self) -> None:
        """
        A TCP admin endpoint has no folder to check and just listens.
        """
        listener = self.listener("tcp:9901:interface=127.0.0.1")
        listener.privilegedStartService()
        self.assertEqual(
            [(port, interface) for port, _, _, interface in self.reactor.tcpServers],
            [(9901, "127.0.0.1")],
        )
        self.assertEqual(self.listened_on(), [])


class RecordingReloader:
    """
    A stand-in for L{txrouter.reloader.Reloader} with its three methods:
    records the calls and answers with the outcomes it is given.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.outcome: Deferred[Outcome] = succeed(Outcome(True, "done", 2, 1000.0))
        self.status_data: dict[str, Any] = {"generation": 2, "routes": []}

    def reload(self) -> Deferred[Outcome]:
        self.calls.append(("reload",))
        return self.outcome

    def restart(self, host: str, prefix: str) -> Deferred[Outcome]:
        self.calls.append(("restart", host, prefix))
        return self.outcome

    def status(self) -> dict[str, Any]:
        self.calls.append(("status",))
        return self.status_data


class AdminSiteTests(SynchronousTestCase):
    """
    L{admin_site}: POST runs an operation and answers with its outcome;
    GET /status answers the status.
    """

    def setUp(self) -> None:
        self.reloader = RecordingReloader()
        self.upgrades: list[Deferred[Outcome]] = []
        self.site = admin_site(self.reloader, self.upgrade)

    def upgrade(self) -> Deferred[Outcome]:
        d: Deferred[Outcome] = Deferred()
        self.upgrades.append(d)
        return d

    def request(
        self, method: bytes, path: bytes, args: dict[bytes, list[bytes]] | None = None
    ) -> tuple[DummyRequest, Any]:
        """
        Render C{method path} on the site.

        @return: the request, and what C{render} returned.
        """
        request = DummyRequest(path.lstrip(b"/").split(b"/"))
        request.method = method
        request.args = args or {}
        resource = self.site.getResourceFor(request)
        return request, resource.render(request)

    def body(self, request: DummyRequest, rendered: Any) -> Any:
        data = b"".join(request.written) if rendered is NOT_DONE_YET else rendered
        return json.loads(data)

    def header(self, request: DummyRequest, name: bytes) -> list[bytes] | None:
        headers: list[bytes] | None = request.responseHeaders.getRawHeaders(name)
        return headers

    def test_reload_ok(self) -> None:
        """
        POST /reload runs the reload and answers 200 with its outcome as JSON.
        """
        request, rendered = self.request(b"POST", b"/reload")
        self.assertIs(rendered, NOT_DONE_YET)
        self.assertEqual(self.reloader.calls, [("reload",)])
        self.assertEqual(request.responseCode, 200)
        self.assertEqual(request.finished, 1)
        self.assertEqual(
            self.body(request, rendered),
            {"ok": True, "message": "done", "generation": 2, "at": 1000.0},
        )
        self.assertEqual(self.header(request, b"content-type"), [b"application/json"])
        self.assertEqual(self.header(request, b"cache-control"), [b"no-store"])

    def test_reload_failed(self) -> None:
        """
        An outcome that is not ok answers 409 with the reasons.
        """
        self.reloader.outcome = succeed(Outcome(False, "bad file", 1, 1001.0))
        request, rendered = self.request(b"POST", b"/reload")
        self.assertEqual(request.responseCode, 409)
        self.assertEqual(
            self.body(request, rendered),
            {"ok": False, "message": "bad file", "generation": 1, "at": 1001.0},
        )

    def test_answers_when_done(self) -> None:
        """
        The answer comes once the operation has taken effect, not before.
        """
        waiting: Deferred[Outcome] = Deferred()
        self.reloader.outcome = waiting
        request, rendered = self.request(b"POST", b"/reload")
        self.assertIs(rendered, NOT_DONE_YET)
        self.assertEqual((request.written, request.finished), ([], 0))
        waiting.callback(Outcome(True, "reloaded", 3, 1002.0))
        self.assertEqual(request.finished, 1)
        self.assertEqual(self.body(request, rendered)["message"], "reloaded")

    def test_get_operation(self) -> None:
        """
        GET on an operation answers 405 with C{Allow: POST} and runs nothing.
        """
        for path in (b"/reload", b"/restart", b"/upgrade"):
            request, rendered = self.request(b"GET", path)
            self.assertEqual(request.responseCode, 405, path)
            self.assertEqual(self.header(request, b"allow"), [b"POST"])
            self.assertIn(b"POST", rendered)
        self.assertEqual((self.reloader.calls, self.upgrades), ([], []))

    def test_restart(self) -> None:
        """
        POST /restart passes the C{host} and C{prefix} arguments on.
        """
        request, _ = self.request(
            b"POST",
            b"/restart",
            {b"prefix": [b"/wiki/"], b"host": [b"a.example"]},
        )
        self.assertEqual(self.reloader.calls, [("restart", "a.example", "/wiki/")])
        self.assertEqual(request.responseCode, 200)

    def test_restart_default_host(self) -> None:
        """
        POST /restart with no C{host} means the default host, C{""}.
        """
        self.request(b"POST", b"/restart", {b"prefix": [b"/wiki/"]})
        self.assertEqual(self.reloader.calls, [("restart", "", "/wiki/")])

    def test_upgrade(self) -> None:
        """
        POST /upgrade runs the upgrade and answers with its outcome.
        """
        request, rendered = self.request(b"POST", b"/upgrade")
        self.assertEqual(len(self.upgrades), 1)
        self.upgrades[0].callback(Outcome(False, "not twistd", 2, 1003.0))
        self.assertEqual(request.responseCode, 409)
        self.assertEqual(self.body(request, rendered)["message"], "not twistd")

    def test_status(self) -> None:
        """
        GET /status answers the reloader's status as JSON, never cached.
        """
        request, rendered = self.request(b"GET", b"/status")
        self.assertEqual(self.body(request, rendered), self.reloader.status_data)
        self.assertEqual(self.header(request, b"cache-control"), [b"no-store"])
        self.assertEqual(self.header(request, b"content-type"), [b"application/json"])

    def test_client_gone(self) -> None:
        """
        When the client has gone before the operation ends, nothing is
        written to its request and no error is raised.
        """
        waiting: Deferred[Outcome] = Deferred()
        self.reloader.outcome = waiting
        channel = DummyChannel()
        channel.site = self.site
        request = Request(channel)
        request.method = b"POST"
        request.postpath = [b"reload"]
        request.prepath = []
        request.args = {}
        resource = self.site.getResourceFor(request)
        self.assertIs(resource.render(request), NOT_DONE_YET)
        request.connectionLost(Failure(ConnectionDone()))
        waiting.callback(Outcome(True, "reloaded", 3, 1002.0))
        self.assertEqual(channel.transport.written.getvalue(), b"")
        self.assertIsNone(self.successResultOf(waiting))


class AdminEndpointTests(SynchronousTestCase):
    """
    L{admin_endpoint} finds the admin endpoint of the router serving a
    routes file, even when the file does not load.
    """

    def setUp(self) -> None:
        self.root = scratch(self)
        (self.root / "adm").mkdir(mode=0o700)
        self.admin = f"unix:{self.root}/adm/admin.sock:mode=600"

    def test_valid_file(self) -> None:
        """
        A file that loads gives its C{admin:} key.
        """
        path = write_routes(self.root, ROUTES + f"    admin: {self.admin}\n")
        self.assertEqual(admin_endpoint(path), self.admin)

    def test_valid_file_default(self) -> None:
        """
        A file that loads and names no admin endpoint gives the default one.
        """
        path = write_routes(self.root)
        self.assertEqual(admin_endpoint(path), default_admin(path))

    def test_invalid_file(self) -> None:
        """
        A file that does not load, but is YAML with C{admin:}, gives that
        value: the reload may be what fixes the file.
        """
        path = write_routes(
            self.root, ROUTES + f"    admin: {self.admin}\n    colour: 1\n"
        )
        with self.assertRaises(ConfigError):
            load_config(path)
        self.assertEqual(admin_endpoint(path), self.admin)

    def test_invalid_admin_value(self) -> None:
        """
        A file that does not load and whose C{admin:} is not a string gives
        the default endpoint.
        """
        path = write_routes(self.root, ROUTES + "    admin: [1, 2]\n")
        self.assertEqual(admin_endpoint(path), default_admin(path))

    def test_broken_yaml(self) -> None:
        """
        A file that is not YAML at all gives the default endpoint.
        """
        path = self.root / "routes.yaml"
        path.write_text("admin: [unclosed\n  routes: {\n")
        self.assertEqual(admin_endpoint(path), default_admin(path))

    def test_missing_file(self) -> None:
        """
        A file that does not exist gives the default endpoint.
        """
        path = self.root / "nowhere.yaml"
        self.assertEqual(admin_endpoint(path), default_admin(path))

    def test_default_admin_one_path(self) -> None:
        """
        The default endpoint is the same for a relative and an absolute
        spelling of one file, and differs for two files.
        """
        relative = Path("routes.yaml")
        absolute = Path.cwd() / "routes.yaml"
        self.assertEqual(default_admin(relative), default_admin(absolute))
        self.assertEqual(
            default_admin(Path("sub/../routes.yaml")), default_admin(absolute)
        )
        self.assertNotEqual(
            default_admin(absolute), default_admin(Path.cwd() / "other.yaml")
        )
        self.assertIsNotNone(unix_path_of(default_admin(absolute)))


class TinyAdminServer:
    """
    An HTTP server on a UNIX socket, in a thread, that records requests
    and answers each with C{status} and C{answer} (as JSON, or as it is if
    it is bytes).
    """

    def __init__(self, case: SynchronousTestCase, folder: Path) -> None:
        self.path = folder / "admin.sock"
        self.endpoint = f"unix:{self.path}:mode=600"
        self.requests: list[tuple[str, str]] = []
        self.status = 200
        self.answer: Any = {"ok": True, "message": "done"}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append((self.command, self.path))
                answer = server.answer
                body = answer if isinstance(answer, bytes) else json.dumps(answer)
                body = body.encode() if isinstance(body, str) else body
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = socketserver.UnixStreamServer(str(self.path), Handler)
        thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        thread.start()
        case.addCleanup(thread.join, 10)
        case.addCleanup(self._server.server_close)
        case.addCleanup(self._server.shutdown)


class CallTests(SynchronousTestCase):
    """
    L{call} sends one request to the admin endpoint and reads the JSON
    answer.
    """

    def setUp(self) -> None:
        self.root = scratch(self)
        self.server = TinyAdminServer(self, self.root)

    def test_answer(self) -> None:
        """
        It returns the status and the JSON answer, and sends the method,
        path and query asked for.
        """
        self.server.status = 409
        self.server.answer = {"ok": False, "message": "no"}
        self.assertEqual(
            call(self.server.endpoint, "POST", "/restart", {"prefix": "/w/"}),
            (409, {"ok": False, "message": "no"}),
        )
        self.assertEqual(self.server.requests, [("POST", "/restart?prefix=%2Fw%2F")])

    def test_not_json(self) -> None:
        """
        An answer that is not JSON becomes a failure with its text.
        """
        self.server.status = 500
        self.server.answer = b"Internal Server Error\n"
        self.assertEqual(
            call(self.server.endpoint, "GET", "/status"),
            (500, {"ok": False, "message": "Internal Server Error"}),
        )

    def test_nothing_listens(self) -> None:
        """
        With no socket there, it raises L{AdminUnreachable} saying no router
        answers.
        """
        endpoint = f"unix:{self.root}/none.sock"
        with self.assertRaises(AdminUnreachable) as raised:
            call(endpoint, "POST", "/reload")
        self.assertIn("no router answers", str(raised.exception))
        self.assertIn(endpoint, str(raised.exception))

    def test_stale_socket(self) -> None:
        """
        A socket file nobody listens on is no router either.
        """
        path = self.root / "stale.sock"
        stale_unix_socket(path)
        with self.assertRaises(AdminUnreachable) as raised:
            call(f"unix:{path}", "GET", "/status")
        self.assertIn("no router answers", str(raised.exception))

    def test_folder_of_others(self) -> None:
        """
        A socket in a folder anyone can write to is not talked to.
        """
        self.root.chmod(0o777)
        with self.assertRaises(AdminUnreachable) as raised:
            call(self.server.endpoint, "POST", "/reload")
        self.assertIn("not this user's", str(raised.exception))
        self.assertEqual(self.server.requests, [])


STATUS: dict[str, Any] = {
    "config": "/srv/routes.yaml",
    "generation": 3,
    "loaded_at": 1700000000.0,
    "listen": ["tcp:8080:interface=127.0.0.1", "unix:/run/web.sock"],
    "routes": [
        {
            "host": "",
            "prefix": "/wiki/",
            "kind": "wsgi",
            "where": "routes.yaml:4: routes['/wiki/']",
            "workers": [
                {"name": "wiki-0", "pid": 4242, "ready": True},
                {"name": "wiki-1", "pid": None, "ready": False},
            ],
        },
        {
            "host": "shop.example.com",
            "prefix": "/",
            "kind": "django",
            "where": "routes.yaml:9: hosts['shop.example.com'].routes['/']",
            "in_process": True,
        },
        {
            "host": "",
            "prefix": "/files/",
            "kind": "static",
            "where": "routes.yaml:6: routes['/files/']",
        },
    ],
    "last_change": {
        "ok": True,
        "message": "reloaded: 1 route changed",
        "generation": 3,
        "at": 1700000100.0,
    },
}


class OperationCommandTests(SynchronousTestCase):
    """
    C{txrouter status|reload|restart} talk to the admin endpoint and say
    what happened.
    """

    def setUp(self) -> None:
        self.root = scratch(self)
        self.routes = write_routes(self.root)
        self.server = TinyAdminServer(self, self.root)

    def run_main(self, *argv: str) -> tuple[int, str, str]:
        """
        @return: the exit status, stdout and stderr of C{main(argv)}.
        """
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(list(argv))
        return status, out.getvalue(), err.getvalue()

    def operate(self, *argv: str) -> tuple[int, str, str]:
        return self.run_main(
            *argv, "--config", str(self.routes), "--admin", self.server.endpoint
        )

    def test_status_table(self) -> None:
        """
        C{status} prints the table: the file and generation, the listeners,
        each route with its worker PIDs or where it runs, and the last
        change.
        """
        self.server.answer = STATUS
        code, out, err = self.operate("status")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(self.server.requests, [("GET", "/status")])
        loaded = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1700000000.0))
        lines = out.splitlines()
        self.assertEqual(
            lines[:2],
            [
                f"/srv/routes.yaml: table 3, loaded {loaded}",
                "listening on tcp:8080:interface=127.0.0.1, unix:/run/web.sock",
            ],
        )
        self.assertEqual(len(lines), 6, out)
        wiki, shop, files = (line.split() for line in lines[2:5])
        self.assertEqual(
            wiki,
            ["/wiki/", "wsgi", "pid", "4242", "(ready),", "pid", "-", "(starting)"],
        )
        self.assertEqual(
            shop,
            ["shop.example.com/", "django", "in", "the", "router", "process"],
        )
        self.assertEqual(files, ["/files/", "static"])
        self.assertEqual(lines[5], "last change: ok: reloaded: 1 route changed")

    def test_status_failed_change(self) -> None:
        """
        A last change that failed is shown as FAILED; no last change, no line.
        """
        self.server.answer = dict(
            STATUS, last_change=dict(STATUS["last_change"], ok=False, message="bad")
        )
        _, out, _ = self.operate("status")
        self.assertEqual(out.splitlines()[-1], "last change: FAILED: bad")
        self.server.answer = dict(STATUS, last_change=None)
        _, out, _ = self.operate("status")
        self.assertNotIn("last change", out)

    def test_status_json(self) -> None:
        """
        C{status --json} prints the status as JSON.
        """
        self.server.answer = STATUS
        code, out, err = self.operate("status", "--json")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(json.loads(out), STATUS)

    def test_status_of_real_reloader(self) -> None:
        """
        The table prints the status a real L{Reloader} gives.
        """
        top = build_service(load_config(self.routes), MemoryReactorClock())
        self.server.answer = top.reloader.status()
        code, out, err = self.operate("status")
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith(f"{self.routes}: table 1, loaded "))
        self.assertEqual(lines[1], "listening on tcp:8080:interface=127.0.0.1")
        self.assertEqual(lines[2].split(), ["/files/", "static"])

    def test_status_refused(self) -> None:
        """
        A status that is not 200 exits 1 with the message.
        """
        self.server.status = 500
        self.server.answer = {"message": "broken"}
        code, out, err = self.operate("status")
        self.assertEqual((code, out, err), (1, "", "txrouter status: broken\n"))

    def test_reload_ok(self) -> None:
        """
        C{reload} POSTs /reload, prints the message and exits 0 when the
        answer is ok.
        """
        self.server.answer = {"ok": True, "message": "reloaded: table 4"}
        code, out, err = self.operate("reload")
        self.assertEqual((code, out, err), (0, "reloaded: table 4\n", ""))
        self.assertEqual(self.server.requests, [("POST", "/reload")])

    def test_reload_failed(self) -> None:
        """
        C{reload} exits 1 and says it failed, with the reason, on stderr when
        the answer is not ok.
        """
        self.server.status = 409
        self.server.answer = {"ok": False, "message": "bad file"}
        code, out, err = self.operate("reload")
        self.assertEqual(
            (code, out, err), (1, "", "txrouter reload failed: bad file\n")
        )

    def test_restart(self) -> None:
        """
        C{restart PREFIX --host H} POSTs /restart with both.
        """
        code, _, _ = self.operate("restart", "/wiki/", "--host", "a.example")
        self.assertEqual(code, 0)
        self.assertEqual(
            self.server.requests,
            [("POST", "/restart?prefix=%2Fwiki%2F&host=a.example")],
        )

    def test_nothing_listens(self) -> None:
        """
        With nothing listening, the command exits 1 and says no router
        answers, without a traceback.
        """
        code, out, err = self.run_main(
            "reload",
            "--config",
            str(self.routes),
            "--admin",
            f"unix:{self.root}/none.sock",
        )
        self.assertEqual((code, out), (1, ""))
        self.assertTrue(err.startswith("txrouter reload: no router answers"), err)
        self.assertNotIn("Traceback", err)

    def test_finds_admin_in_file(self) -> None:
        """
        Without C{--admin}, the command talks to the routes file's C{admin:}.
        """
        routes = write_routes(
            self.root, ROUTES + f"    admin: {self.server.endpoint}\n", "other.yaml"
        )
        code, _, _ = self.run_main("reload", "--config", str(routes))
        self.assertEqual(code, 0)
        self.assertEqual(self.server.requests, [("POST", "/reload")])
