"""Prepare the example Django projects: run migrations, collect static files,
and give each project that has Django's admin an account to log in with.

Usage: ``python sites/prepare.py``. Every folder of ``sites/`` that holds a
``manage.py`` is treated as a Django project. Running it again is harmless:
an existing admin account is left as it is.

The admin account (``admin`` / ``admin``) is for trying the examples on your
own machine only: never serve these databases where others can reach them.
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
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin"

# Run by "manage.py shell" in each project; it prints one word, the outcome.
# create_superuser skips the password validators, which would refuse "admin".
ENSURE_ADMIN = f"""
from django.apps import apps

if not apps.is_installed("django.contrib.admin"):
    print("no-admin")
else:
    from django.contrib.auth import get_user_model

    User = get_user_model()
    if User._default_manager.filter(
        **{{User.USERNAME_FIELD: {ADMIN_USERNAME!r}}}
    ).exists():
        print("exists")
    else:
        User._default_manager.create_superuser(
            {ADMIN_USERNAME!r}, email="", password={ADMIN_PASSWORD!r}
        )
        print("created")
"""


def django_projects(root: Path = SITES_DIR) -> list[Path]:
    """Return the project folders (those holding a manage.py), sorted by name."""
    return sorted(path.parent for path in root.glob("*/manage.py"))


def manage(project: Path, args: list[str], capture: bool = False) -> str:
    """Run ``manage.py args`` in ``project``; exit the script on failure.

    Return its standard output when ``capture`` is true, else discard it.
    """
    # Each manage.py picks its own settings; an inherited value would win over it.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    command = [sys.executable, "manage.py", *args]
    result = subprocess.run(
        command,
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        # The shell's --command is a whole script: name it rather than print it.
        shown = "manage.py shell" if args[0] == "shell" else " ".join(command[1:])
        sys.exit(
            f"prepare.py: '{shown}' failed in {project} "
            f"(exit status {result.returncode})"
        )
    return result.stdout or ""


def prepare(project: Path) -> None:
    """Run every command of COMMANDS in ``project``; exit the script on failure."""
    for args in COMMANDS:
        manage(project, args)


def ensure_admin(project: Path) -> str | None:
    """Create the local admin account of ``project`` unless it exists already.

    Return a line saying what was done, or None if the project has no admin.
    """
    args = ["shell", "--no-imports", "--verbosity", "0", "--command", ENSURE_ADMIN]
    outcome = manage(project, args, capture=True).split()[-1:]
    if outcome == ["no-admin"]:
        return None
    name = project.name
    local = "for local use only: never serve this database where others can reach it"
    if outcome == ["created"]:
        account = f"{ADMIN_USERNAME} / {ADMIN_PASSWORD}"
        return f"{name}: admin account {account} created ({local})"
    if outcome == ["exists"]:
        return f"{name}: admin account {ADMIN_USERNAME} already exists ({local})"
    sys.exit(f"prepare.py: 'manage.py shell' in {project} printed no outcome")


def main() -> None:
    """Prepare every Django project found in sites/."""
    projects = django_projects()
    if not projects:
        sys.exit(f"prepare.py: no Django project (manage.py) found in {SITES_DIR}")
    for project in projects:
        prepare(project)
        print(f"{project.name}: migrated, static files collected")
        line = ensure_admin(project)
        if line is not None:
            print(line)


if __name__ == "__main__":
    main()
