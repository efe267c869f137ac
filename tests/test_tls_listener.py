"""
End to end: one real, daemonized C{twistd txrouter} listening on TLS (an
C{ssl:} endpoint) and on plain TCP at once. Every kind of route sees the
scheme its client connected with: a WSGI application in the router process
and the same application in a worker get C{wsgi.url_scheme} and the
C{SERVER_PORT} of that listener, and a proxied upstream gets
C{X-Forwarded-Proto} and a C{Forwarded} element with C{proto=}.
"""

from __future__ import annotations

import http.client
import json
import ssl
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support import Txrouter, free_port, stop_daemon, wait_until
from tests.upstreams import RecordingUpstream, _self_signed

pytestmark = pytest.mark.e2e

#: Answers with the WSGI environ facts a scheme shows in, and its process.
#: (C{tests/apps/probe.py} reports C{wsgi.url_scheme} but not C{SERVER_PORT}.)
_SCHEME_APP = '''
"""Answer with what the WSGI environ says about the connection."""

import json
import os


def application(environ, start_response):
    seen = {k: environ.get(k) for k in ("wsgi.url_scheme", "SERVER_PORT")}
    seen["pid"] = os.getpid()
    body = json.dumps(seen).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]
'''

_MODULE = "txrouter_tls_scheme"


def _client_context(certificate: str) -> ssl.SSLContext:
    """
    A client context that trusts only the listener's self-signed
    certificate, and checks that it is for 127.0.0.1.
    """
    return ssl.create_default_context(cafile=certificate)


def _get(
    port: int, path: str, context: ssl.SSLContext | None
) -> tuple[int, dict[str, str], bytes]:
    """
    GET C{path} from 127.0.0.1:C{port}, over TLS when C{context} is given.
    """
    connection = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
        if context is not None
        else http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    )
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        connection.close()


def _answers(port: int, path: str) -> bool:
    """
    Whether plain HTTP C{GET path} answers 200 (a worker answers 503 until
    it is up; the port may not listen yet).
    """
    try:
        return _get(port, path, None)[0] == 200
    except OSError:
        return False


