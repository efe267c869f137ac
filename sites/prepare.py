"""Prepare the example Django projects: run migrations and collect static files.

Usage: ``python sites/prepare.py``. Every folder of ``sites/`` that holds a
``manage.py`` is treated as a Django project.
"""

import os
import subprocess
import sys
from pathlib import Path

SITES_DIR = Path(__file__).resolve().parent
COMMANDS = [
    ["migrate", "--noinput"],
    ["collectstatic", "--noinput", "--verbosity", "0"],
]


def django_projects(root: Path = SITES_DIR) -> list[Path]:
    """Return the project folders (those holding a manage.py), sorted by name."""
    return sorted(path.parent for path in root.glob("*/manage.py"))


def prepare(project: Path) -> None:
    """Run every command of COMMANDS in ``project``; exit the script on failure."""
    # Each manage.py picks its own settings; an inherited value would win over it.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    for args in COMMANDS:
        command = [sys.executable, "manage.py", *args]
        result = subprocess.run(
            command, cwd=project, env=env, stdout=subprocess.DEVNULL, check=False
        )
        if result.returncode != 0:
            sys.exit(
                f"prepare.py: '{' '.join(command[1:])}' failed in {project} "
                f"(exit status {result.returncode})"
            )


def main() -> None:
    """Prepare every Django project found in sites/."""
    projects = django_projects()
    if not projects:
        sys.exit(f"prepare.py: no Django project (manage.py) found in {SITES_DIR}")
    for project in projects:
        prepare(project)
        print(f"{project.name}: migrated, static files collected")


if __name__ == "__main__":
    main()
