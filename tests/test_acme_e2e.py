"""
End to end: a real, daemonized C{twistd txrouter} obtains its certificates
from Pebble, Let's Encrypt's test CA (the Debian package C{pebble}), over
ACME, answering the HTTP-01 challenges on its plain listener; it renews
them, keeps the one it has when a challenge fails, and serves the stored
one again after a restart without ordering another.

Pebble resolves every name with C{pebble-challtestsrv}, a DNS server that
answers 127.0.0.1 for all (and SERVFAIL for the names a test makes fail);
its HTTPS API has a certificate of a test authority (L{tests.certs}) that
the router trusts through C{acme.ca_bundle}.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import Authority
from tests.support import Txrouter, free_port, listening, program, wait_until

pytestmark = pytest.mark.e2e

#: The routes file: a plain listener (where Pebble checks the challenges)
#: and a TLS one with ACME's certificates only. TLS_PORT, DIRECTORY,
#: CA_FILE and NAMES (a names: line, or none: those of hosts:) are replaced.
ROUTES = """\
listen:
  - tcp:{port}:interface=127.0.0.1
  - endpoint: tcp:TLS_PORT:interface=127.0.0.1
    tls: {acme: true}
acme:
  email: admin@a.test
  directory: DIRECTORY
  ca_bundle: CA_FILE
  storage: acme
  NAMES
routes:
  /: {static: pub}
hosts:
  a.test: {routes: {/: {static: pub}}}
  "*.b.test": {routes: {/: {static: pub}}}
