"""
Tests of automatic certificates, in one process: C{acme:} as the reader
reads it (L{txrouter.acmeconfig}), the storage folder and its modes
(L{txrouter.acmestorage}), the renewal and back-off arithmetic
(L{txrouter.acmeschedule}), a listener's certificates from two sources
(L{txrouter.certificates.CertificateStore}), the HTTP-01 answers of
L{txrouter.site.RouterRequest}, and the ACME service's start and stop.
Ordering from a real CA is tests/test_acme_e2e.py's.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import Authority
from tests.support import wait_until
from tests.test_config import problems_of, write_routes
from tests.test_listeners import _request, _site
from txrouter.acmeconfig import LETS_ENCRYPT, Acme
from txrouter.acmeschedule import (
    CHECK_EVERY,
    DAY,
    backoff,
    next_wakeup,
    renewal_time,
)
from txrouter.acmeservice import AcmeService
from txrouter.acmestorage import AcmeStorage
from txrouter.certificates import CertificateError, CertificateStore, load_certificates
from txrouter.config import load_config
from txrouter.schema import routes_schema

pytestmark = pytest.mark.unit

#: A plain listener for the challenges and a TLS one for the certificates.
LISTEN = "listen:\n  - tcp:8080\n  - {endpoint: 'tcp:8443', tls: {}}\n"
#: The default host and two named ones, one a wildcard.
HOSTS = (
    "routes: {/: {static: pub}}\n"
    "hosts:\n"
    "  A.test: {routes: {/: {static: pub}}}\n"
    "  '*.b.test': {routes: {/: {static: pub}}}\n"
)


def _folder(case: SynchronousTestCase) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="txrouter-acme-")).resolve()
    case.addCleanup(shutil.rmtree, folder, True)
    return folder


class ConfigTests(SynchronousTestCase):
    """
    C{acme:} and C{tls: {acme: ...}} as the reader reads them.
    """

    def setUp(self) -> None:
        self.folder = _folder(self)
        (self.folder / "pub").mkdir()

    def path(self, acme: str, listen: str = LISTEN, hosts: str = HOSTS) -> Path:
        return write_routes(self.folder, listen + hosts + acme)

    def problems(
        self, acme: str, listen: str = LISTEN, hosts: str = HOSTS
    ) -> list[str]:
        found = problems_of(self, self.path(acme, listen, hosts))
        return [f"{p.line}: {p.where}: {p.message}" for p in found]

    def test_defaults(self) -> None:
        """
        The exact names of C{hosts:} (a warning for the wildcard), Let's
        Encrypt, an C{acme} folder beside the file, 30 days; a C{tls: {}}
        listener serves them and has no certificate of its own.
        """
        config = load_config(self.path("acme: {email: admin@a.test}\n"))
        acme = config.acme
        assert acme is not None
        self.assertEqual(acme.names, ("a.test",))
        self.assertEqual(acme.directory, LETS_ENCRYPT)
        self.assertEqual(acme.storage, self.folder / "acme")
        self.assertEqual(acme.email, "admin@a.test")
        self.assertIsNone(acme.ca_bundle)
        self.assertEqual(acme.renew_before, 30)
        [warning] = acme.warnings
        self.assertIn(
            "hosts['*.b.test'] gets no certificate: a wildcard needs", warning
        )
        tls = config.listeners[1].tls
        assert tls is not None
        self.assertEqual((tls.certificates, tls.acme), ((), True))
        self.assertIsNone(config.listeners[0].tls)

    def test_every_key(self) -> None:
        """
        Every key given: the names listed (not those of C{hosts:}), paths
        relative to the file.
        """
        (self.folder / "ca.pem").write_text("")
        (self.folder / "state").mkdir()
        path = self.path(
            "acme:\n"
            "  directory: https://127.0.0.1:14000/dir\n"
            "  storage: state/acme\n"
            "  ca_bundle: ca.pem\n"
            "  renew_before: 0.5\n"
            "  names: [Www.A.test., c.test]\n"
            "  email:\n",
            hosts="routes: {/: {static: pub}}\n",
        )
        config = load_config(path)
        self.assertEqual(
            config.acme,
            Acme(
                names=("www.a.test", "c.test"),
                storage=self.folder / "state" / "acme",
                directory="https://127.0.0.1:14000/dir",
                ca_bundle=self.folder / "ca.pem",
                renew_before=0.5,
            ),
        )

    def test_schema_defaults(self) -> None:
        """
        The schema's defaults of C{acme:} are what the reader gives keys
        left out.
        """
        config = load_config(self.path("acme: {}\n"))
        assert config.acme is not None
        properties = routes_schema()["$defs"]["acme"]["properties"]
        read = {
            "directory": config.acme.directory,
            "storage": str(config.acme.storage.relative_to(self.folder)),
            "renew_before": config.acme.renew_before,
        }
        found = {k: v["default"] for k, v in properties.items() if "default" in v}
        self.assertEqual(found, read)

    def test_own_certificates_too(self) -> None:
        """
        A listener with certificates of its own serves ACME's too, unless
        it says C{acme: false}.
        """
        Authority(self.folder).issue(["own.test"], to=self.folder / "own.pem")
        listen = (
            "listen:\n"
            "  - tcp:8080\n"
            "  - {endpoint: 'tcp:8443', tls: {certificates: own.pem}}\n"
            "  - {endpoint: 'tcp:9443', tls: {certificates: own.pem, acme: false}}\n"
        )
        config = load_config(self.path("acme: {}\n", listen))
        served = [spec.tls.acme for spec in config.listeners if spec.tls]
        self.assertEqual(served, [True, False])

    def test_problems(self) -> None:
        """
        Each mistake gets its line, its place and what to write instead.
        """
        no_tls = "listen: tcp:8080\n"
        tls_only = "listen:\n  - {endpoint: 'tcp:8443', tls: {acme: true}}\n"
        no_hosts = "routes: {/: {static: pub}}\n"
        cases: list[tuple[str, str, str, str]] = [
            ("acme: true\n", LISTEN, HOSTS, "8: acme: expected a mapping"),
            ("acme: {mail: x}\n", LISTEN, HOSTS, "8: acme.mail: unknown key"),
            (
                "acme: {email: admin}\n",
                LISTEN,
                HOSTS,
                "8: acme.email: expected an e-mail address",
            ),
            (
                "acme: {directory: 'http://ca.test/dir'}\n",
                LISTEN,
                HOSTS,
                "8: acme.directory: expected the https:// URL",
            ),
            (
                "acme: {storage: no/such}\n",
                LISTEN,
                HOSTS,
                "8: acme.storage: the folder",
            ),
            (
                "acme: {ca_bundle: none.pem}\n",
                LISTEN,
                HOSTS,
                "8: acme.ca_bundle: no such file",
            ),
            (
                "acme: {renew_before: 0}\n",
                LISTEN,
                HOSTS,
                "8: acme.renew_before: must be >= 0.0001",
            ),
            (
                "acme:\n  names:\n    - a.test\n    - '*.a.test'\n",
                LISTEN,
                HOSTS,
                "11: acme.names[1]: *.a.test: a wildcard needs the DNS-01",
            ),
            (
                "acme: {names: ['127.0.0.1']}\n",
                LISTEN,
                HOSTS,
                "8: acme.names[0]: 127.0.0.1: an IP address",
            ),
            (
                "acme: {names: [a.test, A.test.]}\n",
                LISTEN,
                HOSTS,
                "8: acme.names[1]: a.test is listed twice",
            ),
            ("acme: {names: []}\n", LISTEN, HOSTS, "8: acme.names: expected a list"),
            ("acme: {}\n", LISTEN, no_hosts, "5: acme: no host name"),
            ("acme: {}\n", no_tls, HOSTS, "6: acme: no TLS listener serves"),
            ("acme: {}\n", tls_only, HOSTS, "7: acme: the CA checks HTTP-01"),
            (
                "",
                "listen:\n  - tcp:80\n  - {endpoint: 'tcp:443', tls: {acme: true}}\n",
                HOSTS,
                "3: listen[1].tls.acme: there is no top-level 'acme:'",
            ),
            ("", LISTEN, HOSTS, "3: listen[1].tls.certificates: no certificates"),
        ]
        for acme, listen, hosts, wanted in cases:
            problems = self.problems(acme, listen, hosts)
            self.assertEqual(len(problems), 1, (acme, listen, problems))
            self.assertTrue(problems[0].startswith(wanted), (wanted, problems))


class StorageTests(SynchronousTestCase):
    """
    The storage folder: 0700 folders, 0600 files, written whole.
    """

    def setUp(self) -> None:
        self.folder = _folder(self)
        self.storage = AcmeStorage(self.folder / "acme")
        self.authority = Authority(self.folder)

    def mode(self, path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    def pem(self, names: list[str]) -> tuple[bytes, bytes]:
        crt, key = self.authority.issue_pair(names)
        return key.read_bytes(), crt.read_bytes()

    def test_folders(self) -> None:
        """
        The folders are made 0700, and an existing one is made 0700 too.
        """
        (self.folder / "acme").mkdir(mode=0o755)
        os.chmod(self.folder / "acme", 0o755)
        self.storage.prepare()
        self.assertEqual(self.mode(self.storage.folder), 0o700)
        self.assertEqual(self.mode(self.storage.certs), 0o700)

    def test_account(self) -> None:
        """
        The account key is made once (0600) and read back after; the
        account's URL is kept per directory (0600).
        """
        self.storage.prepare()
        key = self.storage.account_key()
        self.assertIn(b"PRIVATE KEY", key)
        self.assertEqual(self.storage.account_key(), key)
        self.assertEqual(self.mode(self.storage.account_key_path), 0o600)
        self.assertIsNone(self.storage.account_url("https://a/dir"))
        self.storage.remember_account("https://a/dir", "https://a/acct/1")
        self.storage.remember_account("https://b/dir", "https://b/acct/2")
        self.assertEqual(self.storage.account_url("https://a/dir"), "https://a/acct/1")
        self.assertEqual(self.mode(self.storage.account_path), 0o600)
        self.assertEqual(len(json.loads(self.storage.account_path.read_text())), 2)

    def test_save_and_load(self) -> None:
        """
        A certificate is stored (0600, key and chain in one file, nothing
        left beside it) and read back as the listener serves it; a new one
        replaces it.
        """
        self.storage.prepare()
        first = self.storage.save("a.test", *self.pem(["a.test"]))
        path = self.storage.path_of("a.test")
        self.assertEqual(first.names, ("a.test",))
        self.assertEqual(first.source, str(path))
        self.assertEqual(self.mode(path), 0o600)
        second = self.storage.save("a.test", *self.pem(["a.test"]))
        self.assertEqual(os.listdir(self.storage.certs), ["a.test.pem"])
        found, problems = self.storage.load(("a.test", "b.test"))
        self.assertEqual(problems, [])
        self.assertEqual(list(found), ["a.test"])
        self.assertEqual(found["a.test"].not_after, second.not_after)
        self.assertEqual(load_certificates([path])[0].names, ("a.test",))

    def test_bad_chain_kept_out(self) -> None:
        """
        A chain that is not the key's is refused and the stored one stays.
        """
        self.storage.prepare()
        self.storage.save("a.test", *self.pem(["a.test"]))
        before = self.storage.path_of("a.test").read_bytes()
        key, _ = self.pem(["a.test"])
        _, chain = self.pem(["a.test"])
        self.assertRaises(CertificateError, self.storage.save, "a.test", key, chain)
        self.assertEqual(self.storage.path_of("a.test").read_bytes(), before)
        self.assertEqual(os.listdir(self.storage.certs), ["a.test.pem"])

    def test_load_problems(self) -> None:
        """
        A stored file for another name, or one that is not a certificate,
        is named with what is wrong; it is not served.
        """
        self.storage.prepare()
        key, chain = self.pem(["other.test"])
        self.storage.path_of("a.test").write_bytes(key + chain)
        self.storage.path_of("b.test").write_bytes(b"junk")
        found, problems = self.storage.load(("a.test", "b.test"))
        self.assertEqual(found, {})
        self.assertIn("a.test.pem: not a certificate for a.test", problems[0])
        self.assertIn("b.test.pem: no PEM certificate", problems[1])


class ScheduleTests(SynchronousTestCase):
    """
    Renewal times, back-off and the timer's delay.
    """

    def test_renewal_time(self) -> None:
        """
        C{renew_before} before expiry, but not before two thirds of the
        lifetime.
        """
        cases = [
            ((0, 90 * DAY, 30 * DAY), 60 * DAY),  # Let's Encrypt's 90 days
            ((0, 90 * DAY, 10 * DAY), 80 * DAY),
            ((0, 6 * DAY, 30 * DAY), 4 * DAY),  # a short-lived certificate
            ((100, 109, 30 * DAY), 106),  # Pebble's 9 seconds in the e2e test
            ((50, 50, DAY), 50),  # no lifetime: at once
        ]
        for (before, after, renew), wanted in cases:
            self.assertEqual(renewal_time(before, after, renew), wanted)

    def test_backoff(self) -> None:
        """
        One minute after the first failure, doubled each time, a day at
        most, however many failures.
        """
        cases = {0: 0, 1: 60, 2: 120, 3: 240, 11: 61440, 12: DAY, 1000: DAY}
        for failures, wanted in cases.items():
            self.assertEqual(backoff(failures), wanted, failures)

    def test_next_wakeup(self) -> None:
        """
        The earliest due time, at once when it has passed, and never later
        than a look every L{CHECK_EVERY}.
        """
        self.assertEqual(next_wakeup(100, []), CHECK_EVERY)
        self.assertEqual(next_wakeup(100, [150, 130]), 30)
        self.assertEqual(next_wakeup(100, [50, 500]), 0)
        self.assertEqual(next_wakeup(100, [100 + 30 * DAY]), CHECK_EVERY)


class StoreTests(SynchronousTestCase):
    """
    A TLS listener's certificates: its own and the issued ones.
    """

    def setUp(self) -> None:
        self.folder = _folder(self)
        self.authority = Authority(self.folder)

    def certificate(self, names: list[str]) -> Any:
        return load_certificates([self.authority.issue(names)])[0]

    def test_placeholder_until_issued(self) -> None:
        """
        With nothing to serve yet, a self-signed certificate for no name;
        the issued ones replace it, and it comes back when they go.
        """
        store = CertificateStore([], acme=True)
        self.assertTrue(store.placeholder)
        self.assertEqual(store.default.names, ())
        placeholder = store.default
        issued = self.certificate(["a.test"])
        store.serve_issued([issued])
        self.assertFalse(store.placeholder)
        self.assertIs(store.certificate_for("a.test"), issued)
        self.assertIs(store.certificate_for(None), issued)
        store.serve_issued([])
        self.assertIs(store.default, placeholder)

    def test_own_first(self) -> None:
        """
        For a name both are for, the listener's own certificate wins; the
        issued ones serve the other names; the default stays the own
        one's, and a reload's L{replace} keeps the issued ones.
        """
        own = self.certificate(["a.test", "b.test"])
        store = CertificateStore([own], acme=True)
        issued_a, issued_c = self.certificate(["a.test"]), self.certificate(["c.test"])
        store.serve_issued([issued_a, issued_c])
        self.assertIs(store.certificate_for("a.test"), own)
        self.assertIs(store.certificate_for("c.test"), issued_c)
        self.assertIs(store.certificate_for("x.test"), own)
        store.replace([])
        self.assertIs(store.certificate_for("a.test"), issued_a)
        self.assertIs(store.certificate_for("x.test"), issued_a)

    def test_none_without_acme(self) -> None:
        """
        A listener that takes no issued certificates needs one of its own.
        """
        self.assertRaises(CertificateError, CertificateStore, [])


class ChallengeTests(SynchronousTestCase):
    """
    The HTTP-01 answers of the site, for any host, before routing.
    """

    def listener(self, challenges: dict[bytes, bytes] | None) -> Any:
        site, listener = _site(https_redirect=443)
        site.acme_challenges = challenges
        return listener

    def test_answered(self) -> None:
        """
        A pending token gets its key authorization as text/plain, on a
        listener that redirects everything else to HTTPS, for any host.
        """
        listener = self.listener({b"tok-1": b"tok-1.thumb"})
        for host in (b"a.test", b"other.test:80"):
            answer = _request(
                listener,
                b"GET /.well-known/acme-challenge/tok-1 HTTP/1.1\r\n"
                b"Host: %s\r\n\r\n" % host,
            )
            self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer)
            self.assertIn(b"\r\nContent-Type: text/plain\r\n", answer)
            self.assertIn(b"\r\nContent-Length: 11\r\n", answer)
            self.assertTrue(answer.endswith(b"\r\n\r\ntok-1.thumb"), answer)

    def test_head(self) -> None:
        """
        HEAD gets the headers alone.
        """
        listener = self.listener({b"tok": b"tok.thumb"})
        answer = _request(
            listener,
            b"HEAD /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: a.test\r\n\r\n",
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer)
        self.assertTrue(answer.endswith(b"\r\n\r\n"), answer)

    def test_others_routed(self) -> None:
        """
        An unknown token, another method, or no ACME at all: the request
        goes on as any other (here, not redirected, to the route).
        """
        requests = [
            ({b"tok": b"x"}, b"GET /.well-known/acme-challenge/other HTTP/1.1\r\n"),
            ({b"tok": b"x"}, b"DELETE /.well-known/acme-challenge/tok HTTP/1.1\r\n"),
            (None, b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\n"),
        ]
        for challenges, line in requests:
            answer = _request(self.listener(challenges), line + b"Host: a.test\r\n\r\n")
            self.assertNotIn(b"\r\n\r\nx", answer)
            self.assertNotIn(b" 301 ", answer.split(b"\r\n")[0])

    def test_not_on_redirects_without_acme(self) -> None:
        """
        Without ACME, other paths of a redirecting listener still redirect.
        """
        answer = _request(self.listener(None), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 301 "), answer)


class _Clock(MemoryReactorClock):
    """
    A clock whose calls from other threads are run by L{run_from_threads}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._lock = threading.Lock()

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            self.from_threads.append((f, args))

    def run_from_threads(self) -> int:
        with self._lock:
            calls, self.from_threads = self.from_threads, []
        for f, args in calls:
            f(*args)
        return len(calls)


