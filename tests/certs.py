"""
Certificates made for the tests: a private certificate authority and the
certificates it signs, written as PEM files.

    authority = Authority(folder)
    pem = authority.issue(["example.com", "*.example.com"])  # key + chain
    crt, key = authority.issue_pair(["other.test"])
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import program

__all__ = ["Authority"]

_DAY = datetime.timedelta(days=1)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Authority:
    """
    A certificate authority whose certificate is C{folder/ca.pem}.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "txrouter test CA")])
        now = datetime.datetime.now(datetime.UTC)
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(self._key, hashes.SHA256())
        )
        self.path = folder / "ca.pem"
        self.path.write_bytes(
            self._certificate.public_bytes(serialization.Encoding.PEM)
        )
        self._count = 0

    def _make(self, names: Sequence[str], days: int) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        alternatives: list[x509.GeneralName] = []
        for name in names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        certificate = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
            )
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + days * _DAY)
            .add_extension(x509.SubjectAlternativeName(alternatives), False)
            .sign(self._key, hashes.SHA256())
        )
        chain = certificate.public_bytes(
            serialization.Encoding.PEM
        ) + self._certificate.public_bytes(serialization.Encoding.PEM)
        return chain, _pem_key(key)

    def issue(
        self, names: Sequence[str], days: int = 10, to: Path | None = None
    ) -> Path:
        """
        A certificate for C{names}: one PEM file holding its key and chain.
        """
        chain, key = self._make(names, days)
        self._count += 1
        path = to or self.folder / f"cert{self._count}.pem"
        path.write_bytes(key + chain)
        return path

    def issue_pair(self, names: Sequence[str], days: int = 10) -> tuple[Path, Path]:
        """
        A certificate for C{names}: its chain and its key in two files.
        """
        chain, key = self._make(names, days)
        self._count += 1
        crt = self.folder / f"cert{self._count}.crt"
        key_path = self.folder / f"cert{self._count}.key"
        crt.write_bytes(chain)
        key_path.write_bytes(key)
        return crt, key_path

    def curl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """
        Run curl with C{args}, trusting this authority (and no other).
        """
        return subprocess.run(
            [
                program("curl", "curl"),
                "--silent",
                "--show-error",
                "--cacert",
                str(self.path),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
