"""
End to end: a real, daemonized C{twistd txrouter} with a TLS listener that
serves two sites' certificates by server name, and a plain listener that
redirects to it, checked with curl, openssl s_client and Python's C{ssl};
its certificates replaced by a reload while a connection stays open.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import ClassVar

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import Authority
from tests.support import Txrouter, free_port, program, wait_until

pytestmark = pytest.mark.e2e

_ROUTES = """\
listen:
  - endpoint: tcp:{tls_port}:interface=127.0.0.1
    tls:
      certificates: [certs/]
      default: a.test
  - endpoint: tcp:{port}:interface=127.0.0.1
    https_redirect: {tls_port}
hsts: true
routes:
  /: {{static: pub}}
hosts:
  b.test: {{routes: {{/: {{static: pub-b}}}}}}
"""


def _served(port: int, name: str | None, ca: Path) -> str:
    """
    The common name of the certificate a client naming C{name} gets (none:
    no SNI), checked against C{ca} (and C{name}).
    """
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = name is not None
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        subject = dict(pair[0] for pair in tls.getpeercert()["subject"])
        return str(subject["commonName"])


class HTTPSTests(SynchronousTestCase):
    folder: ClassVar[Path]
    authority: ClassVar[Authority]
    router: ClassVar[Txrouter]
    tls_port: ClassVar[int]

    @classmethod
    def setUpClass(cls) -> None:
        cls.folder = Path(tempfile.mkdtemp(prefix="txrouter-https-"))
        cls.authority = Authority(cls.folder)
        cls.tls_port = free_port()
        router = cls.router = Txrouter("")
        (router.dir / "pub").mkdir()
        (router.dir / "pub" / "index.html").write_text("site a\n")
        (router.dir / "pub-b").mkdir()
        (router.dir / "pub-b" / "index.html").write_text("site b\n")
        certs = router.dir / "certs"
        certs.mkdir()
        cls.authority.issue(["a.test", "127.0.0.1"], to=certs / "a.pem")
        cls.authority.issue(["b.test", "*.b.test"], to=certs / "b.pem")
        router.config.write_text(
            _ROUTES.format(tls_port=cls.tls_port, port=router.port)
        )
        try:
            router.start()
        except BaseException:
            shutil.rmtree(cls.folder, True)
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            cls.router.stop()
        finally:
            shutil.rmtree(cls.folder, True)

    def test_by_server_name(self) -> None:
        """
        Each host gets its own certificate (wildcards too), and clients
        that name no server get the default.
        """
        port, ca = self.tls_port, self.authority.path
        self.assertEqual(_served(port, "a.test", ca), "a.test")
        self.assertEqual(_served(port, "b.test", ca), "b.test")
        self.assertEqual(_served(port, "www.b.test", ca), "b.test")
        self.assertEqual(_served(port, None, ca), "a.test")

    def test_curl(self) -> None:
        """
        curl, checking each certificate against the test authority, gets
        each host's site over HTTP/2; HSTS only where it is asked for (the
        default routes, not b.test's).
        """
        for name, body in (("a.test", "site a\n"), ("b.test", "site b\n")):
            result = self.authority.curl(
                "--include",
                "--resolve",
                f"{name}:{self.tls_port}:127.0.0.1",
                f"https://{name}:{self.tls_port}/",
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertTrue(result.stdout.endswith(body), result.stdout)
            # curl offers HTTP/2, which the router takes (lower-case names).
            self.assertTrue(result.stdout.startswith("HTTP/2 200"), result.stdout)
            hsts = "strict-transport-security: max-age=31536000" in result.stdout
            self.assertEqual(hsts, name == "a.test")

    def test_openssl_s_client(self) -> None:
        """
        openssl s_client sees the certificate of the name it sends, and a
        verified chain; TLS 1.1 is refused.
        """
        command = [
            program("openssl", "openssl"),
            "s_client",
            "-connect",
            f"127.0.0.1:{self.tls_port}",
            "-servername",
            "b.test",
            "-CAfile",
            str(self.authority.path),
            "-verify_return_error",
        ]
        result = subprocess.run(
            command, input="", capture_output=True, text=True, timeout=30
        )
        self.assertRegex(result.stdout, r"subject=CN ?= ?b\.test")
        self.assertIn("Verify return code: 0 (ok)", result.stdout)
        old = subprocess.run(
            [*command, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
            input="",
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertNotEqual(old.returncode, 0)

    def test_redirect(self) -> None:
        """
        The plain listener sends clients to HTTPS, keeping host and path,
        and sends no HSTS itself.
        """
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.router.port, timeout=10
        )
        self.addCleanup(connection.close)
        connection.request("GET", "/x/y?z=1", headers={"Host": "b.test"})
        response = connection.getresponse()
        response.read()
        self.assertEqual(response.status, 301)
        self.assertEqual(
            response.getheader("Location"), f"https://b.test:{self.tls_port}/x/y?z=1"
        )
        self.assertIsNone(response.getheader("Strict-Transport-Security"))

    def test_reload_replaces_certificates(self) -> None:
        """
        A reload serves new certificates from the next handshake on; a
        connection made before keeps working.
        """
        context = ssl.create_default_context(cafile=str(self.authority.path))
        before = http.client.HTTPSConnection(
            "a.test", self.tls_port, context=context, timeout=10
        )
        before.sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", self.tls_port), timeout=10),
            server_hostname="a.test",
        )
        self.addCleanup(before.close)
        before.request("GET", "/")
        self.assertEqual(before.getresponse().read(), b"site a\n")
        certs = self.router.dir / "certs"
        self.authority.issue(["a.test", "127.0.0.1", "new.a.test"], to=certs / "a.pem")
        assert self.router.pid is not None
        os.kill(self.router.pid, signal.SIGHUP)
        wait_until(
            lambda: "new.a.test" in _names(self.tls_port, self.authority.path),
            "the new certificate",
        )
        before.request("GET", "/")
        self.assertEqual(before.getresponse().read(), b"site a\n")


def _names(port: int, ca: Path) -> str:
    """
    The DNS names of the certificate served for a.test, joined.
    """
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="a.test") as tls,
    ):
        return " ".join(v for k, v in tls.getpeercert()["subjectAltName"] if k == "DNS")
