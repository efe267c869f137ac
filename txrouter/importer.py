"""
Import a WSGI application named C{module:attribute}.

Three distinct failures get three distinct messages (bad format, missing
module, missing attribute); an exception raised by the application's own
module while it imports is reported as itself, with its traceback.

    >>> app = import_app("hello:application", [Path("sites/hello")])
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from txrouter.errors import AppLoadError

__all__ = ["add_to_sys_path", "import_app", "own_traceback"]

_OWN_FOLDER = os.path.dirname(os.path.abspath(__file__)) + os.sep


def add_to_sys_path(paths: Sequence[Path]) -> None:
    """
    Put C{paths} first on C{sys.path}, once each.
    """
    for path in reversed(paths):
        entry = str(path)
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)


def own_traceback(error: BaseException) -> str:
    """
    Format C{error} with its traceback, dropping the import machinery's
    frames so that the application's own frames stand out.
    """
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith(("<frozen importlib", _OWN_FOLDER))
        and os.path.dirname(frame.filename) != os.path.dirname(importlib.__file__)
    ]
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(error), error)
    return "".join(lines).rstrip()


def import_app(spec: str, paths: Sequence[Path] = ()) -> Callable[..., Any]:
    """
    Import C{module:attribute} after putting C{paths} on C{sys.path}.

    @raise AppLoadError: saying which of the three things went wrong.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise AppLoadError(
            f"{spec!r} is not of the form 'module:attribute', e.g. 'hello:application'"
        )
    add_to_sys_path(paths)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            where = ", ".join(repr(str(p)) for p in paths) or "sys.path"
            raise AppLoadError(
                f"no module named {missing!r} (looked in {where} and sys.path); "
                "check the module name and the route's 'path:'"
            ) from None
        raise AppLoadError(
            f"importing {module_name!r} failed:\n{own_traceback(e)}"
        ) from None
    except Exception as e:
        raise AppLoadError(
            f"importing {module_name!r} failed:\n{own_traceback(e)}"
        ) from None
    app = module
    for name in attribute.split("."):
        try:
            app = getattr(app, name)
        except AttributeError:
            raise AppLoadError(
                f"module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not callable(app):
        raise AppLoadError(
            f"{spec!r} is {type(app).__name__}, not a WSGI application (a callable)"
        )
    return app
