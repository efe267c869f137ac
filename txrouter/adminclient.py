"""
The client side of the admin endpoint (L{txrouter.admin}), for the
C{txrouter reload|restart|upgrade|status} commands: find the endpoint of
the router serving a routes file, send one request, read the JSON answer.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from txrouter.config import default_admin, load_config
from txrouter.endpointstrings import listen_address
from txrouter.errors import ConfigError

__all__ = ["AdminUnreachable", "admin_endpoint", "call"]

#: Seconds an operation may take (new workers have READY_TIMEOUT to answer).
TIMEOUT = 300.0


class AdminUnreachable(Exception):
    """
    No router answers on the admin endpoint.
    """


def admin_endpoint(routes_file: Path) -> str:
    """
    The admin endpoint string of the router serving C{routes_file}: its
    C{admin:} key, else the default place. A file that does not load (the
    reload may be what fixes it) is read for C{admin:} alone.
    """
    try:
        return load_config(routes_file).admin
    except ConfigError:
        pass
    try:
        data = yaml.safe_load(routes_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        data = None
    value = data.get("admin") if isinstance(data, dict) else None
    return value if isinstance(value, str) else default_admin(routes_file)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _connection(endpoint: str) -> http.client.HTTPConnection:
    address = listen_address(endpoint)
    if address.family == "unix":
        folder = os.path.dirname(address.place)
        info = os.lstat(folder) if os.path.isdir(folder) else None
        if info is not None and (
            info.st_uid not in (os.geteuid(), 0) or info.st_mode & stat.S_IWOTH
        ):
            raise AdminUnreachable(
                f"{folder} (which holds the admin socket) is not this user's: "
                "refusing to talk to whatever listens there"
            )
        return _UnixConnection(address.place, TIMEOUT)
    if address.family == "tcp" and address.port is not None:
        host = address.place if address.place not in ("0.0.0.0", "::") else "127.0.0.1"
        return http.client.HTTPConnection(host, address.port, timeout=TIMEOUT)
    raise AdminUnreachable(f"cannot connect to an admin endpoint like {endpoint!r}")


def call(
    endpoint: str, method: str, path: str, query: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """
    Send one request to the admin endpoint.

    @return: the status and the JSON answer.
    @raise AdminUnreachable: nothing answers there.
    """
    connection = _connection(endpoint)
    target = path + ("?" + urlencode(query) if query else "")
    try:
        connection.request(method, target)
        response = connection.getresponse()
        body = response.read()
    except OSError as e:
        raise AdminUnreachable(
            f"no router answers on {endpoint} ({e.strerror or e}); is one "
            "serving this routes file?"
        ) from None
    finally:
        connection.close()
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {"ok": False, "message": body.decode("utf-8", "replace").strip()}
    return response.status, answer
