"""
Tests for the C{txrouter check}, C{explain} and C{schema} commands,
L{txrouter.cli.main}.

Most run C{main} in this process with its output captured; one runs the
command as a child process to prove its exit status for real.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from twisted.trial.unittest import SynchronousTestCase

from txrouter.cli import main
from txrouter.config import load_config
from txrouter.explain import explain
from txrouter.schema import routes_schema

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent

VALID = """
    listen: tcp:8080:interface=127.0.0.1
    routes:
      /files/: {static: pub, cache: 60}
      /old/: {redirect: /files/, status: 301}
    hosts:
      shop.example.com: {routes: {/: {static: pub}}}
    """

INVALID = """
    listen: tcp:notaport
    colour: blue
    routes:
      /files/: {static: no-such-folder}
      /old/: {redirect: /files/, status: 200}
    """

MISSING_MODULE = "txrouter_test_no_such_module"

WSGI = f"""
    listen: tcp:8080
    routes:
      /app/: {{wsgi: "{MISSING_MODULE}:application", path: apps}}
    """


class CheckTests(SynchronousTestCase):
    """
    C{txrouter check FILE} says OK and exits 0, or lists every problem on
    stderr and exits 1.
    """

    def setUp(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="txrouter-cli-")).resolve()
        self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
        (self.root / "pub").mkdir()
        (self.root / "apps").mkdir()
        # Importing applications puts their paths on sys.path: undo it.
        saved = sys.path[:]
        self.addCleanup(sys.path.__setitem__, slice(None), saved)

    def write(self, text: str) -> Path:
        path = self.root / "routes.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def run_main(self, *argv: str) -> tuple[int, str, str]:
        """
        @return: the exit status, stdout and stderr of C{main(argv)}.
        """
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(list(argv))
        return status, out.getvalue(), err.getvalue()

    def test_valid(self) -> None:
        """
        A valid file with static and redirect routes exits 0 with one OK
        line that counts listeners, routes and hosts, and nothing on stderr.
        """
        path = self.write(VALID)
        status, out, err = self.run_main("check", str(path))
        self.assertEqual(
            (status, out, err),
            (0, f"{path}: OK (1 listener(s), 3 route(s), 1 host(s))\n", ""),
        )

    def test_invalid(self) -> None:
        """
        An invalid file exits 1, prints each problem as C{file:line: ...} on
        stderr and then a count line, and no traceback.
        """
        path = self.write(INVALID)
        status, out, err = self.run_main("check", str(path))
        self.assertEqual(status, 1)
        self.assertEqual(out, "")
        lines = err.splitlines()
        self.assertEqual(len(lines), 5, err)
        self.assertEqual(
            sorted(line.split(": ", 2)[:2] for line in lines[:-1]),
            [
                [f"{path}:1", "listen"],
                [f"{path}:2", "colour"],
                [f"{path}:4", "routes['/files/'].static"],
                [f"{path}:5", "routes['/old/'].status"],
            ],
        )
        self.assertEqual(lines[-1], f"{path}: 4 problems")
        self.assertNotIn("Traceback", err)

    def test_one_problem(self) -> None:
        """
        The count line says "1 problem", in the singular.
        """
        path = self.write("listen: tcp:8080\nroutes: {/: {static: nowhere}}\n")
        status, _, err = self.run_main("check", str(path))
        self.assertEqual(status, 1)
        self.assertEqual(err.splitlines()[-1], f"{path}: 1 problem")

    def test_missing_file(self) -> None:
        """
        A file that does not exist exits 1 with a message naming it and no
        traceback.
        """
        path = self.root / "nowhere.yaml"
        status, out, err = self.run_main("check", str(path))
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith(f"{path}: cannot read the file: "), err)
        self.assertEqual(err.splitlines()[-1], f"{path}: 1 problem")
        self.assertNotIn("Traceback", err)

    def test_no_import(self) -> None:
        """
        With C{--no-import} a WSGI route whose module does not exist passes:
        only the file is checked.
        """
        path = self.write(WSGI)
        status, out, err = self.run_main("check", "--no-import", str(path))
        self.assertEqual(
            (status, out, err),
            (0, f"{path}: OK (1 listener(s), 1 route(s), 0 host(s))\n", ""),
        )

    def test_import(self) -> None:
        """
        Without C{--no-import} the missing module is reported, after the
        route's C{file:line}, and the command exits 1.
        """
        path = self.write(WSGI)
        status, out, err = self.run_main("check", str(path))
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith(f"{path}:3: routes['/app/']: "), err)
        self.assertIn(f"no module named {MISSING_MODULE!r}", err)
        self.assertIn(str(self.root / "apps"), err)
        self.assertNotIn("Traceback", err)

    def test_every_import_failure(self) -> None:
        """
        Every application that fails to load is reported, not the first.
        """
        path = self.write(
            f"""
            listen: tcp:8080
            routes:
              /a/: {{wsgi: "{MISSING_MODULE}_a:application", path: apps}}
              /b/: {{wsgi: "{MISSING_MODULE}_b:application", path: apps}}
            """
        )
        status, _, err = self.run_main("check", str(path))
        self.assertEqual(status, 1)
        self.assertIn(f"{path}:3: routes['/a/']: ", err)
        self.assertIn(f"{path}:4: routes['/b/']: ", err)
        self.assertIn(f"{MISSING_MODULE}_b", err)

    def test_django_warnings(self) -> None:
        """
        What the server would warn about is reported too: here a Django
        project (in workers) with C{STATIC_URL} and no C{STATIC_ROOT}; the
        runtime folder the workers would use is not made.
        """
        project = self.root / "proj"
        (project / "proj").mkdir(parents=True)
        (project / "manage.py").write_text(
            "import os\n"
            "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'proj.settings')\n"
        )
        (project / "proj" / "__init__.py").write_text("")
        (project / "proj" / "settings.py").write_text(
            "SECRET_KEY = 'x'\nSTATIC_URL = 'static/'\n"
        )
        path = self.write(
            """
            listen: tcp:8080
            runtime_dir: run
            routes:
              /p/: {django: proj, workers: 1}
            """
        )
        status, out, err = self.run_main("check", str(path))
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(
            err,
            f"{path}:4: routes['/p/']: STATIC_ROOT is not set, so /p/static/ "
            "is not served; set it (and run 'manage.py collectstatic')\n",
        )
        self.assertFalse((self.root / "run").exists())

    def test_usage(self) -> None:
        """
        A command line without a command is a usage error: exit status 2.
        """
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            error = self.assertRaises(SystemExit, main, [])
        self.assertEqual(error.code, 2)
        self.assertIn("usage: txrouter", err.getvalue())


class ExplainTests(SynchronousTestCase):
    """
    C{txrouter explain FILE URL} prints what the router would do, and exits
    0 when a route takes the request, 1 when none does or the file is not
    valid.
    """

    def setUp(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="txrouter-cli-")).resolve()
        self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
        (self.root / "pub").mkdir()
        (self.root / "pub" / "a.txt").write_text("a\n")

    def write(self, text: str) -> Path:
        path = self.root / "routes.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    run_main = CheckTests.run_main

    def test_route(self) -> None:
        """
        A URL a route takes: its explanation on stdout, exit 0.
        """
        path = self.write(VALID)
        status, out, err = self.run_main("explain", str(path), "/old/x?y=1")
        self.assertEqual((status, err), (0, ""))
        self.assertIn(f"route:    {path}:4: routes['/old/']: redirect /files/", out)
        self.assertIn("answer:   301 Moved Permanently, Location: /files/x?y=1", out)

    def test_options(self) -> None:
        """
        C{--host} chooses the host table, C{--method} the method, and
        C{--json} prints what L{explain} returns, as JSON.
        """
        path = self.write(VALID)
        status, out, err = self.run_main(
            "explain",
            str(path),
            "/a.txt",
            "--host",
            "shop.example.com",
            "--method",
            "head",
            "--json",
        )
        self.assertEqual((status, err), (0, ""))
        expected = explain(load_config(path), "/a.txt", "shop.example.com", "head")
        self.assertEqual(json.loads(out), expected)
        self.assertEqual(expected["request"]["method"], "HEAD")
        self.assertEqual(expected["host"]["match"], "exact")
        self.assertEqual(expected["file"]["path"], str(self.root / "pub" / "a.txt"))

    def test_no_route(self) -> None:
        """
        A URL no route takes: the router's 404 is explained, exit 1.
        """
        path = self.write(VALID)
        status, out, err = self.run_main("explain", str(path), "http://x.test/else")
        self.assertEqual((status, err), (1, ""))
        self.assertIn("answer:   404 Not Found: no route matches this URL", out)

    def test_refused(self) -> None:
        """
        A target the router refuses outright: its 400, exit 1.
        """
        path = self.write(VALID)
        status, out, _ = self.run_main("explain", str(path), "files/x")
        self.assertEqual(status, 1)
        self.assertIn("400 Bad Request", out)

    def test_invalid_file(self) -> None:
        """
        An invalid file: exactly what C{check} prints, exit 1, nothing on
        stdout.
        """
        path = self.write(INVALID)
        explained = self.run_main("explain", str(path), "/")
        checked = self.run_main("check", str(path))
        self.assertEqual(explained, checked)
        self.assertEqual(explained[:2], (1, ""))

    def test_bad_method(self) -> None:
        """
        A method that is not an HTTP token is a usage error: exit 2.
        """
        path = self.write(VALID)
        status, out, err = self.run_main("explain", str(path), "/", "--method", "A B")
        self.assertEqual((status, out), (2, ""))
        self.assertEqual(err, "txrouter explain: not an HTTP method: 'A B'\n")


class SchemaTests(SynchronousTestCase):
    """
    C{txrouter schema} prints the JSON Schema of routes.yaml.
    """

    def test_prints(self) -> None:
        """
        The output is L{routes_schema}, as JSON; exit 0.
        """
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = main(["schema"])
        self.assertEqual(status, 0)
        self.assertEqual(json.loads(out.getvalue()), routes_schema())


class ChildProcessTests(SynchronousTestCase):
    """
    The command as a real process, the way users and scripts run it.
    """

    def test_exit_status(self) -> None:
        """
        C{python -m txrouter.cli check} exits 0 for a valid file and 1 for an
        invalid one, whose stderr lists the problems without a traceback.
        """
        root = Path(tempfile.mkdtemp(prefix="txrouter-cli-")).resolve()
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        (root / "pub").mkdir()
        valid = root / "valid.yaml"
        valid.write_text(textwrap.dedent(VALID), encoding="utf-8")
        invalid = root / "invalid.yaml"
        invalid.write_text(textwrap.dedent(INVALID).lstrip("\n"), encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
        )

        def check(path: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "txrouter.cli", "check", str(path)],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )

        ok = check(valid)
        self.assertEqual((ok.returncode, ok.stderr), (0, ""))
        self.assertIn(f"{valid}: OK", ok.stdout)

        bad = check(invalid)
        self.assertEqual(bad.returncode, 1, bad.stderr)
        self.assertEqual(bad.stdout, "")
        self.assertNotIn("Traceback", bad.stderr)
        self.assertIn(f"{invalid}:1: listen: bad endpoint 'tcp:notaport'", bad.stderr)
        self.assertEqual(bad.stderr.splitlines()[-1], f"{invalid}: 4 problems")
