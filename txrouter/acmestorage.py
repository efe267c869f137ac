"""
Where the ACME service keeps what it must not lose: the account key, the
account's URL at its CA, and each name's certificate with its key.

    storage/                 mode 0700
      account.key            mode 0600: the account's private key (PEM)
      account.json           mode 0600: {directory: account URL}
      certs/                 mode 0700
        example.com.pem      mode 0600: key and certificate chain

A certificate file is what L{txrouter.certificates.load_certificates}
reads (a key and its chain in one PEM file, HAProxy's way), so a folder
of them can be given to a listener's C{tls.certificates} too. Every file
is written to a temporary name and renamed: a crash leaves the old file
or the new one, never half of one. Nothing here touches the reactor: the
ACME service calls it in its own thread (and once at start).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from txrouter.certificates import Certificate, CertificateError, load_certificates

__all__ = ["AcmeStorage", "new_key_pem"]


def new_key_pem() -> bytes:
    """
    A new private key (ECDSA P-256, which every current client accepts),
    as unencrypted PKCS#8 PEM.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    """
    Replace C{path} with C{data}, readable by its owner alone (0600).
    """
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600
    )
    try:
        os.fchmod(fd, 0o600)  # a file left by an earlier crash keeps its mode
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


class AcmeStorage:
    """
    The storage folder of C{acme:}.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.certs = folder / "certs"
        self.account_key_path = folder / "account.key"
        self.account_path = folder / "account.json"

    def prepare(self) -> None:
        """
        Make the folders (mode 0700; an existing one is made 0700 too).

        @raise OSError: they cannot be made.
        """
        for folder in (self.folder, self.certs):
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)

    def account_key(self) -> bytes:
        """
        The account key's PEM: the stored one, or a new one stored now.
        """
        try:
            return self.account_key_path.read_bytes()
        except FileNotFoundError:
            pem = new_key_pem()
            _write_private(self.account_key_path, pem)
            return pem

    def account_url(self, directory: str) -> str | None:
        """
        The URL of the account made at C{directory} with the stored key,
        if one was.
        """
        try:
            known = json.loads(self.account_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        url = known.get(directory) if isinstance(known, dict) else None
        return url if isinstance(url, str) else None

    def remember_account(self, directory: str, url: str) -> None:
        """
        Store the URL of the account made at C{directory}.
        """
        known: dict[str, Any] = {}
        try:
            loaded = json.loads(self.account_path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                known = loaded
        except (FileNotFoundError, ValueError):
            pass
        known[directory] = url
        text = json.dumps(known, indent=2, sort_keys=True) + "\n"
        _write_private(self.account_path, text.encode())

    def path_of(self, name: str) -> Path:
        """
        The file of C{name}'s certificate.
        """
        return self.certs / f"{name}.pem"

    def save(self, name: str, key_pem: bytes, chain_pem: bytes) -> Certificate:
        """
        Store C{name}'s new certificate (replacing the old one) and read
        it back as it will be served.

        @raise CertificateError: the CA's chain cannot be served with the
            key (nothing is stored then).
        """
        path = self.path_of(name)
        data = key_pem + chain_pem
        # Checked before it replaces a good one.
        temporary = path.with_name(f".{path.name}.new")
        _write_private(temporary, data)
        try:
            load_certificates([temporary])
        except BaseException:
            temporary.unlink()
            raise
        os.replace(temporary, path)
        (certificate,) = load_certificates([path])
        return certificate

    def load(self, names: tuple[str, ...]) -> tuple[dict[str, Certificate], list[str]]:
        """
        The stored certificates of C{names}.

        @return: the certificates by name, and why each file that exists
            could not be used.
        """
        found: dict[str, Certificate] = {}
        problems: list[str] = []
        for name in names:
            path = self.path_of(name)
            if not path.exists():
                continue
            try:
                (certificate,) = load_certificates([path])
            except CertificateError as e:
                problems.append(str(e))
                continue
            if name not in certificate.names:
                problems.append(f"{path}: not a certificate for {name}")
                continue
            found[name] = certificate
        return found, problems
