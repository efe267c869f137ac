"""
The C{listen:} entries of a routes file: each an endpoint string, or a
mapping that adds TLS (certificates by server name) or a redirect of every
request to HTTPS.

    listen:
      - tcp:8080:interface=127.0.0.1
      - endpoint: tcp:443
        tls: {certificates: [/etc/txrouter/certs/], default: example.com}
      - {endpoint: "tcp:80", https_redirect: true}
      - endpoint: tcp:8443
        tls: {acme: true}          # only what acme: obtains (txrouter.acmeconfig)

A TLS listener's endpoint is a plain one (C{tcp:}, C{tcp6:}, C{unix:},
C{systemd:}, C{haproxy:...}): the router adds TLS itself, with the
certificates of L{txrouter.certificates}, which a reload replaces without
closing the port. (Twisted's own C{ssl:} endpoint, with one certificate,
still works as a plain endpoint string.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from txrouter.certificates import Certificate, CertificateError, load_certificates
from txrouter.configreader import describe
from txrouter.endpointstrings import ListenAddress
from txrouter.yamlsource import LocatedDict, LocatedList

if TYPE_CHECKING:
    from txrouter.configreader import ConfigReader

__all__ = ["TLS", "Listener", "read_listeners"]

_LISTENER_KEYS = ("endpoint", "tls", "https_redirect")
_TLS_KEYS = ("certificates", "default", "acme", "http2")


@dataclass(frozen=True, eq=False)
class TLS:
    """
    A listener's TLS: its certificates, read and checked, and the one for
    clients that name no server (or one no certificate is for).

    @ivar acme: it serves the certificates of the top-level C{acme:} too
        (the default when there is one), so it may have none of its own.
    @ivar http2: it offers HTTP/2 over ALPN (L{txrouter.http2}).
    """

    certificates: tuple[Certificate, ...]
    default: int = 0
    acme: bool = False
    http2: bool = True


@dataclass(frozen=True, eq=False)
class Listener:
    """
    One C{listen:} entry.

    @ivar endpoint: the Twisted endpoint string it binds.
    @ivar tls: its TLS, if the router adds it.
    @ivar https_redirect: the HTTPS port every request is redirected to
        (301), if it redirects (ACME's HTTP-01 challenges excepted).
    """

    endpoint: str
    tls: TLS | None = None
    https_redirect: int | None = None


def read_listeners(reader: ConfigReader, data: LocatedDict) -> tuple[Listener, ...]:
    """
    Read C{listen:}: an endpoint string, or a list of strings and mappings.
    """
    if "listen" not in data:
        reader.problem(
            data.line,
            "listen",
            "missing; expected a Twisted endpoint string such as "
            "'tcp:8080:interface=127.0.0.1', or a list of them",
        )
        return ()
    value = data["listen"]
    if isinstance(value, str):
        items = [(value, data.line_of("listen"), "listen")]
    elif isinstance(value, LocatedList) and value:
        items = [
            (item, value.line_of(i), f"listen[{i}]") for i, item in enumerate(value)
        ]
    else:
        reader.problem(
            data.line_of("listen"),
            "listen",
            "expected an endpoint string or a non-empty list of them (or of "
            f"{{endpoint: ..., tls: ...}} mappings), got {describe(value)}",
        )
        return ()
    result = []
    first: dict[ListenAddress, tuple[str, int]] = {}
    acme = data.get("acme") is not None
    for item, line, where in items:
        listener = _listener(reader, item, line, where, acme)
        if listener is None:
            continue
        address = reader.endpoint(listener.endpoint, line, where)
        if address is None:
            continue
        if address in first:
            first_where, first_line = first[address]
            reader.problem(
                line,
                where,
                f"the same endpoint as {first_where} (line {first_line}); "
                "each address can be bound once: remove one of them",
            )
            continue
        first[address] = (where, line)
        result.append(listener)
    return tuple(result)


def _listener(
    reader: ConfigReader, item: Any, line: int, where: str, acme: bool
) -> Listener | None:
    if not isinstance(item, LocatedDict):
        return Listener(item)  # an endpoint string, checked by the caller
    reader.unknown_keys(item, where, _LISTENER_KEYS)
    endpoint = item.get("endpoint")
    if not isinstance(endpoint, str):
        reader.problem(
            item.line_of("endpoint") if "endpoint" in item else item.line,
            f"{where}.endpoint",
            "expected the endpoint string this entry listens on, such as "
            f"'tcp:443', got {describe(endpoint)}",
        )
        return None
    tls = None
    if "tls" in item:
        tls = _tls(reader, item, f"{where}.tls", acme)
        if tls is None:
            return None
        if endpoint.split(":", 1)[0].lower() in ("ssl", "tls"):
            reader.problem(
                item.line_of("endpoint"),
                f"{where}.endpoint",
                f"{endpoint.split(':', 1)[0]}: already adds TLS; with 'tls:' "
                "give a plain endpoint such as 'tcp:443'",
            )
            return None
    redirect = _https_redirect(reader, item, where)
    if redirect is not None and tls is not None:
        reader.problem(
            item.line_of("https_redirect"),
            f"{where}.https_redirect",
            "a TLS listener serves HTTPS itself; redirect from a plain one",
        )
        return None
    return Listener(endpoint, tls, redirect)


def _https_redirect(reader: ConfigReader, item: LocatedDict, where: str) -> int | None:
    if "https_redirect" not in item:
        return None
    value = item["https_redirect"]
    if value is True:
        return 443
    if value is False:
        return None
    if isinstance(value, int) and 1 <= value <= 65535:
        return value
    reader.problem(
        item.line_of("https_redirect"),
        f"{where}.https_redirect",
        "expected true (to port 443) or the HTTPS port to redirect to, "
        f"got {describe(value)}",
    )
    return None


def _tls(reader: ConfigReader, item: LocatedDict, where: str, acme: bool) -> TLS | None:
    """
    Read a C{tls:} entry; C{acme} tells whether the file has a top-level
    C{acme:}, whose certificates it serves unless it says C{acme: false}.
    """
    spec = item["tls"]
    line = item.line_of("tls")
    if not isinstance(spec, LocatedDict):
        reader.problem(
            line,
            where,
            "expected a mapping such as {certificates: [certs/]}, "
            f"got {describe(spec)}",
        )
        return None
    reader.unknown_keys(spec, where, _TLS_KEYS)
    serves_acme = reader.flag(spec, "acme", f"{where}.acme", acme)
    http2 = reader.flag(spec, "http2", f"{where}.http2", True)
    if serves_acme and not acme:
        reader.problem(
            spec.line_of("acme"),
            f"{where}.acme",
            "there is no top-level 'acme:' to obtain certificates: add one "
            "(e.g. 'acme: {email: you@example.com}'), or give certificates:",
        )
        return None
    if "certificates" not in spec and serves_acme:
        return TLS((), 0, True, http2)
    if "certificates" not in spec:
        reader.problem(
            spec.line,
            f"{where}.certificates",
            "no certificates: give files or folders (certificates: [certs/]), "
            "or add a top-level 'acme:' to obtain them",
        )
        return None
    sources = _sources(reader, spec, where)
    if sources is None:
        return None
    try:
        certificates = load_certificates(sources)
    except CertificateError as e:
        reader.problem(spec.line_of("certificates"), f"{where}.certificates", f"{e}")
        return None
    default = 0
    if "default" in spec:
        name = spec["default"]
        found = [
            i
            for i, c in enumerate(certificates)
            if isinstance(name, str) and name.lower() in c.names
        ]
        if not found:
            reader.problem(
                spec.line_of("default"),
                f"{where}.default",
                "expected the host name of one of the certificates (the one "
                f"for clients that name none), got {describe(name)}; they are "
                "for: " + ", ".join(sorted({n for c in certificates for n in c.names})),
            )
            return None
        default = found[0]
    return TLS(tuple(certificates), default, serves_acme, http2)


def _sources(
    reader: ConfigReader, spec: LocatedDict, where: str
) -> list[Path | tuple[Path, Path]] | None:
    """
    The files and folders of C{certificates:}: each a path (a file holding
    a key and its chain, or a folder) or a {cert:, key:} pair.
    """
    value = spec.get("certificates")
    line = spec.line_of("certificates") if "certificates" in spec else spec.line
    items = [value] if isinstance(value, (str, LocatedDict)) else value
    expected = (
        "expected a file holding a key and its certificate chain, a folder of "
        "such files, a {cert: ..., key: ...} pair, or a list of them"
    )
    if not isinstance(items, list) or not items:
        reader.problem(
            line, f"{where}.certificates", f"{expected}, got {describe(value)}"
        )
        return None
    sources: list[Path | tuple[Path, Path]] = []
    for item in items:
        if isinstance(item, str) and item:
            sources.append(reader.resolve(item))
        elif (
            isinstance(item, LocatedDict)
            and set(item) == {"cert", "key"}
            and all(isinstance(v, str) and v for v in item.values())
        ):
            sources.append((reader.resolve(item["cert"]), reader.resolve(item["key"])))
        else:
            reader.problem(
                line, f"{where}.certificates", f"{expected}, got {describe(item)}"
            )
            return None
    return sources
