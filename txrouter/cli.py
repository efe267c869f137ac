"""
The C{txrouter} command: C{txrouter check routes.yaml}.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from txrouter.config import load_config
from txrouter.errors import ConfigError

__all__ = ["main"]


def _check(path: Path, load_apps: bool) -> int:
    try:
        config = load_config(path)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        count = len(e.problems)
        print(f"{path}: {count} problem{'s' if count > 1 else ''}", file=sys.stderr)
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
    args = parser.parse_args(argv)
    return _check(args.file, load_apps=not args.no_import)


if __name__ == "__main__":
    sys.exit(main())
