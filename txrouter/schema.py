"""
The JSON Schema (draft 2020-12) of routes.yaml, for editors and linters:
C{txrouter schema} prints L{routes_schema}.

The schema is made from the config reader's own tables, so that it cannot
name a key the reader does not read or miss one it does: the top-level keys
(L{txrouter.config}), each route kind's options (L{txrouter.kinds.KINDS})
and the edge's limits (L{txrouter.limits.Limits}); a key without a
description here is an error, not a gap in the schema. Defaults come from
the reader's own values where it has them as constants. What a schema
cannot say (that a folder exists, that a C{listen} string binds, that a
prefix is given once) is left to C{txrouter check}.

    >>> schema = routes_schema()
    >>> schema["properties"]["drain_timeout"]["default"]
    30
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from txrouter import acmeconfig
from txrouter.config import _COUNTS, _SIZES, _TIMES, _TOP_KEYS
from txrouter.configreader import APP_NAME, MODULE_NAME
from txrouter.kinds import KINDS
from txrouter.kinds.application import APP_TIMEOUT
from txrouter.limits import Limits
from txrouter.routespec import Admission, Threads

__all__ = ["DRAFT", "routes_schema"]

#: The JSON Schema dialect of L{routes_schema}.
DRAFT = "https://json-schema.org/draft/2020-12/schema"

# The patterns are written for both Python's re and ECMA-262 (what editors
# use): no inline flags, no named groups.

#: A size in bytes, as the reader's C{size} reads it (K, M, G: powers of
#: 1024; at least 1).
_SIZE = r"^\s*0*[1-9][0-9]*\s*([KkMmGg]([Ii]?[Bb])?)?\s*$"
#: A route prefix: a plain decoded path, no empty, C{.} or C{..} segment.
_PREFIX = r"^/$|^(/(?!\.\.?(/|$))[^/?#%\\\s]+)+/?$"
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
#: A C{hosts:} key: a name (a leading C{*.} for a wildcard) or an IPv6
#: literal; case, surrounding spaces and trailing dots are ignored.
_HOST = rf"^\s*((\*\.)?{_LABEL}(\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])\.*\s*$"
#: An upstream: C{http(s)://host[:port][/path]} in printable ASCII with no
#: credentials, query or fragment, or C{unix:/path.sock}.
_UPSTREAM = (
    r"^[Hh][Tt][Tt][Pp][Ss]?://"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(:[0-9]*)?"
    r"(/[!-\"$->@-~]*)?\??#?$"
    r"|^unix:[^\x00-\x1f\x7f-\x9f]+$"
)
#: A redirect target: a path or an http(s) URL, without spaces.
_REDIRECT = r"^(/|https?://)[^\s\x00-\x1f]*$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _number(text: str, default: float | None, minimum: float) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "number", "minimum": minimum}
    if default is not None:
        schema["default"] = _plain(default)
    return {"description": text, **schema}


def _whole(text: str, default: int | None, minimum: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum}
    if default is not None:
        schema["default"] = default
    return {"description": text, **schema}


def _size(text: str, default: int | None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "description": text
        + " A number of bytes, or one with a unit: '512K', '10M', '1G' "
        "(powers of 1024; KiB, MiB, GiB too).",
        "anyOf": [
            {"type": "integer", "minimum": 1},
            {"type": "string", "pattern": _SIZE},
        ],
        "examples": ["10M"],
    }
    if default is not None:
        schema["default"] = default
    return schema


def _flag(text: str, default: bool) -> dict[str, Any]:
    return {"description": text, "type": "boolean", "default": default}


def _plain(number: float) -> float | int:
    """
    A whole float as an int: C{30} rather than C{30.0} in the schema.
    """
    return int(number) if float(number).is_integer() else number


def _threads(text: str) -> dict[str, Any]:
    default = Threads()
    return {
        "description": text,
        "type": "object",
        "properties": {
            "min": _whole("Threads kept even when idle.", default.min, 0),
            "max": _whole("The most threads at once.", default.max, 1),
        },
        "additionalProperties": False,
        "default": {"min": default.min, "max": default.max},
    }


_PATH = {"type": "string", "minLength": 1}

#: The top-level keys (the reader's C{_TOP_KEYS}).
_TOP: dict[str, dict[str, Any]] = {
    "listen": {
        "description": "Where the router listens: a Twisted server endpoint "
        "string, or a list of them and of {endpoint, tls} or {endpoint, "
        "https_redirect} mappings. Required.",
        "anyOf": [
            {"type": "string", "minLength": 1},
            {
                "type": "array",
                "minItems": 1,
                "items": {
                    "anyOf": [
                        {"type": "string", "minLength": 1},
                        {"$ref": "#/$defs/listener"},
                    ]
                },
            },
        ],
        "examples": ["tcp:8080:interface=127.0.0.1"],
    },
    "threads": _threads(
        "The one shared thread pool of the applications that run in the router process."
    ),
    "drain_timeout": _number(
        "Seconds that SIGTERM (and a reload) waits for requests in flight.",
        30,
        0,
    ),
    "access_log": {
        "description": "The access log: a file path (relative to this "
        "file's folder), or '-' for twistd's log. No access log when absent.",
        **_PATH,
    },
    "access_log_format": {
        "description": "How the access log is written: 'combined' (Apache's "
        "combined format) or 'json' (one JSON object per line, with the route "
        "and the worker or upstream that served each request). It may change "
        "on reload.",
        "enum": ["combined", "json"],
        "default": "combined",
    },
    "trusted_proxies": {
        "description": "Networks (CIDR or single addresses) whose "
        "X-Forwarded-For and Forwarded headers are extended rather than "
        "replaced.",
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "default": [],
        "examples": [["10.0.0.0/8", "::1"]],
    },
    "runtime_dir": {
        "description": "The private folder for worker sockets (its parent "
        "must exist). A new temporary folder when absent.",
        **_PATH,
    },
    "routes": {
        "description": "The default host's routes: URL prefix to route.",
        "$ref": "#/$defs/routes",
    },
    "hosts": {
        "description": "Route tables by Host name: an exact name beats a "
        "'*.' wildcard, which beats the top-level routes. Case and port are "
        "ignored.",
        "type": "object",
        "propertyNames": {"type": "string", "pattern": _HOST},
        "additionalProperties": {
            "type": "object",
            "properties": {
                "routes": {"$ref": "#/$defs/routes"},
                "hsts": {"$ref": "#/$defs/hsts"},
            },
            "required": ["routes"],
            "additionalProperties": False,
        },
    },
    "admin": {
        "description": "The admin endpoint (reload, restart, upgrade, "
        "status): a UNIX socket or TCP on a loopback interface. A 0600 socket "
        "under the temporary folder, named after this file, when absent.",
        "type": "string",
        "minLength": 1,
        "examples": ["unix:/run/txrouter/admin.sock:mode=600"],
    },
    "limits": {"$ref": "#/$defs/limits"},
    "hsts": {"$ref": "#/$defs/hsts"},
    "acme": {"$ref": "#/$defs/acme"},
}

_CERTIFICATE_SOURCE = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "object",
            "properties": {
                "cert": {"type": "string", "minLength": 1},
                "key": {"type": "string", "minLength": 1},
            },
            "required": ["cert", "key"],
            "additionalProperties": False,
        },
    ]
}

_LISTENER = {
    "description": "A listen entry with more than its endpoint string.",
    "type": "object",
    "properties": {
        "endpoint": {
            "description": "The Twisted server endpoint string, a plain one "
            "(tcp:, tcp6:, unix:, systemd:, haproxy:...) when tls: is given.",
            "type": "string",
            "minLength": 1,
        },
        "tls": {
            "description": "HTTPS on this endpoint, with certificates chosen "
            "by server name (SNI); TLS 1.2 and newer.",
            "type": "object",
            "properties": {
                "certificates": {
                    "description": "PEM files each holding a key and its "
                    "certificate chain, {cert, key} pairs, or folders of such "
                    "files and of certbot's live/NAME folders (relative to "
                    "this file's folder).",
                    "anyOf": [
                        _CERTIFICATE_SOURCE,
                        {"type": "array", "minItems": 1, "items": _CERTIFICATE_SOURCE},
                    ],
                },
                "default": {
                    "description": "A host name of the certificate for clients "
                    "that name no server, or one no certificate is for. "
                    "Default: the first certificate.",
                    "type": "string",
                },
                "acme": {
                    "description": "Serve the certificates the top-level acme: "
                    "obtains too (the default when there is one); with it, "
                    "certificates: may be left out. Needs acme: at the top level.",
                    "type": "boolean",
                },
                "http2": {
                    "description": "Offer HTTP/2 over ALPN (clients that do "
                    "not ask for it get HTTP/1.1). Default: true.",
                    "type": "boolean",
                },
            },
            "additionalProperties": False,
        },
        "https_redirect": {
            "description": "Redirect every request to HTTPS (301; 308 for "
            "methods but GET and HEAD), on port 443 (true) or this port; "
            "ACME challenges excepted.",
            "anyOf": [
                {"type": "boolean"},
                {"type": "integer", "minimum": 1, "maximum": 65535},
            ],
        },
    },
    "required": ["endpoint"],
    "additionalProperties": False,
}

_HSTS = {
    "description": "Strict-Transport-Security on this host's responses over "
    "TLS: true (a year), or its parts.",
    "anyOf": [
        {"type": "boolean"},
        {
            "type": "object",
            "properties": {
                "max_age": _whole("Seconds.", 31536000, 0),
                "include_subdomains": _flag("includeSubDomains", False),
                "preload": _flag(
                    "preload (needs include_subdomains and a year or more)", False
                ),
            },
            "additionalProperties": False,
        },
    ],
}

_ACME_PROPERTIES: dict[str, dict[str, Any]] = {
    "email": {
        "description": "The ACME account's contact, for the CA's expiry and "
        "policy mail.",
        "type": "string",
        "pattern": r"^[^@\s]+@[^@\s]+$",
    },
    "directory": {
        "description": "The https:// URL of the CA's ACME directory.",
        "type": "string",
        "pattern": r"^[Hh][Tt][Tt][Pp][Ss]://\S+$",
        "default": acmeconfig.LETS_ENCRYPT,
    },
    "storage": {
        "description": "The folder (mode 0700) of the account key and the "
        "certificates (mode 0600), relative to this file's folder.",
        **_PATH,
        "default": acmeconfig.DEFAULT_STORAGE,
    },
    "ca_bundle": {
        "description": "PEM CA certificates to check the directory's HTTPS "
        "with, instead of the system's (e.g. a test CA's).",
        **_PATH,
    },
    "renew_before": _number(
        "Days before expiry that a certificate is renewed (at most a third "
        "of its lifetime).",
        acmeconfig.DEFAULT_RENEW_BEFORE,
        0.0001,
    ),
    "names": {
        "description": "The host names to obtain certificates for, one "
        "each; no wildcards (they need DNS-01). Default: every exact name of "
        "hosts:.",
        "type": "array",
        "minItems": 1,
        "items": {"type": "string", "pattern": _HOST},
    },
}


def _acme() -> dict[str, Any]:
    return {
        "description": "Obtain and renew certificates from an ACME CA (RFC "
        "8555; Let's Encrypt by default) with HTTP-01 challenges answered on "
        "the plain listeners; TLS listeners serve them.",
        "type": "object",
        "properties": {
            key: _may_be_empty(_ACME_PROPERTIES[key]) for key in acmeconfig.KEYS
        },
        "additionalProperties": False,
    }


_LIMITS: dict[str, str] = {
    "head_timeout": "Seconds a client has to send a whole request head (408).",
    "body_timeout": "Seconds a request body may pause between two reads (408).",
    "send_timeout": "Seconds a client may take nothing of a response before "
    "its connection is closed.",
    "keepalive_timeout": "Seconds an idle keep-alive connection stays open.",
    "max_request_line": "The longest request line (414).",
    "max_header": "The longest header field (431).",
    "max_head": "The longest request head: request line and header fields (431).",
    "max_headers": "The most header fields in one request (431).",
    "max_body": "The largest request body (413); a route may set its own.",
    "max_connections": "Open connections per listen entry; more are closed at once.",
    "max_streams": "Concurrent streams of one HTTP/2 connection (advertised; "
    "a client that opens more is closed).",
}

_APP_OPTIONS: dict[str, dict[str, Any]] = {
    "workers": _whole(
        "0 runs the application in the router process, on the shared pool; "
        "N >= 1 in N worker processes of its own. Default: 0 for a wsgi "
        "route and for the only Django project of the file, 1 otherwise.",
        None,
        0,
    ),
    "threads": _threads("Each worker process's thread pool."),
    "env": {
        "description": "Environment variables added for the workers.",
        "type": "object",
        "propertyNames": {"type": "string", "pattern": _ENV_NAME},
        "additionalProperties": {"type": ["string", "number", "boolean"]},
        "default": {},
    },
    "timeout": _number(
        "Seconds the application has to start its answer (504 after).",
        APP_TIMEOUT,
        0.001,
    ),
}

#: The options of the kinds that tunnel WebSockets (proxy, asgi).
_TUNNEL_OPTIONS: dict[str, dict[str, Any]] = {
    "tunnel_idle_timeout": _number(
        "Seconds a tunnel (a WebSocket) may carry nothing either way before "
        "it is closed.",
        3600,
        0.001,
    ),
    "max_tunnels": _whole(
        "Tunnels open at once on this route (each holds two sockets); "
        "more handshakes get 503.",
        4096,
        1,
    ),
}

_ADMISSION_OPTIONS: dict[str, dict[str, Any]] = {
    "max_concurrent": _whole(
        "Requests this route serves at once. Default: half the shared pool "
        "in process, workers x threads.max in workers, 1024 for a proxy.",
        None,
        1,
    ),
    "queue": _whole(
        "Requests that may wait for a slot; the rest get 503.",
        Admission().queue,
        0,
    ),
    "max_body": _size("This route's largest request body (413).", None),
}

#: Each kind's own key, and its options that are not shared.
_KIND_KEYS: dict[str, dict[str, dict[str, Any]]] = {
    "django": {
        "django": {
            "description": "A Django project: the folder that holds manage.py "
            "(relative to this file's folder).",
            **_PATH,
        },
        "settings": {
            "description": "The settings module. Default: the "
            "DJANGO_SETTINGS_MODULE default in the project's manage.py.",
            "type": "string",
            "pattern": MODULE_NAME.pattern,
            "examples": ["mysite.settings"],
        },
    },
    "wsgi": {
        "wsgi": {
            "description": "A WSGI application, 'module:attribute'.",
            "type": "string",
            "pattern": APP_NAME.pattern,
            "examples": ["hello:application"],
        },
        "path": {
            "description": "A folder put on sys.path to import the application.",
            **_PATH,
        },
        "workers": {**_APP_OPTIONS["workers"], "default": 0},
    },
    "asgi": {
        "asgi": {
            "description": "An ASGI application, 'module:attribute' (a Django "
            "project with Channels, or any ASGI 3 application), served by "
            "Daphne in worker processes of its own; HTTP and WebSockets.",
            "type": "string",
            "pattern": APP_NAME.pattern,
            "examples": ["chat.asgi:application"],
        },
        "path": {
            "description": "A folder put on sys.path to import the "
            "application, and the workers' working folder.",
            **_PATH,
        },
        "settings": {
            "description": "The Django settings module, for a Django project: "
            "set as DJANGO_SETTINGS_MODULE for the workers, and its "
            "STATIC_ROOT and MEDIA_ROOT are served by the router.",
            "type": "string",
            "pattern": MODULE_NAME.pattern,
            "examples": ["chat.settings"],
        },
        "workers": _whole(
            "The number of worker processes. An ASGI application never runs "
            "in the router process.",
            1,
            1,
        ),
        "max_concurrent": _whole(
            "Requests and WebSockets this route serves at once. Default: "
            "1024 per worker.",
            None,
            1,
        ),
    },
    "static": {
        "static": {
            "description": "A folder of files (relative to this file's folder).",
            **_PATH,
        },
        "cache": _whole(
            "Cache-Control max-age in seconds. No Cache-Control when absent.",
            None,
            0,
        ),
    },
    "proxy": {
        "proxy": {
            "description": "The upstream: an http://, https:// or unix: URL, "
            "or a list of them (each request goes to the least busy). The "
            "path after the prefix is appended to the upstream's path.",
            "anyOf": [
                {"type": "string", "pattern": _UPSTREAM},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string", "pattern": _UPSTREAM},
                },
            ],
            "examples": ["http://127.0.0.1:9000/v1/"],
        },
        "timeout": _number(
            "Seconds to wait for the response head once the request is sent, "
            "and at most between two reads of the body.",
            60,
            0.001,
        ),
        "connect_timeout": _number("Seconds to wait for a connection.", 5, 0.001),
        "preserve_host": _flag(
            "Pass the client's Host on, rather than the upstream's own.", True
        ),
        "tls_verify": _flag("Verify an https upstream's certificate.", True),
        "upgrade": {
            "description": "The protocols a request may switch to (its "
            "Upgrade header): the upstream's 101 joins the two connections "
            "into a tunnel. Others get 400, but h2c, which is served as "
            "plain HTTP/1.1. [] tunnels none.",
            "type": ["array", "null"],
            "items": {"type": "string", "pattern": "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"},
            "default": ["websocket"],
        },
    },
    "redirect": {
        "redirect": {
            "description": "Where to: a path or an http(s) URL; the rest of "
            "the path and the query are kept.",
            "type": "string",
            "pattern": _REDIRECT,
            "examples": ["/new/"],
        },
        "status": {
            "description": "The redirect's status.",
            "enum": [301, 302, 303, 307, 308],
            "default": 302,
        },
    },
    "health": {
        "health": {
            "description": "A health check for load balancers, as JSON: "
            "'ready' answers 200 while every route can serve and 503 "
            "otherwise (from SIGTERM on too); 'live' answers 200 while the "
            "process answers. GET and HEAD only.",
            "enum": ["ready", "live"],
            "examples": ["ready"],
        },
        "stop_delay": _number(
            "Seconds the router keeps its ports open after SIGTERM, answering "
            "503 here, before it stops accepting ('health: ready' only): the "
            "balancer's check interval times the failures it waits for.",
            0,
            0,
        ),
    },
}


def _option(kind: str, name: str) -> dict[str, Any]:
    tables = (_KIND_KEYS.get(kind, {}), _APP_OPTIONS, _ADMISSION_OPTIONS)
    for table in (*tables, _TUNNEL_OPTIONS):
        if name in table:
            return table[name]
    raise LookupError(
        f"the {kind} option {name!r} has no schema: describe it in txrouter/schema.py"
    )


def _may_be_empty(option: dict[str, Any]) -> dict[str, Any]:
    """
    An optional key that may also be left empty (YAML's null), which the
    reader takes as not given, like every optional key.
    """
    kind = option.get("type")
    if isinstance(kind, str):
        # The other keywords (pattern, minimum, properties) apply to their
        # own type only.
        return {**option, "type": [kind, "null"]}
    told = {k: v for k, v in option.items() if k in ("description", "default")}
    rest = {k: v for k, v in option.items() if k not in told}
    return {**told, "anyOf": [rest, {"type": "null"}]}


def _kind(name: str) -> dict[str, Any]:
    main = _option(name, name)
    options = {key: _may_be_empty(_option(name, key)) for key in KINDS[name].options}
    return {
        "title": f"{name} route",
        "description": main["description"],
        "type": "object",
        "properties": {name: main, **options},
        "required": [name],
        "additionalProperties": False,
    }


def _limits() -> dict[str, Any]:
    default = Limits()
    properties: dict[str, Any] = {}
    for field in fields(Limits):
        key = field.name
        text = _LIMITS[key]
        given = getattr(default, key)
        if key in _TIMES:
            properties[key] = _number(text, given, 0.001)
        elif key in _SIZES:
            properties[key] = _size(text, given)
        elif key in _COUNTS:
            properties[key] = _whole(text, given, 1)
        else:
            raise LookupError(f"the reader does not read limits.{key}")
        properties[key] = _may_be_empty(properties[key])
    return {
        "description": "What the edge allows one client (see the README's "
        "limits table).",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }


def routes_schema() -> dict[str, Any]:
    """
    The JSON Schema of routes.yaml (version 1).

    @raise LookupError: a key the reader reads has no description here.
    """
    missing = [key for key in _TOP_KEYS if key not in _TOP]
    if missing:
        raise LookupError(f"top-level keys without a schema: {', '.join(missing)}")
    return {
        "$schema": DRAFT,
        "title": "txrouter routes file",
        "description": "Routes for txrouter: one port for Django projects, "
        "WSGI and ASGI apps, static folders, HTTP upstreams and redirects. Check a "
        "file with 'txrouter check'.",
        "type": "object",
        "properties": {
            key: _TOP[key] if key in ("listen", "routes") else _may_be_empty(_TOP[key])
            for key in _TOP_KEYS
        },
        "required": ["listen"],
        "anyOf": [{"required": ["routes"]}, {"required": ["hosts"]}],
        "additionalProperties": False,
        "$defs": {
            "listener": _LISTENER,
            "hsts": _HSTS,
            "acme": _acme(),
            "routes": {
                "description": "URL prefix to route. The longest matching "
                "prefix wins; a trailing '/' is added; a request for the "
                "prefix without it gets a 301.",
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"type": "string", "pattern": _PREFIX},
                "additionalProperties": {"$ref": "#/$defs/route"},
            },
            "route": {
                "description": "A route: exactly one of "
                + ", ".join(KINDS)
                + ", with that kind's options.",
                "type": "object",
                "oneOf": [{"$ref": f"#/$defs/{name}"} for name in KINDS],
            },
            **{name: _kind(name) for name in KINDS},
            "limits": _limits(),
        },
    }
