"""
Twisted endpoint strings read as Twisted reads them, without its private
parser: L{split_endpoint} into arguments, L{listen_address} into what a
server endpoint binds (so that two strings binding the same address can be
told apart from two that do not, and a port or socket folder checked before
anything listens), and L{check_systemd} a C{systemd:} string without the
sockets it names, which exist only in a process systemd started.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

__all__ = ["ListenAddress", "check_systemd", "listen_address", "split_endpoint"]


def split_endpoint(description: str) -> tuple[list[str], dict[str, str]]:
    r"""
    Split a Twisted endpoint string into positional and named arguments, as
    Twisted reads it: C{:} separates arguments, the first C{=} of one names
    it, and a backslash makes the next character plain.

        >>> split_endpoint(r"tcp:8080:interface=\:\:1")
        (['tcp', '8080'], {'interface': '::1'})

    @raise ValueError: the string ends in a lone backslash.
    """
    args: list[str] = []
    named: dict[str, str] = {}
    pieces = [""]  # The argument being read: [value] or [name, value].
    chars = iter(description)
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                raise ValueError("the string ends in a lone backslash")
            pieces[-1] += escaped
        elif char == ":":
            if len(pieces) == 1:
                args.append(pieces[0])
            else:
                named[pieces[0]] = pieces[1]
            pieces = [""]
        elif char == "=" and len(pieces) == 1:
            pieces.append("")
        else:
            pieces[-1] += char
    if len(pieces) == 1:
        args.append(pieces[0])
    else:
        named[pieces[0]] = pieces[1]
    return args, named


@dataclass(frozen=True)
class ListenAddress:
    """
    What a server endpoint string binds: two strings that bind the same
    address give equal ones.

    @ivar family: C{"tcp"} (for C{tcp:}, C{tcp6:}, C{ssl:} and C{tls:}),
        C{"unix"}, or another endpoint type, in lower case.
    @ivar place: the interface for TCP (an IP address in its normal form
        where it is one), the absolute socket path for UNIX (relative ones
        start at the working directory, as in Twisted), the arguments for
        other types.
    @ivar port: the TCP port, or L{None} (not TCP, or not a number: Twisted's
        parser says why).
    """

    family: str
    place: str
    port: int | None = None


#: The parameters of the TCP endpoint types, in Twisted's order, and the
#: interface each binds by default.
_TCP_PARAMETERS = {
    "tcp": (("port", "interface", "backlog"), ""),
    "tcp6": (("port", "backlog", "interface"), "::"),
    "ssl": (("port", "privateKey", "certKey", "sslmethod", "interface"), ""),
    "tls": (("path", "port", "backlog", "interface"), "::"),
}
_UNIX_PARAMETERS = ("address", "mode", "backlog", "lockfile")


def listen_address(description: str) -> ListenAddress:
    """
    Read what a server endpoint string binds, without Twisted's private
    parser. C{haproxy:} is read as the endpoint it wraps.

        >>> listen_address("haproxy:tcp:port=8080:interface=127.0.0.1")
        ListenAddress(family='tcp', place='127.0.0.1', port=8080)

    @raise ValueError: the string ends in a lone backslash.
    """
    args, named = split_endpoint(description)
    kind = args[0].lower() if args else ""
    while kind == "haproxy" and len(args) > 1:
        args = args[1:]
        kind = args[0].lower()
    if kind in _TCP_PARAMETERS:
        parameters, any_interface = _TCP_PARAMETERS[kind]
        given = _bind(parameters, args[1:], named)
        interface = given.get("interface", any_interface) or "0.0.0.0"
        try:
            interface = str(ipaddress.ip_address(interface))
        except ValueError:
            interface = interface.lower()
        try:
            # Twisted reads the port with int() too.
            port: int | None = int(given.get("port", "443" if kind == "tls" else ""))
        except ValueError:
            port = None
        return ListenAddress("tcp", interface, port)
    if kind == "unix":
        path = _bind(_UNIX_PARAMETERS, args[1:], named).get("address", "")
        # A leading NUL names a socket in Linux's abstract namespace.
        if path and not path.startswith("\0"):
            path = os.path.abspath(path)
        return ListenAddress("unix", path)
    return ListenAddress(kind, repr((args[1:], sorted(named.items()))))


def sets_backlog(description: str) -> bool:
    """
    Whether a TCP or UNIX server endpoint string (inside C{haproxy:}
    wrappers) sets its listen backlog.

        >>> sets_backlog("tcp:8080:backlog=1024"), sets_backlog("tcp:8080")
        (True, False)
    """
    try:
        args, named = split_endpoint(description)
    except ValueError:
        return False
    while args and args[0].lower() == "haproxy":
        args = args[1:]
    kind = args[0].lower() if args else ""
    if kind in _TCP_PARAMETERS:
        parameters = _TCP_PARAMETERS[kind][0]
    elif kind == "unix":
        parameters = _UNIX_PARAMETERS
    else:
        return False
    return "backlog" in _bind(parameters, args[1:], named)


def _bind(
    parameters: tuple[str, ...], args: list[str], named: dict[str, str]
) -> dict[str, str]:
    # As Python binds them to Twisted's parser function; too many or twice
    # given arguments are refused by that parser itself.
    return {**dict(zip(parameters, args, strict=False)), **named}


#: The parameters of Twisted's C{systemd:} endpoint, in its order.
_SYSTEMD_PARAMETERS = ("domain", "index", "name")
#: The address families of the sockets a router can serve (C{domain=}).
_SYSTEMD_DOMAINS = ("INET", "INET6", "UNIX")


def check_systemd(description: str) -> None:
    """
    Check a C{systemd:} endpoint string (inside C{haproxy:} wrappers, if
    any) as Twisted's parser reads it, but without looking up the socket
    it names: Twisted does that as it parses, and the sockets exist only in
    a process started by systemd (so C{txrouter check} could not pass).

        >>> check_systemd("systemd:domain=INET:index=0")

    @raise ValueError: what is wrong, and what to write instead.
    """
    args, named = split_endpoint(description)
    while args and args[0].lower() == "haproxy":
        args = args[1:]
    if not args or args[0] != "systemd":
        raise ValueError("not a systemd: endpoint")
    if len(args) - 1 > len(_SYSTEMD_PARAMETERS):
        raise ValueError("too many arguments")
    unknown = sorted(set(named) - set(_SYSTEMD_PARAMETERS))
    if unknown:
        raise ValueError(
            f"unknown parameter {unknown[0]!r}; systemd: takes domain=, and "
            "index= or name="
        )
    given = _bind(_SYSTEMD_PARAMETERS, args[1:], named)
    domain = given.get("domain")
    if domain not in _SYSTEMD_DOMAINS:
        raise ValueError(
            f"domain= must be {', '.join(_SYSTEMD_DOMAINS)} (the family of the "
            f"socket systemd passes), got {domain!r}"
        )
    if ("index" in given) == ("name" in given):
        raise ValueError(
            "give exactly one of index= (the socket's place among those the "
            ".socket unit passes, from 0) and name= (its FileDescriptorName=)"
        )
    index = given.get("index")
    if index is not None and not (index.isdigit() and index.isascii()):
        raise ValueError(f"index= must be a number from 0, got {index!r}")
