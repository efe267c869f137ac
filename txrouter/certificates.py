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

import dataclasses
import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.ssl import CertificateOptions, ContextFactory, TLSVersion

__all__ = [
    "Certificate",
    "CertificateError",
    "CertificateStore",
    "load_certificates",
    "self_signed",
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
    @ivar not_before: when it became valid (UTC).
    """

    names: tuple[str, ...]
    not_after: datetime.datetime
    source: str
    context: Any
    not_before: datetime.datetime | None = None


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
    return _serve(chain, key, source)


def _serve(chain: Sequence[x509.Certificate], key: Any, source: str) -> Certificate:
    leaf = chain[0]
    # Twisted's settings (ciphers, curves, options), with session tickets
    # (a returning client resumes its session rather than make a full
    # handshake, as nginx's default lets it), then the certificate.
    context = CertificateOptions(
        raiseMinimumTo=TLSVersion.TLSv1_2, enableSessionTickets=True
    ).getContext()
    try:
        context.use_certificate(leaf)
        for extra in chain[1:]:
            context.add_extra_chain_cert(extra)
        context.use_privatekey(key)
        context.check_privatekey()
    except SSL.Error:
        raise CertificateError(
            f"{source}: the private key is not the certificate's"
        ) from None
    context.set_options(SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_COMPRESSION)
    after, before = leaf.not_valid_after_utc, leaf.not_valid_before_utc
    return Certificate(_names(leaf), after, source, context, before)


def self_signed() -> Certificate:
    """
    A certificate for no name, signed by its own key: what a TLS listener
    serves while it has no other (one whose certificates an ACME CA has
    not issued yet). Clients do not trust it; it lets the handshake end
    with a clear certificate error rather than a TLS alert.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "txrouter: no certificate yet")]
    )
    now = datetime.datetime.now(datetime.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .sign(key, hashes.SHA256())
    )
    made = _serve([leaf], key, "(self-signed, made at start)")
    # Served to clients that name no known server, never for a name.
    return dataclasses.replace(made, names=())


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
    handshake: its own (L{replace}) and those an ACME CA issued
    (L{serve_issued}); each call changes them for the handshakes that
    follow. For a name both are for, the listener's own wins: a
    certificate named in the routes file is the operator's choice.

    @ivar certificates: what it serves: its own, then the issued ones
        (or a self-signed placeholder when it has neither).
    @ivar default: the certificate for clients that name no server, or
        one no certificate is for: the default of its own, else the first
        issued one, else the placeholder.
    """

    #: Certificates an ACME CA issued, served beside the listener's own.
    issued: tuple[Certificate, ...] = ()
    _placeholder: Certificate | None = None

    def __init__(
        self, certificates: Sequence[Certificate], default: int = 0, acme: bool = False
    ) -> None:
        """
        @param default: the index of the certificate (of C{certificates})
            for clients that name no server, or one no certificate is for.
        @param acme: it serves issued certificates too, so it may have none
            of its own (L{placeholder} until the first is issued).
        """
        self.acme = acme
        self.replace(certificates, default)

    @property
    def placeholder(self) -> bool:
        """
        Whether it has no certificate but a self-signed one made at start.
        """
        return self.default is self._placeholder

    def replace(self, certificates: Sequence[Certificate], default: int = 0) -> None:
        """
        Serve C{certificates} as the listener's own from the next handshake
        on (the issued ones stay).
        """
        if not certificates and not self.acme:
            raise CertificateError("a TLS listener needs at least one certificate")
        self._own, self._own_default = tuple(certificates), default
        self._build()

    def serve_issued(self, certificates: Sequence[Certificate]) -> None:
        """
        Serve C{certificates}, issued by an ACME CA, beside the listener's
        own from the next handshake on.
        """
        self.issued = tuple(certificates)
        self._build()

    def _build(self) -> None:
        certificates = (*self._own, *self.issued)
        if self._own:
            default = self._own[self._own_default]
        elif self.issued:
            default = self.issued[0]
        else:
            if self._placeholder is None:
                self._placeholder = self_signed()
            default = self._placeholder
            certificates = (default,)
        exact: dict[str, Certificate] = {}
        wild: dict[str, Certificate] = {}
        for certificate in certificates:
            for name in certificate.names:
                table = wild if name.startswith("*.") else exact
                table.setdefault(name.removeprefix("*."), certificate)
        self.certificates = certificates
        self.default = default
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
