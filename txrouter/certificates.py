"""
Certificates chosen by server name (SNI) for a TLS listener.

    store = CertificateStore(load_certificates([Path("certs/")]))
    context = store.server_context()      # what a TLS listener serves with
    store.replace(load_certificates(...))  # a reload: new handshakes only

Each certificate is read from PEM files, as the ACME tools and web servers
write them: a file holding the key and the certificate chain (HAProxy's
C{crt} files), a certificate file and its key file, or a folder of either
(and of certbot's C{live/NAME/} folders, each a C{fullchain.pem} and a
C{privkey.pem}). It serves the DNS names of its C{subjectAltName} (its
common name when it has none), C{*.} wildcards for one label included. A
client that names no server, or one no certificate is for, gets the
default certificate: the first one read, unless another is named.

Every certificate's context has the same safe settings: TLS 1.2 and newer
only, Twisted's cipher list (forward secrecy and AEAD ciphers first, no
RC4, no 3DES), no renegotiation, no compression.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.ssl import CertificateOptions, ContextFactory, TLSVersion

__all__ = [
    "Certificate",
    "CertificateError",
    "CertificateStore",
    "load_certificates",
]

# The files of one certificate in a certbot-style folder.
_CERTBOT = ("fullchain.pem", "privkey.pem")


class CertificateError(ValueError):
    """
    A certificate or key that cannot be served; the message says why.
    """


@dataclass(frozen=True)
class Certificate:
    """
    One certificate, its chain and its key, ready to serve.

    @ivar names: the host names it is for (lower case; C{*.} wildcards).
    @ivar not_after: when it expires (UTC).
    @ivar source: the file(s) it was read from, for messages.
    @ivar context: the OpenSSL context that serves it.
    """

    names: tuple[str, ...]
    not_after: datetime.datetime
    source: str
    context: Any


def load_certificates(paths: Sequence[Path | tuple[Path, Path]]) -> list[Certificate]:
    """
    Read certificates from C{paths}: each a file holding a key and its
    chain, a (certificate, key) pair of files, or a folder of those files
    and certbot-style folders (read in name order).

    @raise CertificateError: for the first that cannot be served, naming
        its file and what is wrong.
    """
    found: list[Certificate] = []
    for path in paths:
        if isinstance(path, tuple):
            found.append(_read(path[0], path[1]))
        elif path.is_dir():
            found.extend(_folder(path))
        else:
            found.append(_read(path, None))
    return found


def _folder(folder: Path) -> Iterable[Certificate]:
    entries = sorted(folder.iterdir())
    any_found = False
    for entry in entries:
        if entry.is_dir() and all((entry / f).is_file() for f in _CERTBOT):
            any_found = True
            yield _read(entry / _CERTBOT[0], entry / _CERTBOT[1])
        elif entry.is_file() and entry.suffix == ".pem":
            any_found = True
            yield _read(entry, None)
    if not any_found:
        raise CertificateError(
            f"{folder}: no certificate found; expected .pem files each holding "
            "a key and its certificate chain, or folders holding fullchain.pem "
            "and privkey.pem"
        )


def _read(cert_path: Path, key_path: Path | None) -> Certificate:
    source = str(cert_path) if key_path is None else f"{cert_path} + {key_path}"
    try:
        data = cert_path.read_bytes()
        key_data = data if key_path is None else key_path.read_bytes()
    except OSError as e:
        raise CertificateError(f"{source}: cannot read it: {e.strerror}") from None
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError(
            f"{cert_path}: no PEM certificate in it; expected "
            "'-----BEGIN CERTIFICATE-----' blocks"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as e:
        raise CertificateError(
            f"{key_path or cert_path}: no usable private key in it ({e}); "
            "expected an unencrypted PEM key"
        ) from None
    leaf = chain[0]
    # Twisted's settings (ciphers, curves, options), then the certificate.
    context = CertificateOptions(raiseMinimumTo=TLSVersion.TLSv1_2).getContext()
    try:
        context.use_certificate(leaf)
        for extra in chain[1:]:
            context.add_extra_chain_cert(extra)
        context.use_privatekey(key)  # type: ignore[arg-type]
        context.check_privatekey()
    except SSL.Error:
        raise CertificateError(
            f"{source}: the private key is not the certificate's"
        ) from None
    context.set_options(SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_COMPRESSION)
    return Certificate(_names(leaf), leaf.not_valid_after_utc, source, context)


def _names(certificate: x509.Certificate) -> tuple[str, ...]:
    try:
        alternative = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except x509.ExtensionNotFound:
        common = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return tuple(str(a.value).lower() for a in common)
    return tuple(n.lower() for n in alternative.value.get_values_for_type(x509.DNSName))


class CertificateStore(ContextFactory):
    """
    The certificates of one TLS listener, chosen by server name at each
    handshake; L{replace} changes them for the handshakes that follow.
    """

    def __init__(self, certificates: Sequence[Certificate], default: int = 0) -> None:
        """
        @param default: the index of the certificate for clients that name
            no server, or one no certificate is for.
        """
        self.replace(certificates, default)

    def replace(self, certificates: Sequence[Certificate], default: int = 0) -> None:
        """
        Serve C{certificates} from the next handshake on.
        """
        if not certificates:
            raise CertificateError("a TLS listener needs at least one certificate")
        exact: dict[str, Certificate] = {}
        wild: dict[str, Certificate] = {}
        for certificate in certificates:
            for name in certificate.names:
                table = wild if name.startswith("*.") else exact
                table.setdefault(name.removeprefix("*."), certificate)
        self.certificates = tuple(certificates)
        self.default = certificates[default]
        self._exact, self._wild = exact, wild
        # The handshake starts on the default certificate's context; the
        # callback moves it to the one the client names.
        self._front = self.default.context
        self._front.set_tlsext_servername_callback(self._choose)

    def certificate_for(self, name: str | None) -> Certificate:
        """
        The certificate served to a client that names C{name}: one for that
        name, else one for C{*.} and its parent (a wildcard stands for one
        label, RFC 6125), else the default.
        """
        if name:
            name = name.lower().rstrip(".")
            found = self._exact.get(name)
            first, _, parent = name.partition(".")
            if found is None and first:
                found = self._wild.get(parent)
            if found is not None:
                return found
        return self.default

    def _choose(self, connection: SSL.Connection) -> None:
        raw = connection.get_servername()
        name = raw.decode("ascii", "replace") if raw else None
        certificate = self.certificate_for(name)
        if certificate.context is not connection.get_context():
            connection.set_context(certificate.context)

    def getContext(self) -> Any:
        return self._front