"""


class Pebble:
    """
    Pebble and its DNS server, on free 127.0.0.1 ports, for one test.

    @ivar directory: the ACME directory URL.
    """

    def __init__(self, folder: Path, http_port: int, validity: int | None) -> None:
        """
        @param http_port: where Pebble checks HTTP-01 challenges.
        @param validity: the lifetime of the certificates it issues, in
            seconds (L{None}: Pebble's default, years).
        """
        self.programs = (
            program("pebble-challtestsrv", "pebble"),
            program("pebble", "pebble"),
        )
        self.folder = folder
        self.authority = Authority(folder)
        crt, key = self.authority.issue_pair(["127.0.0.1", "localhost"])
        self.api, self.management = free_port(), free_port()
        self.dns, self.dns_management = free_port(), free_port()
        self.directory = f"https://127.0.0.1:{self.api}/dir"
        config = {
            "listenAddress": f"127.0.0.1:{self.api}",
            "managementListenAddress": f"127.0.0.1:{self.management}",
            "certificate": str(crt),
            "privateKey": str(key),
            "httpPort": http_port,
            "tlsPort": free_port(),  # TLS-ALPN-01: never offered an answer
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if validity is not None:
            config["certificateValidityPeriod"] = validity
        self.config = folder / "pebble.json"
        self.config.write_text(json.dumps({"pebble": config}))
        self.log = folder / "pebble.log"
        self._processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        """
        Start the DNS server, then Pebble; wait until both answer.
        """
        with (self.folder / "challtestsrv.log").open("wb") as out:
            self._processes.append(
                subprocess.Popen(
                    [
                        self.programs[0],
                        "-defaultIPv4",
                        "127.0.0.1",
                        "-defaultIPv6",
                        "",
                        "-http01",
                        "",
                        "-https01",
                        "",
                        "-tlsalpn01",
                        "",
                        "-dns01",
                        f"127.0.0.1:{self.dns}",
                        "-management",
                        f"127.0.0.1:{self.dns_management}",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        wait_until(lambda: listening(self.dns_management), "pebble-challtestsrv")
        environment = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",  # no random delay before each check
            "PEBBLE_WFE_NONCEREJECT": "0",  # no random badNonce
            "PEBBLE_AUTHZREUSE": "0",  # every order checks its challenge again
        }
        with self.log.open("wb") as out:
            self._processes.append(
                subprocess.Popen(
                    [
                        self.programs[1],
                        "-config",
                        str(self.config),
                        "-dnsserver",
                        f"127.0.0.1:{self.dns}",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=environment,
                )
            )
        wait_until(lambda: listening(self.api) and listening(self.management), "pebble")

    def stop(self) -> None:
        """
        Stop both, killing what does not exit in time.
        """
        for process in reversed(self._processes):
            process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def root(self) -> Path:
        """
        Pebble's root certificate (made anew each run), as a file.
        """
        context = ssl.create_default_context(cafile=str(self.authority.path))
        url = f"https://127.0.0.1:{self.management}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            pem = response.read()
        path = self.folder / "pebble-root.pem"
        path.write_bytes(pem)
        return path

    def fail_dns(self, host: str) -> None:
        """
        Make the DNS server answer SERVFAIL for C{host}: Pebble cannot
        check its challenges any more.
        """
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.dns_management}/set-servfail",
            data=json.dumps({"host": f"{host}."}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def orders(self) -> int:
        """
        The orders Pebble was sent so far.
        """
        return self.log.read_text(errors="replace").count("POST /order-plz")


def served(port: int, name: str, root: Path | None = None) -> x509.Certificate | None:
    """
    The certificate a client naming C{name} gets, checked against C{root}
    (with C{name}) when given; L{None} when that check fails.
    """
    if root is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=str(root))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError:
        return None
    assert der is not None
    return x509.load_der_x509_certificate(der)


class AcmeTestCase(SynchronousTestCase):
    """
    Each test has a Pebble and a router of its own, stopped at its end.
    """

    validity: int | None = None

    def start(
        self, names: list[str] | None = None, failing: tuple[str, ...] = ()
    ) -> tuple[Txrouter, Pebble]:
        """
        Start Pebble, with SERVFAIL for the names C{failing}, and a router
        that has it obtain C{names} (those of C{hosts:} when L{None}).
        """
        folder = Path(tempfile.mkdtemp(prefix="txrouter-acme-"))
        self.addCleanup(shutil.rmtree, folder, True)
        router = Txrouter("")
        self.tls_port = free_port()
        pebble = Pebble(folder, router.port, self.validity)
        self.addCleanup(pebble.stop)
        pebble.start()
        for name in failing:
            pebble.fail_dns(name)
        (router.dir / "pub").mkdir()
        (router.dir / "pub" / "index.html").write_text("hello\n")
        router.config.write_text(
            ROUTES.replace("{port}", str(router.port))
            .replace("TLS_PORT", str(self.tls_port))
            .replace("DIRECTORY", pebble.directory)
            .replace("CA_FILE", str(pebble.authority.path))
            .replace("NAMES", "" if names is None else f"names: {json.dumps(names)}")
        )
        self.addCleanup(router.stop)
        router.start()
        return router, pebble

    def issued(self, name: str, root: Path | None = None) -> x509.Certificate:
        """
        Wait until the router serves a certificate for C{name} that Pebble
        issued (checked against its C{root}, when given).
        """
        found: list[x509.Certificate] = []

        def pebble_issued() -> bool:
            certificate = served(self.tls_port, name, root)
            if (
                certificate is None
                or "Pebble" not in certificate.issuer.rfc4514_string()
            ):
                return False
            found.append(certificate)
            return True

        wait_until(pebble_issued, f"a certificate for {name} from Pebble", 60)
        return found[-1]


class IssuanceTests(AcmeTestCase):
    def test_issued_stored_and_reused_after_restart(self) -> None:
        """
        The first certificate is ordered, checked over HTTP-01 and served
        (its chain verifies up to Pebble's root, for its name); the account
        key and the certificate are stored 0600 in 0700 folders; after a
        restart the stored one is served at once and nothing is ordered.
        """
        router, pebble = self.start()
        root = pebble.root()
        first = self.issued("a.test", root)
        names = first.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(names.value.get_values_for_type(x509.DNSName), ["a.test"])
        storage = router.dir / "acme"
        for folder in (storage, storage / "certs"):
            self.assertEqual(stat.S_IMODE(folder.stat().st_mode), 0o700, folder)
        for file in ("account.key", "account.json", "certs/a.test.pem"):
            mode = stat.S_IMODE((storage / file).stat().st_mode)
            self.assertEqual(mode, 0o600, file)
        log = router.log()
        self.assertIn("acme: a.test: first certificate issued by", log)
        self.assertIn("hosts['*.b.test'] gets no certificate: a wildcard", log)
        self.assertIn("no certificate yet: serving a self-signed one", log)
        ordered = pebble.orders()
        self.assertEqual(ordered, 1)

        router.stop()
        before = len(router.log())
        router.start()
        again = served(self.tls_port, "a.test", root)
        assert again is not None
        self.assertEqual(again.serial_number, first.serial_number)
        wait_until(
            lambda: "serving the stored certificate" in router.log()[before:],
            "the stored certificate's log line",
        )
        self.assertNotIn("ordering one", router.log()[before:])
        self.assertEqual(pebble.orders(), ordered)


class RenewalTests(AcmeTestCase):
    #: Seconds: renewed when a third is left (renew_before is longer).
    validity = 9

    def test_renewed_and_kept_when_a_challenge_fails(self) -> None:
        """
        A short-lived certificate is renewed and the new one served without
        a restart; a name whose challenge cannot be checked fails with the
        CA's reason and a retry planned, without keeping the other names
        from theirs; when a renewal fails, the certificate served stays.
        """
        router, pebble = self.start(["a.test", "c.test"], failing=("c.test",))
        first = self.issued("a.test")
        wait_until(
            lambda: "acme: c.test: first certificate failed: " in router.log(),
            "c.test's failure",
            60,
        )
        log = router.log()
        self.assertIn('could not resolve URL "http://c.test:', log)
        self.assertIn("no certificate for it yet; next try in 60s", log)

        def renewed() -> bool:
            now = served(self.tls_port, "a.test")
            return now is not None and now.serial_number != first.serial_number

        wait_until(renewed, "a.test's renewal", 60)
        self.assertIn("acme: a.test: renewal issued by", router.log())

        pebble.fail_dns("a.test")
        wait_until(
            lambda: "acme: a.test: renewal failed: " in router.log(),
            "a.test's failed renewal",
            60,
        )
        self.assertIn("still serving the certificate valid until", router.log())
        # The last one issued (a renewal in flight when the DNS broke may
        # have been issued still) is stored, and served.
        stored = (router.dir / "acme" / "certs" / "a.test.pem").read_bytes()
        last = x509.load_pem_x509_certificates(stored)[0]
        kept = served(self.tls_port, "a.test")
        assert kept is not None
        self.assertEqual(kept.serial_number, last.serial_number)
        self.assertNotEqual(kept.serial_number, first.serial_number)
