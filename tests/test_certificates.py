"""
Tests of L{txrouter.certificates}: certificates read from PEM files and
chosen by server name, proven by real TLS handshakes in memory (the
store's OpenSSL context against Python's C{ssl} client, which checks what
it is served).
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
import tempfile
import warnings
from pathlib import Path

import pytest
from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import Authority
from txrouter.certificates import CertificateError, CertificateStore, load_certificates

pytestmark = pytest.mark.unit


def handshake(
    store: CertificateStore,
    authority: Authority,
    name: str | None,
    only: str | None = None,
) -> str | None:
    """
    A real TLS handshake, in memory, between C{store}'s context (the server,
    pyOpenSSL) and Python's C{ssl} client naming C{name} (no SNI for
    L{None}), which checks the certificate it gets against C{authority}
    (and C{name}), offering C{only} that TLS version if given.

    @return: the common name of the certificate served, or L{None} when the
        handshake failed.
    """
    server = SSL.Connection(store.getContext(), None)
    server.set_accept_state()
    context = ssl.create_default_context(cafile=str(authority.path))
    context.check_hostname = name is not None
    if only is not None:
        with warnings.catch_warnings():  # an old version, on purpose
            warnings.simplefilter("ignore", DeprecationWarning)
            version = getattr(ssl.TLSVersion, only)
            context.minimum_version = context.maximum_version = version
        # OpenSSL 3 would refuse TLS 1.1 itself at its default level.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=name)
    for _ in range(10):
        try:
            client.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            return None
        else:
            subject = dict(pair[0] for pair in client.getpeercert()["subject"])
            return str(subject["commonName"])
        server.bio_write(outgoing.read())
        try:
            server.do_handshake()
        except SSL.WantReadError:
            pass
        except SSL.Error:
            return None
        with contextlib.suppress(SSL.WantReadError):
            incoming.write(server.bio_read(1 << 16))
    raise AssertionError("the handshake did not end")


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="txrouter-certs-"))
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.authority = Authority(self.folder)

    def store(self, *names: list[str]) -> CertificateStore:
        paths = [self.authority.issue(n) for n in names]
        return CertificateStore(load_certificates(paths))

    def test_by_name(self) -> None:
        """
        Each client gets the certificate for the name it asks for, and its
        check of that certificate passes.
        """
        store = self.store(["a.test"], ["b.test", "www.b.test"])
        for name in ("a.test", "b.test", "www.b.test", "WWW.B.TEST"):
            served = handshake(store, self.authority, name.lower())
            self.assertEqual(served, "a.test" if name == "a.test" else "b.test")

    def test_wildcard(self) -> None:
        """
        C{*.example.test} serves one label below it, not two, not itself;
        an exact name wins over a wildcard.
        """
        store = self.store(["default.test"], ["*.example.test"], ["x.example.test"])
        cases = {
            "a.example.test": "*.example.test",
            "x.example.test": "x.example.test",
            "a.b.example.test": "default.test",
            "example.test": "default.test",
        }
        for name, expected in cases.items():
            self.assertEqual(store.certificate_for(name).names[0], expected, name)

    def test_default(self) -> None:
        """
        A client without SNI, or naming a host no certificate is for, gets
        the default: the first certificate, or the one named.
        """
        store = self.store(["first.test"], ["second.test"])
        served = handshake(store, self.authority, None)
        self.assertEqual(served, "first.test")
        self.assertEqual(store.certificate_for("unknown.test").names, ("first.test",))
        paths = [self.authority.issue(["one.test"]), self.authority.issue(["two.test"])]
        store = CertificateStore(load_certificates(paths), default=1)
        self.assertEqual(store.certificate_for(None).names, ("two.test",))

    def test_replace(self) -> None:
        """
        After L{CertificateStore.replace}, new handshakes get the new
        certificates.
        """
        store = self.store(["old.test"])
        store.replace(load_certificates([self.authority.issue(["new.test"])]))
        served = handshake(store, self.authority, "new.test")
        self.assertEqual(served, "new.test")

    def test_tls_1_1_refused(self) -> None:
        """
        A client that offers nothing newer than TLS 1.1 gets no connection.
        """
        store = self.store(["a.test"])
        self.assertEqual(handshake(store, self.authority, "a.test"), "a.test")
        old = handshake(store, self.authority, "a.test", only="TLSv1_1")
        self.assertIsNone(old)

    def test_no_renegotiation(self) -> None:
        """
        Renegotiation is turned off on every certificate's context.
        """
        store = self.store(["a.test"], ["b.test"])
        for certificate in store.certificates:
            options = certificate.context.set_options(0)  # reads them
            self.assertTrue(options & SSL.OP_NO_RENEGOTIATION)


class LoadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="txrouter-certs-"))
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.authority = Authority(self.folder)

    def test_pair(self) -> None:
        """
        A certificate file and its key file.
        """
        crt, key = self.authority.issue_pair(["pair.test"])
        [certificate] = load_certificates([(crt, key)])
        self.assertEqual(certificate.names, ("pair.test",))

    def test_folder(self) -> None:
        """
        A folder's .pem files and certbot-style folders, in name order.
        """
        certs = self.folder / "certs"
        certs.mkdir()
        self.authority.issue(["b.test"], to=certs / "b.pem")
        crt, key = self.authority.issue_pair(["a.test"])
        (certs / "a").mkdir()
        crt.rename(certs / "a" / "fullchain.pem")
        key.rename(certs / "a" / "privkey.pem")
        (certs / "notes.txt").write_text("not a certificate")
        names = [c.names for c in load_certificates([certs])]
        self.assertEqual(names, [("a.test",), ("b.test",)])

    def test_problems(self) -> None:
        """
        What cannot be served is refused, naming the file and the problem.
        """
        empty = self.folder / "empty"
        empty.mkdir()
        garbage = self.folder / "garbage.pem"
        garbage.write_text("hello")
        crt, _ = self.authority.issue_pair(["a.test"])
        _, other_key = self.authority.issue_pair(["b.test"])
        cases = [
            ([self.folder / "missing.pem"], "cannot read it"),
            ([empty], "no certificate found"),
            ([garbage], "no PEM certificate in it"),
            ([crt], "no usable private key"),
            ([(crt, other_key)], "the private key is not the certificate's"),
        ]
        for paths, message in cases:
            error = self.assertRaises(CertificateError, load_certificates, paths)
            self.assertIn(message, str(error))
