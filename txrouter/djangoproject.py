"""
A Django project as txrouter sees it: its settings module, its WSGI
application and the static and media folders the router serves for it.

L{default_settings_module} only reads C{manage.py}; Django itself is
imported by L{load_django} alone, so that reading a routes file never
imports Django.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from txrouter.errors import AppLoadError
from txrouter.importer import add_to_sys_path, own_traceback

__all__ = [
    "DjangoApp",
    "FileMount",
    "default_settings_module",
    "file_mounts",
    "load_django",
]


def default_settings_module(project: Path) -> str | None:
    """
    Find the C{DJANGO_SETTINGS_MODULE} default that C{project/manage.py}
    sets with C{os.environ.setdefault(...)}, without running it.
    """
    try:
        tree = ast.parse((project / "manage.py").read_bytes())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "setdefault"
            and len(node.args) == 2
            and all(isinstance(a, ast.Constant) for a in node.args)
            and node.args[0].value == "DJANGO_SETTINGS_MODULE"  # type: ignore[attr-defined]
            and isinstance(node.args[1].value, str)  # type: ignore[attr-defined]
        ):
            return node.args[1].value  # type: ignore[attr-defined]
    return None


@dataclass(frozen=True)
class FileMount:
    """
    A folder served at a URL path: C{STATIC_URL} from C{STATIC_ROOT}, say.

    @ivar setting: C{"STATIC"} or C{"MEDIA"}, for messages.
    @ivar prefix: absolute URL path, starting and ending with C{/}.
    @ivar root: the folder, or L{None} when the project sets no root.
    """

    setting: str
    prefix: str
    root: Path | None


@dataclass(frozen=True)
class DjangoApp:
    """
    A loaded Django project: its WSGI callable and the folders to serve.
    """

    application: Callable[..., Any]
    mounts: tuple[FileMount, ...]


#: The settings module this process set Django up with, if any.
_loaded_settings: str | None = None


def loaded_settings() -> str | None:
    """
    The settings module L{load_django} set up in this process, if any: it
    is this process's, never a worker's (each runs a project of its own).
    """
    return _loaded_settings


def load_django(project: Path, settings_module: str, route_prefix: str) -> DjangoApp:
    """
    Set up Django for C{settings_module} in this process and return its
    WSGI application.

    Call it once per process: Django's settings are process-global.

    @raise AppLoadError: the settings or the project failed to load.
    """
    global _loaded_settings
    add_to_sys_path([project])
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    _loaded_settings = settings_module
    try:
        from django.core.wsgi import get_wsgi_application

        application = get_wsgi_application()
    except ModuleNotFoundError as e:
        if e.name and settings_module.startswith(e.name):
            raise AppLoadError(
                f"settings module {settings_module!r} not found in "
                f"{str(project)!r}; check 'settings:' (or manage.py's default)"
            ) from None
        raise AppLoadError(
            f"loading Django settings {settings_module!r} failed:\n{own_traceback(e)}"
        ) from None
    except Exception as e:
        raise AppLoadError(
            f"loading Django settings {settings_module!r} failed:\n{own_traceback(e)}"
        ) from None
    return DjangoApp(application, tuple(file_mounts(settings_module, route_prefix)))


def file_mounts(settings_module: str, route_prefix: str) -> list[FileMount]:
    """
    Where the loaded project's C{STATIC_URL} and C{MEDIA_URL} point, for a
    project mounted at C{route_prefix}.

    The values are read from the settings module itself: C{django.conf.settings}
    adds the script prefix of the current request to a relative URL and
    caches the result, so reading it here would pin the wrong prefix.
    """
    import importlib

    from django.conf import global_settings

    module = importlib.import_module(settings_module)
    mounts = []
    for name in ("STATIC", "MEDIA"):
        url = str(
            getattr(module, f"{name}_URL", getattr(global_settings, f"{name}_URL"))
            or ""
        )
        root = getattr(module, f"{name}_ROOT", None)
        if url and not url.startswith(("/", "http://", "https://")):
            url = route_prefix + url
        if not url.startswith(route_prefix) or url == route_prefix:
            # An absolute URL elsewhere (a CDN, another prefix): not ours.
            continue
        if not url.endswith("/"):
            url += "/"
        mounts.append(FileMount(name, url, Path(root) if root else None))
    return mounts
