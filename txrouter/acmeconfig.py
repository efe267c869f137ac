"""
The top-level C{acme:} of a routes file: certificates obtained and renewed
from an ACME CA (RFC 8555), for the host names the router serves.

    acme:
      email: admin@example.com             # the account's contact (optional)
      directory: https://acme-v02.api.letsencrypt.org/directory   # the default
      storage: acme                        # account key and certificates
      renew_before: 30                     # days before expiry
      names: [example.com, www.example.com]   # default: the exact hosts: names
    listen:
      - {endpoint: "tcp:80", https_redirect: true}   # the CA's HTTP-01 checks
      - {endpoint: "tcp:443", tls: {acme: true}}

Challenges are HTTP-01 only, answered by the router on its plain HTTP
listeners: a C{*.} wildcard needs DNS-01, so wildcard hosts are left out
(with a warning) and refused in C{names:}. L{txrouter.acmeservice} does the
work once the router runs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from txrouter.configreader import describe
from txrouter.yamlsource import LocatedDict, LocatedList

if TYPE_CHECKING:
    from txrouter.configreader import ConfigReader
    from txrouter.listeners import Listener

__all__ = [
    "DEFAULT_RENEW_BEFORE",
    "DEFAULT_STORAGE",
    "KEYS",
    "LETS_ENCRYPT",
    "Acme",
    "read_acme",
]

#: Let's Encrypt's production directory: the default CA.
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
#: The folder of the account key and the certificates, beside the routes
#: file unless it names another.
DEFAULT_STORAGE = "acme"
#: Days before expiry that a certificate is renewed (at most a third of its
#: lifetime: see L{txrouter.acmeschedule.renewal_time}).
DEFAULT_RENEW_BEFORE = 30.0
#: The keys of C{acme:}.
KEYS = ("email", "directory", "storage", "ca_bundle", "renew_before", "names")


@dataclass(frozen=True)
class Acme:
    """
    A validated C{acme:}.

    @ivar names: the host names to obtain a certificate for, one each.
    @ivar storage: the folder of the account key and certificates.
    @ivar directory: the URL of the CA's ACME directory.
    @ivar email: the account's contact, if any.
    @ivar ca_bundle: the CA certificates to check the directory's HTTPS
        with, instead of the system's (a test CA such as Pebble's).
    @ivar renew_before: days before expiry to renew.
    @ivar warnings: what was left out and why (wildcard hosts).
    """

    names: tuple[str, ...]
    storage: Path
    directory: str = LETS_ENCRYPT
    email: str | None = None
    ca_bundle: Path | None = None
    renew_before: float = DEFAULT_RENEW_BEFORE
    warnings: tuple[str, ...] = ()


def read_acme(
    reader: ConfigReader,
    data: LocatedDict,
    tables: Mapping[str, Any],
    listeners: tuple[Listener, ...],
) -> Acme | None:
    """
    Read the top-level C{acme:}, if any.

    @param tables: the route tables by host (C{hosts:} names), whose exact
        names are the default C{names:}.
    @param listeners: the C{listen:} entries: one must serve the
        certificates over TLS, one must be plain HTTP for the challenges.
    """
    value = data.get("acme")
    if value is None:
        return None
    line = data.line_of("acme")
    if not isinstance(value, LocatedDict):
        reader.problem(
            line,
            "acme",
            "expected a mapping such as {email: you@example.com}, "
            f"got {describe(value)}",
        )
        return None
    reader.unknown_keys(value, "acme", KEYS)
    email = _email(reader, value)
    directory = _directory(reader, value)
    storage = _storage(reader, value)
    ca_bundle = _ca_bundle(reader, value)
    renew_before = reader.number(
        value, "renew_before", "acme.renew_before", DEFAULT_RENEW_BEFORE, 0.0001
    )
    warnings: list[str] = []
    if value.get("names") is not None:
        names = _names(reader, value)
    else:
        names = _host_names(reader, tables, warnings)
        if not names:
            reader.problem(
                line,
                "acme",
                "no host name to obtain a certificate for: list them under "
                "hosts: (exact names) or in acme.names",
            )
    _check_listeners(reader, line, listeners)
    return Acme(
        names=tuple(names),
        storage=storage,
        directory=directory,
        email=email,
        ca_bundle=ca_bundle,
        renew_before=renew_before,
        warnings=tuple(warnings),
    )


def _email(reader: ConfigReader, value: LocatedDict) -> str | None:
    email = value.get("email")
    if email is None:
        return None
    if (
        not isinstance(email, str)
        or email.count("@") != 1
        or any(c.isspace() for c in email)
        or email.startswith("@")
        or email.endswith("@")
    ):
        reader.problem(
            value.line_of("email"),
            "acme.email",
            f"expected an e-mail address such as admin@example.com, got "
            f"{describe(email)}",
        )
        return None
    return email


def _directory(reader: ConfigReader, value: LocatedDict) -> str:
    directory = value.get("directory")
    if directory is None:
        return LETS_ENCRYPT
    if (
        not isinstance(directory, str)
        or not directory.lower().startswith("https://")
        or len(directory) == len("https://")
        or any(c.isspace() for c in directory)
    ):
        reader.problem(
            value.line_of("directory"),
            "acme.directory",
            "expected the https:// URL of the CA's ACME directory, such as "
            f"{LETS_ENCRYPT!r}, got {describe(directory)}",
        )
        return LETS_ENCRYPT
    return directory


def _storage(reader: ConfigReader, value: LocatedDict) -> Path:
    storage = value.get("storage")
    if storage is None:
        return reader.resolve(DEFAULT_STORAGE)
    line = value.line_of("storage")
    if not isinstance(storage, str) or not storage:
        reader.problem(
            line,
            "acme.storage",
            f"expected a folder path, got {describe(storage)}",
        )
        return reader.resolve(DEFAULT_STORAGE)
    path = reader.resolve(storage)
    if path.exists() and not path.is_dir():
        reader.problem(line, "acme.storage", f"{str(path)!r} is not a folder")
    elif not path.parent.is_dir():
        reader.problem(
            line, "acme.storage", f"the folder {str(path.parent)!r} does not exist"
        )
    return path


def _ca_bundle(reader: ConfigReader, value: LocatedDict) -> Path | None:
    bundle = value.get("ca_bundle")
    if bundle is None:
        return None
    line = value.line_of("ca_bundle")
    if not isinstance(bundle, str) or not bundle:
        reader.problem(
            line,
            "acme.ca_bundle",
            f"expected a file of PEM CA certificates, got {describe(bundle)}",
        )
        return None
    path = reader.resolve(bundle)
    if not path.is_file():
        reader.problem(line, "acme.ca_bundle", f"no such file: {str(path)!r}")
        return None
    return path


def _names(reader: ConfigReader, value: LocatedDict) -> list[str]:
    names = value["names"]
    line = value.line_of("names")
    if not isinstance(names, LocatedList) or not names:
        reader.problem(
            line,
            "acme.names",
            "expected a list of host names such as [example.com, "
            f"www.example.com], got {describe(names)}",
        )
        return []
    found: list[str] = []
    for i, raw in enumerate(names):
        where = f"acme.names[{i}]"
        name = reader.host_name(raw, names.line_of(i), where)
        if name is None:
            continue
        why = _not_obtainable(name)
        if why is not None:
            reader.problem(names.line_of(i), where, f"{name}: {why}")
        elif name in found:
            reader.problem(names.line_of(i), where, f"{name} is listed twice")
        else:
            found.append(name)
    return found


def _host_names(
    reader: ConfigReader, tables: Mapping[str, Any], warnings: list[str]
) -> list[str]:
    """
    The exact names of C{hosts:}; a warning for each one left out.
    """
    names = []
    for name in tables:
        if not name:
            continue  # the default host's routes: no name
        why = _not_obtainable(name)
        if why is None:
            names.append(name)
        else:
            warnings.append(
                f"{reader.file}: acme: hosts[{name!r}] gets no certificate: {why}"
            )
    return names


def _not_obtainable(name: str) -> str | None:
    """
    Why no certificate can be obtained for C{name} here, or L{None}.
    """
    if name.startswith("*."):
        return (
            "a wildcard needs the DNS-01 challenge, which txrouter does not "
            "answer; give it a certificate in a listener's tls.certificates"
        )
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None
    return "an IP address, not a host name; certificates are obtained for names"


def _check_listeners(
    reader: ConfigReader, line: int, listeners: tuple[Listener, ...]
) -> None:
    """
    Check that a TLS listener serves the certificates and a plain one can
    answer the CA's challenges.
    """
    if not listeners:
        return  # listen: is wrong, and said so
    if not any(spec.tls is not None and spec.tls.acme for spec in listeners):
        reader.problem(
            line,
            "acme",
            "no TLS listener serves the certificates: add a listen entry "
            "such as {endpoint: 'tcp:443', tls: {acme: true}}",
        )
    if all(spec.tls is not None for spec in listeners):
        reader.problem(
            line,
            "acme",
            "the CA checks HTTP-01 challenges over plain HTTP (port 80): add "
            "a listen entry such as {endpoint: 'tcp:80', https_redirect: true}",
        )