class ServiceTests(SynchronousTestCase):
    """
    The ACME service at start and stop, with a stored certificate: no
    order, so no CA.
    """

    def test_stored_served_and_scheduled(self) -> None:
        """
        At start the stored certificate is served on every listener that
        takes them, the site answers challenges, and the one timer is set
        for the next look (no order: nothing is due); at stop the timer
        and the challenges go, and the thread pool stops.
        """
        folder = _folder(self)
        authority = Authority(folder)
        storage = AcmeStorage(folder / "acme")
        storage.prepare()
        crt, key = authority.issue_pair(["a.test"], days=90)
        storage.save("a.test", key.read_bytes(), crt.read_bytes())
        clock = _Clock()
        clock.advance(time.time())
        site, _ = _site()
        config = Acme(names=("a.test",), storage=folder / "acme")
        service = AcmeService(config, clock, site)
        store = CertificateStore([], acme=True)
        service.serve_on(store)
        self.assertTrue(store.placeholder)
        service.startService()
        self.assertIs(site.acme_challenges, service.challenges)
        self.assertEqual(store.certificate_for("a.test").names, ("a.test",))
        self.assertFalse(store.placeholder)
        [timer] = clock.getDelayedCalls()
        self.assertAlmostEqual(timer.getTime() - clock.seconds(), CHECK_EVERY)
        stopped = service.stopService()
        self.assertTrue(timer.cancelled)
        self.assertIsNone(site.acme_challenges)
        wait_until(clock.run_from_threads, "the pool's stop")
        self.successResultOf(stopped)