class TLSListenerTests(SynchronousTestCase):
    """
    A daemon with an C{ssl:} and a C{tcp:} listener serving an in-process
    WSGI route, the same application with C{workers: 1}, and a proxy route
    to a plain-HTTP recording upstream.
    """

    scratch: ClassVar[Path]
    certificate: ClassVar[str]
    upstream: ClassVar[RecordingUpstream]
    server: ClassVar[Txrouter]
    tls_port: ClassVar[int]
    tcp_port: ClassVar[int]
    workers: ClassVar[set[int]]

    @classmethod
    def setUpClass(cls) -> None:
        cls.scratch = Path(tempfile.mkdtemp(prefix="txrouter-tls-"))
        cls.workers = set()
        cls.upstream = RecordingUpstream()
        try:
            cls.certificate, key = _self_signed(cls.scratch)
            (cls.scratch / f"{_MODULE}.py").write_text(_SCHEME_APP, encoding="utf-8")
            cls.upstream.start()
            cls.tcp_port = free_port()
            app = f'"{_MODULE}:application", path: {cls.scratch}'
            cls.server = Txrouter(
                f"""
listen:
  - "ssl:{{port}}:interface=127.0.0.1:privateKey={key}:certKey={cls.certificate}"
  - "tcp:{cls.tcp_port}:interface=127.0.0.1"
routes:
  /app/: {{wsgi: {app}, workers: 0}}
  /worker/: {{wsgi: {app}, workers: 1}}
  /up/: {{proxy: "{cls.upstream.url}/"}}
"""
            )
            cls.tls_port = cls.server.port
            cls.server.start()
            wait_until(
                lambda: _answers(cls.tcp_port, "/worker/"),
                "the plain listener and the worker to answer",
            )
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        # The server is absent when setUpClass failed before making it.
        stop_daemon(
            getattr(cls, "server", None), cls.workers, cls.scratch, cls.upstream.stop
        )

    def environ(self, path: str, secure: bool) -> dict[str, Any]:
        """
        GET C{path} from the TLS or the plain listener; it must answer 200
        with the application's JSON.
        """
        port = self.tls_port if secure else self.tcp_port
        context = _client_context(self.certificate) if secure else None
        status, _, body = _get(port, path, context)
        self.assertEqual(status, 200, body[:500])
        seen = dict(json.loads(body))
        if seen["pid"] != self.server.pid:
            type(self).workers.add(seen["pid"])
        return seen

    def forwarded(self, tag: str, secure: bool) -> tuple[list[str], list[str]]:
        """
        Send a request tagged C{tag} through the proxy route.

        @return: the C{X-Forwarded-Proto} values and the C{proto=} parameters
            of the C{Forwarded} elements that reached the upstream.
        """
        port = self.tls_port if secure else self.tcp_port
        context = _client_context(self.certificate) if secure else None
        status, _, body = _get(port, f"/up/echo?tag={tag}", context)
        self.assertEqual(status, 200, body[:500])
        (seen,) = self.upstream.seen(tag)
        protos = [
            pair.strip()
            for value in seen.values("forwarded")
            for element in value.split(",")
            for pair in element.split(";")
            if pair.strip().lower().startswith("proto=")
        ]
        return seen.values("x-forwarded-proto"), protos

    def test_in_process_app_over_tls(self) -> None:
        """
        Over TLS, the in-process application sees C{wsgi.url_scheme}
        C{https} and the TLS listener's port.
        """
        seen = self.environ("/app/", secure=True)
        self.assertEqual(seen["pid"], self.server.pid)
        self.assertEqual(seen["wsgi.url_scheme"], "https")
        self.assertEqual(seen["SERVER_PORT"], str(self.tls_port))

    def test_in_process_app_over_tcp(self) -> None:
        """
        Over plain TCP, the in-process application sees C{http} and the TCP
        listener's port.
        """
        seen = self.environ("/app/", secure=False)
        self.assertEqual(seen["pid"], self.server.pid)
        self.assertEqual(seen["wsgi.url_scheme"], "http")
        self.assertEqual(seen["SERVER_PORT"], str(self.tcp_port))

    def test_worker_app_over_tls(self) -> None:
        """
        Over TLS, the application in a worker process sees C{https} and the
        TLS listener's port, as it would in the router.
        """
        seen = self.environ("/worker/", secure=True)
        self.assertNotEqual(seen["pid"], self.server.pid)
        self.assertEqual(seen["wsgi.url_scheme"], "https")
        self.assertEqual(seen["SERVER_PORT"], str(self.tls_port))

    def test_worker_app_over_tcp(self) -> None:
        """
        Over plain TCP, the worker's application sees C{http} and the TCP
        listener's port.
        """
        seen = self.environ("/worker/", secure=False)
        self.assertNotEqual(seen["pid"], self.server.pid)
        self.assertEqual(seen["wsgi.url_scheme"], "http")
        self.assertEqual(seen["SERVER_PORT"], str(self.tcp_port))

    def test_upstream_over_tls(self) -> None:
        """
        A request that came over TLS reaches the upstream with
        C{X-Forwarded-Proto: https} and C{Forwarded: ...;proto=https}.
        """
        proto, forwarded = self.forwarded("tls", secure=True)
        self.assertEqual(proto, ["https"])
        self.assertEqual(forwarded, ["proto=https"])

    def test_upstream_over_tcp(self) -> None:
        """
        A request that came over plain TCP reaches the upstream with
        C{X-Forwarded-Proto: http} and C{Forwarded: ...;proto=http}.
        """
        proto, forwarded = self.forwarded("tcp", secure=False)
        self.assertEqual(proto, ["http"])
        self.assertEqual(forwarded, ["proto=http"])
