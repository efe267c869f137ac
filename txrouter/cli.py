"""
The C{txrouter} command:

    txrouter check routes.yaml            validate a file, load its apps
    txrouter explain routes.yaml URL      which route serves URL, and what
          [--host H] [--method M] [--json]  its target sees
    txrouter schema                       the JSON Schema of routes.yaml
    txrouter reload  [--config FILE]      the running router re-reads FILE
    txrouter restart PREFIX [--host H]    new workers for one route
    txrouter upgrade [--config FILE]      a new router process, same sockets
    txrouter status  [--config FILE]      routes, workers, last change

The last four talk to the admin endpoint of the router serving FILE
(C{routes.yaml} unless told); they return once the change has taken
effect, and exit 1 with the reason when it did not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from txrouter.config import Config, load_config
from txrouter.errors import ConfigError

__all__ = ["main"]


def _load(path: Path) -> Config | None:
    """
    Load a routes file, or print its problems on stderr.
    """
    try:
        return load_config(path)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        count = len(e.problems)
        print(f"{path}: {count} problem{'s' if count > 1 else ''}", file=sys.stderr)
        return None


def _check(path: Path, load_apps: bool) -> int:
    config = _load(path)
    if config is None:
        return 1
    if load_apps:
        from twisted.internet import reactor

        from txrouter.assembly import make_engines
        from txrouter.build import build_table
        from txrouter.errors import AppLoadError

        # The build a server does, which starts nothing and makes nothing.
        try:
            table = build_table(config, make_engines(config, reactor))
        except AppLoadError as e:
            print(e, file=sys.stderr)
            return 1
        for warning in table.warnings:
            print(warning, file=sys.stderr)
        if table.warnings:
            return 1
    for warning in config.acme.warnings if config.acme is not None else ():
        # Not an error: those names are served with the files' certificates.
        print(f"{path}: acme: {warning}", file=sys.stderr)
    routes = config.routes()
    print(
        f"{path}: OK ({len(config.listen)} listener(s), {len(routes)} route(s), "
        f"{len(config.tables) - ('' in config.tables)} host(s))"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the C{txrouter} command.
    """
    parser = argparse.ArgumentParser(
        prog="txrouter",
        description="Tools for txrouter; serve with 'twistd txrouter --config FILE'.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="validate a routes file and load its applications",
        description="Validate a routes file, listing every problem with its "
        "file:line; then import its applications. Exit 0 when it is valid.",
    )
    check.add_argument("file", type=Path, help="the routes file, e.g. routes.yaml")
    check.add_argument(
        "--no-import",
        action="store_true",
        help="only validate the file; do not import the applications",
    )
    explain = commands.add_parser(
        "explain",
        help="tell which route serves a URL, and what its target sees",
        description="Tell what the router would do with one request: the host "
        "table and the prefixes weighed, the route that wins, and what its "
        "target sees (SCRIPT_NAME and PATH_INFO, the request sent upstream, "
        "the file, the redirect). Nothing is started or imported. Exit 0 "
        "when a route takes the request, 1 when none does or the file is "
        "not valid.",
    )
    explain.add_argument("file", type=Path, help="the routes file, e.g. routes.yaml")
    explain.add_argument(
        "url",
        help="a path with its query (/blog/x?y=1) or an absolute URL "
        "(http://host/path, whose host is used unless --host is given)",
    )
    explain.add_argument(
        "--host",
        help="the Host header (default: the URL's, else the first listen address)",
    )
    explain.add_argument(
        "--method", default="GET", help="the request method (default: GET)"
    )
    explain.add_argument("--json", action="store_true", help="print JSON")
    commands.add_parser(
        "schema",
        help="print the JSON Schema of routes.yaml",
        description="Print the JSON Schema (draft 2020-12) of routes.yaml, for "
        "editors: e.g. 'txrouter schema > routes.schema.json' and, first in "
        "routes.yaml, '# yaml-language-server: $schema=routes.schema.json'.",
    )
    for name, text in _OPERATIONS.items():
        command = commands.add_parser(name, help=text, description=text)
        if name == "restart":
            command.add_argument("prefix", help="the route's prefix, e.g. /wiki/")
            command.add_argument(
                "--host",
                default="",
                help="the route's host (default: the default host)",
            )
        if name == "status":
            command.add_argument("--json", action="store_true", help="print JSON")
        command.add_argument(
            "--config",
            "-c",
            type=Path,
            default=Path("routes.yaml"),
            help="the routes file the router serves (default: routes.yaml)",
        )
        command.add_argument(
            "--admin", help="the admin endpoint, if not the routes file's"
        )
    args = parser.parse_args(argv)
    if args.command == "check":
        return _check(args.file, load_apps=not args.no_import)
    if args.command == "explain":
        return _explain(args)
    if args.command == "schema":
        from txrouter.schema import routes_schema

        print(json.dumps(routes_schema(), indent=2))
        return 0
    return _operate(args)


def _explain(args: argparse.Namespace) -> int:
    from txrouter.explain import explain, explanation_text

    config = _load(args.file)
    if config is None:
        return 1
    try:
        explanation = explain(config, args.url, args.host, args.method)
    except ValueError as e:
        print(f"txrouter explain: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(explanation, indent=2))
    else:
        print(explanation_text(explanation))
    return 0 if explanation["matched"] else 1


_OPERATIONS = {
    "reload": "make the running router re-read its routes file",
    "restart": "start new workers for one route, then retire the old ones",
    "upgrade": "replace the router process with a new one on the same sockets",
    "status": "show the running router's routes, workers and last change",
}


def _operate(args: argparse.Namespace) -> int:
    from txrouter.adminclient import AdminUnreachable, admin_endpoint, call

    endpoint = args.admin or admin_endpoint(args.config)
    try:
        if args.command == "status":
            status, answer = call(endpoint, "GET", "/status")
        elif args.command == "restart":
            query = {"prefix": args.prefix, "host": args.host}
            status, answer = call(endpoint, "POST", "/restart", query)
        else:
            status, answer = call(endpoint, "POST", f"/{args.command}")
    except AdminUnreachable as e:
        print(f"txrouter {args.command}: {e}", file=sys.stderr)
        return 1
    if args.command == "status":
        if status != 200:
            print(f"txrouter status: {answer.get('message')}", file=sys.stderr)
            return 1
        print(json.dumps(answer, indent=2) if args.json else _status_text(answer))
        return 0
    if answer.get("ok"):
        print(answer.get("message", "done"))
        return 0
    print(f"txrouter {args.command} failed: {answer.get('message')}", file=sys.stderr)
    return 1


def _status_text(status: dict[str, Any]) -> str:
    """
    The status as a person reads it.
    """
    loaded = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status["loaded_at"]))
    lines = [
        f"{status['config']}: table {status['generation']}, loaded {loaded}",
        "listening on " + ", ".join(status["listen"]),
    ]
    for route in status["routes"]:
        place = f"{route['host']}{route['prefix']}"
        line = f"  {place:<30} {route['kind']:<9}"
        if "workers" in route:
            line += " " + ", ".join(
                f"pid {w['pid'] or '-'} ({'ready' if w['ready'] else 'starting'})"
                for w in route["workers"]
            )
        elif route.get("in_process"):
            line += " in the router process"
        lines.append(line)
    last = status.get("last_change")
    if last:
        result = "ok" if last["ok"] else "FAILED"
        lines.append(f"last change: {result}: {last['message']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
