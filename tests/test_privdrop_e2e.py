"""
End to end: a daemonized C{twistd --uid --gid txrouter} started as root
binds its ports, then runs as an unprivileged user: the router and its
workers run as that user (C{/proc/PID/status}), apps see its IDs, the
runtime folder and the worker sockets are its own, and C{txrouter status}
and C{reload} (run as root, as the operator does) still reach the admin
endpoint, which root bound before the drop.

Ports below 1024 cannot be freed for a test: the port is a free high one,
bound before the drop all the same (in C{privilegedStartService}).

Runs as root only, with the system user C{txroutertest} (made with
C{useradd --system} if missing), and with a Python that user can run.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support import APPS, REPO, Txrouter, kill_workers, request, wait_until

pytestmark = pytest.mark.e2e

USER = "txroutertest"

_ROUTES = """\
listen: tcp:{{port}}:interface=127.0.0.1
runtime_dir: {runtime}
routes:
  /app/: {{wsgi: "whoami:application", path: {apps}}}
  /worker/: {{wsgi: "whoami:application", path: {apps}, workers: 2}}
"""


def _user() -> pwd.struct_passwd:
    """
    The test user, made if missing (as root).
    """
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        raise pytest.skip.Exception(f"no user {USER!r}, and no useradd to make one")
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            USER,
        ],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(USER)


def _python_for(user: pwd.struct_passwd) -> tuple[str, str]:
    """
    A Python that C{user} can run with our packages, and the C{PYTHONPATH}
    that gives it them: this one, or, when the user cannot reach it (a
    pyenv under C{/root}), the system's of the same version, with this
    environment's site-packages.
    """
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    pythonpath = os.pathsep.join([str(REPO), *sorted(paths)])
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, f"/usr/bin/{version}"):
        if not os.path.exists(python):
            continue
        try:
            result = subprocess.run(
                [python, "-c", "import twisted.web.wsgi, yaml, txrouter.worker"],
                user=user.pw_uid,
                group=user.pw_gid,
                extra_groups=[],
                env={"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin"},
                cwd="/",
                capture_output=True,
                timeout=60,
            )
        except PermissionError:
            continue
        if result.returncode == 0:
            return python, pythonpath
    raise pytest.skip.Exception(
        f"no Python that {USER!r} can run with this environment's packages "
        f"({sys.executable} is out of its reach, and no /usr/bin/{version})"
    )


def _ids(pid: int) -> tuple[list[int], list[int]]:
    """
    The real, effective, saved and filesystem user and group IDs of C{pid}.
    """
    fields = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    )
    return (
        [int(n) for n in fields["Uid"].split()],
        [int(n) for n in fields["Gid"].split()],
    )


class _DroppingRouter(Txrouter):
    """
    A L{Txrouter} started by root with C{--uid} and C{--gid}, on the
    Python C{python} with C{pythonpath}.
    """

    def __init__(
        self, routes: str, user: pwd.struct_passwd, python: str, pythonpath: str
    ) -> None:
        super().__init__(routes)
        self.user = user
        self.python = python
        self.pythonpath = pythonpath
        # The user reads the routes file (reload) and works in this folder.
        self.dir.chmod(0o755)

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("txrouter")
        group = grp.getgrgid(self.user.pw_gid).gr_name
        return [
            self.python,
            command[0],  # the twistd script, run by that Python
            *command[1:at],
            f"--uid={self.user.pw_name}",
            f"--gid={group}",
            *command[at:],
        ]


class PrivilegeDropTests(SynchronousTestCase):
    """
    A router started by root that runs as C{txroutertest}.
    """

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise self.skipTest("the privilege drop needs root to start from")
        self.user = user = _user()
        python, pythonpath = _python_for(user)
        self.runtime = Path("/nonexistent")
        router = self.router = _DroppingRouter("", user, python, pythonpath)
        self.addCleanup(shutil.rmtree, router.dir, True)
        # In a folder only root may write to: the router makes it for the
        # user before the drop.
        self.runtime = router.dir / "run" / "txrouter"
        self.runtime.parent.mkdir(mode=0o755)
        router.config.write_text(
            _ROUTES.format(runtime=self.runtime, apps=APPS).replace(
                "{port}", str(router.port)
            )
        )
        self.workers: set[int] = set()
        self.addCleanup(kill_workers, self.workers)
        self.env = {**os.environ, "PYTHONPATH": pythonpath}
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = pythonpath
        self.addCleanup(
            lambda: (
                os.environ.__setitem__("PYTHONPATH", old)
                if old is not None
                else os.environ.pop("PYTHONPATH", None)
            )
        )
        router.start()
        self.addCleanup(router.stop)
        wait_until(lambda: self.get("/worker/")[0] == 200, "the workers", 60)

    def get(self, path: str) -> tuple[int, Any]:
        status, _, body = request(self.router.port, "GET", path)
        return status, json.loads(body) if status == 200 else body

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """
        Run C{txrouter ARGS --config FILE} as root, as an operator does.
        """
        return subprocess.run(
            [
                str(Path(sys.executable).parent / "txrouter"),
                *args,
                "--config",
                str(self.router.config),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
        )

    def worker_pids(self) -> set[int]:
        pids = set()
        for _ in range(20):
            status, facts = self.get("/worker/")
            if status == 200:
                pids.add(facts["pid"])
        self.workers |= pids
        return pids

    def test_processes_run_as_the_user(self) -> None:
        """
        The router and every worker run as the user and its group, with no
        root ID left (real, effective, saved, filesystem), and apps see it.
        """
        uid, gid = self.user.pw_uid, self.user.pw_gid
        assert self.router.pid is not None
        self.assertEqual(_ids(self.router.pid), ([uid] * 4, [gid] * 4))
        status, facts = self.get("/app/")
        self.assertEqual(status, 200)
        self.assertEqual(facts["pid"], self.router.pid)
        self.assertEqual((facts["uid"], facts["euid"]), (uid, uid))
        self.assertEqual((facts["gid"], facts["egid"]), (gid, gid))
        wait_until(lambda: len(self.worker_pids()) == 2, "both workers")
        for pid in self.workers:
            self.assertEqual(_ids(pid), ([uid] * 4, [gid] * 4))
        status, facts = self.get("/worker/")
        self.assertEqual((facts["uid"], facts["euid"]), (uid, uid))

    def test_runtime_folder_is_the_users(self) -> None:
        """
        The runtime folder (made in a folder only root may write to) and
        the worker sockets in it belong to the user; the folder is 0700.
        """
        info = self.runtime.stat()
        self.assertEqual(
            (info.st_uid, info.st_gid), (self.user.pw_uid, self.user.pw_gid)
        )
        self.assertEqual(info.st_mode & 0o777, 0o700)
        # setUp waited for one ready worker; the other may still be starting.
        wait_until(lambda: len(list(self.runtime.glob("*.sock"))) == 2, "both sockets")
        sockets = list(self.runtime.glob("*.sock"))
        for path in sockets:
            self.assertEqual(path.stat().st_uid, self.user.pw_uid)

    def test_admin_after_the_drop(self) -> None:
        """
        C{txrouter status} and C{txrouter reload}, run as root, reach the
        router after the drop; the reload serves a new route. An upgrade
        is refused with the reason, and the router goes on serving.
        """
        status = self.cli("status", "--json")
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertEqual(json.loads(status.stdout)["generation"], 1)
        text = self.router.config.read_text()
        self.router.config.write_text(
            text + f'  /more/: {{wsgi: "whoami:application", path: {APPS}}}\n'
        )
        reload = self.cli("reload")
        self.assertEqual(reload.returncode, 0, reload.stdout + reload.stderr)
        self.assertEqual(self.get("/more/")[0], 200)
        upgrade = self.cli("upgrade")
        self.assertEqual(upgrade.returncode, 1, upgrade.stdout + upgrade.stderr)
        self.assertIn("--uid", upgrade.stdout + upgrade.stderr)
        self.assertEqual(self.get("/app/")[0], 200)

    def test_stop_and_start_again(self) -> None:
        """
        The stop goes through every stage (the workers are told to stop),
        though the user cannot remove the admin socket root made; the next
        start replaces that socket and serves.
        """
        self.worker_pids()
        self.router.stop()
        log = self.router.log()
        self.assertIn("leaving /", log)
        self.assertEqual(log.count("] Stopping factory"), 3, log)
        self.router.pidfile.unlink()  # root's: the user could not remove it
        self.router.start()
        self.assertEqual(self.get("/app/")[0], 200)
