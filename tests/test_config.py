"""
Unit tests of L{txrouter.config.load_config}, the YAML loader under it and
L{txrouter.djangoproject.default_settings_module}.

Every routes file is written into a fresh temporary folder beside the
folders it names; nothing listens and no reactor runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml
from twisted.trial.unittest import SynchronousTestCase

from tests.upstreams import _self_signed
from txrouter.config import (
    Config,
    DjangoRoute,
    Origin,
    ProxyRoute,
    RedirectRoute,
    StaticRoute,
    Threads,
    WsgiRoute,
    load_config,
)
from txrouter.djangoproject import default_settings_module
from txrouter.endpointstrings import ListenAddress, listen_address, split_endpoint
from txrouter.errors import ConfigError, Problem
from txrouter.limits import Limits
from txrouter.routespec import Admission
from txrouter.yamlsource import MAX_DEPTH, LocatedDict, LocatedList, TooDeep, load_yaml

pytestmark = pytest.mark.unit

MANAGE_PY = """\
#!/usr/bin/env python
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{settings}")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
"""


def make_site(case: SynchronousTestCase) -> Path:
    """
    Make a temporary folder holding what the routes files of these tests
    name: static folders, a WSGI path and two tiny Django project folders.

    @return: its absolute, symlink-free path; removed after the test.
    """
    root = Path(tempfile.mkdtemp(prefix="txrouter-config-")).resolve()
    case.addCleanup(shutil.rmtree, root, ignore_errors=True)
    for name in ("pub", "hello", "bare", "logs"):
        (root / name).mkdir()
    for name, settings in (("blog", "proj.settings"), ("wiki", "wiki.settings")):
        (root / name).mkdir()
        (root / name / "manage.py").write_text(
            MANAGE_PY.replace("{settings}", settings)
        )
    return root


def write_routes(folder: Path, text: str, name: str = "routes.yaml") -> Path:
    """
    Write C{text} (dedented, leading newline dropped, so that its first
    written line is line 1) as a routes file in C{folder}.
    """
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(case: SynchronousTestCase, path: Path) -> list[Problem]:
    """
    Load C{path}, which must be refused, and return the problems found.
    """
    error = case.assertRaises(ConfigError, load_config, path)
    return error.problems


def chdir(case: SynchronousTestCase, folder: Path) -> None:
    """
    Work in C{folder} for the rest of the test.
    """
    previous = os.getcwd()
    os.chdir(folder)
    case.addCleanup(os.chdir, previous)


# (case name, routes file, line, where, fragments of the message).
# "{root}" in a fragment stands for the site folder.
SINGLE_PROBLEM_CASES: list[tuple[str, str, int, str, tuple[str, ...]]] = [
    (
        "unknown top-level key",
        """
        listen: tcp:8080
        routes:
          /: {static: pub}
        colour: blue
        """,
        4,
        "colour",
        ("unknown key; expected one of: listen, threads, drain_timeout",),
    ),
    (
        "unknown route key",
        """
        listen: tcp:8080
        routes:
          /:
            static: pub
            chache: 60
        """,
        5,
        "routes['/'].chache",
        ("unknown key; a static route takes: static, cache",),
    ),
    (
        "option of another kind",
        """
        listen: tcp:8080
        routes:
          /blog/:
            django: blog
            cache: 60
        """,
        5,
        "routes['/blog/'].cache",
        ("'cache' is an option of static routes, not django",),
    ),
    (
        "two kind keys",
        """
        listen: tcp:8080
        routes:
          /:
            static: pub
            proxy: http://127.0.0.1:9000/
        """,
        5,
        "routes['/']",
        ("has both 'static' and 'proxy'", "exactly one kind"),
    ),
    (
        "no kind key",
        """
        listen: tcp:8080
        routes:
          /:
            cache: 60
        """,
        4,
        "routes['/']",
        ("no route kind: expected one of django, wsgi, static, proxy, redirect",),
    ),
    (
        "same prefix with and without its slash",
        """
        listen: tcp:8080
        routes:
          /wiki: {static: pub}
          /wiki/: {static: pub}
        """,
        4,
        "routes['/wiki/']",
        ("duplicate prefix: '/wiki/' is already routed on line 3",),
    ),
    (
        "missing directory",
        """
        listen: tcp:8080
        routes:
          /files/: {static: no-such-folder}
        """,
        3,
        "routes['/files/'].static",
        ("'{root}/no-such-folder' is not a folder", "the routes file's folder"),
    ),
    (
        "endpoint with a bad port",
        """
        listen: tcp:notaport
        routes:
          /: {static: pub}
        """,
        1,
        "listen",
        ("bad endpoint 'tcp:notaport'",),
    ),
    (
        "endpoint of an unknown type, second in a list",
        """
        listen:
          - tcp:8080
          - nosuchendpoint:1
        routes:
          /: {static: pub}
        """,
        3,
        "listen[1]",
        ("bad endpoint 'nosuchendpoint:1'", "Unknown endpoint type"),
    ),
    (
        "listen missing",
        """
        threads: {min: 1, max: 4}
        routes:
          /: {static: pub}
        """,
        1,
        "listen",
        ("missing; expected a Twisted endpoint string",),
    ),
    (
        "listen of the wrong type",
        """
        routes:
          /: {static: pub}
        listen: 8080
        """,
        3,
        "listen",
        ("expected an endpoint string or a non-empty list", "got int 8080"),
    ),
    (
        "threads min greater than max",
        """
        listen: tcp:8080
        threads: {min: 30, max: 20}
        routes:
          /: {static: pub}
        """,
        2,
        "threads",
        ("min (30) is greater than max (20)",),
    ),
    (
        "threads of the wrong type",
        """
        listen: tcp:8080
        threads: 20
        routes:
          /: {static: pub}
        """,
        2,
        "threads",
        ("expected a mapping like {min: 2, max: 8}, got int 20",),
    ),
    (
        "threads.max not a whole number",
        """
        listen: tcp:8080
        threads:
          min: 1
          max: 2.5
        routes:
          /: {static: pub}
        """,
        4,
        "threads.max",
        ("expected a whole number, got float 2.5",),
    ),
    (
        "negative workers",
        """
        listen: tcp:8080
        routes:
          /blog/:
            django: blog
            workers: -1
        """,
        5,
        "routes['/blog/'].workers",
        ("must be >= 0, got -1",),
    ),
    (
        "boolean where a number is expected",
        """
        listen: tcp:8080
        drain_timeout: yes
        routes:
          /: {static: pub}
        """,
        2,
        "drain_timeout",
        ("expected a number, got the boolean true",),
    ),
    (
        "wsgi spec without a colon",
        """
        listen: tcp:8080
        routes:
          /hello/: {wsgi: hello, path: hello}
        """,
        3,
        "routes['/hello/'].wsgi",
        ("expected 'module:attribute'", "got str 'hello'"),
    ),
    (
        "redirect status that is not a redirect",
        """
        listen: tcp:8080
        routes:
          /old/:
            redirect: /new/
            status: 200
        """,
        5,
        "routes['/old/'].status",
        ("expected one of 301, 302, 303, 307, 308, got int 200",),
    ),
    (
        "redirect target without a leading slash",
        """
        listen: tcp:8080
        routes:
          /old/:
            redirect: new/
        """,
        4,
        "routes['/old/'].redirect",
        ("expected a path starting with '/'", "got str 'new/'"),
    ),
    (
        "proxy upstream with an unsupported scheme",
        """
        listen: tcp:8080
        routes:
          /api/: {proxy: "ftp://x"}
        """,
        3,
        "routes['/api/'].proxy",
        ("expected an upstream such as", "got str 'ftp://x'"),
    ),
    (
        "proxy upstream without a host, second in a list",
        """
        listen: tcp:8080
        routes:
          /api/:
            proxy:
              - http://127.0.0.1:9001/
              - "http://"
        """,
        6,
        "routes['/api/'].proxy[1]",
        ("expected an upstream such as", "got str 'http://'"),
    ),
    (
        "host name with a port",
        """
        listen: tcp:8080
        routes:
          /: {static: pub}
        hosts:
          shop.example.com:8080: {routes: {/: {static: pub}}}
        """,
        5,
        "hosts['shop.example.com:8080']",
        ("not a valid host name", "ignores the port"),
    ),
    (
        "host name with a wildcard inside",
        """
        listen: tcp:8080
        routes:
          /: {static: pub}
        hosts:
          a.*.com: {routes: {/: {static: pub}}}
        """,
        5,
        "hosts['a.*.com']",
        ("not a valid host name", "wildcard is allowed only as a leading '*.'"),
    ),
    (
        "same host twice, differing only in case",
        """
        listen: tcp:8080
        hosts:
          shop.example.com: {routes: {/: {static: pub}}}
          SHOP.example.com: {routes: {/: {static: pub}}}
        """,
        4,
        "hosts['SHOP.example.com']",
        ("this host is listed twice", "ignore case"),
    ),
    (
        "django project without manage.py or settings",
        """
        listen: tcp:8080
        routes:
          /: {django: bare}
        """,
        3,
        "routes['/'].django",
        ("no settings module: '{root}/bare/manage.py'", "'settings: "),
    ),
    (
        "two Django projects both in the router process",
        """
        listen: tcp:8080
        routes:
          /blog/: {django: blog, workers: 0}
          /wiki/: {django: wiki, workers: 0}
        """,
        4,
        "routes['/wiki/']",
        ("routes['/blog/'] (line 3)", "process-global", "'workers: 1'"),
    ),
    (
        "access log in a folder that does not exist",
        """
        listen: tcp:8080
        access_log: no-such-folder/access.log
        routes:
          /: {static: pub}
        """,
        2,
        "access_log",
        ("the folder '{root}/no-such-folder' does not exist",),
    ),
    (
        "YAML syntax error",
        """
        listen: tcp:8080
        routes:
          /: {static: pub}
         bad: indentation
        """,
        4,
        "",
        ("not valid YAML",),
    ),
    (
        "empty file",
        "",
        1,
        "",
        ("expected a mapping with at least 'listen:' and 'routes:', got nothing",),
    ),
    (
        "top level is a list",
        """
        - listen: tcp:8080
        - routes: {/: {static: pub}}
        """,
        1,
        "",
        ("expected a mapping with at least 'listen:' and 'routes:', got a list",),
    ),
]


class SingleProblemTests(SynchronousTestCase):
    """
    Each kind of mistake is reported alone, as C{file:line: where: message}.
    """

    def test_each_mistake(self) -> None:
        """
        Every case of the table gives exactly one problem, on its line,
        naming its place in the file and saying what is wrong.
        """
        root = make_site(self)
        failures = []
        for name, text, line, where, fragments in SINGLE_PROBLEM_CASES:
            path = write_routes(root, text)
            try:
                load_config(path)
            except ConfigError as e:
                problems = e.problems
            else:
                failures.append(f"{name}: the file was accepted")
                continue
            if len(problems) != 1:
                found = "\n    ".join(map(str, problems))
                failures.append(
                    f"{name}: {len(problems)} problems instead of 1:\n    {found}"
                )
                continue
            [problem] = problems
            prefix = f"{path}:{line}: {where}: " if where else f"{path}:{line}: "
            text_of = str(problem)
            wanted = [f.replace("{root}", str(root)) for f in fragments]
            if (
                problem.file != str(path)
                or problem.line != line
                or problem.where != where
                or not text_of.startswith(prefix)
                or not all(f in problem.message for f in wanted)
            ):
                failures.append(
                    f"{name}:\n    got      {text_of!r}\n"
                    f"    expected {prefix!r} + a message with {wanted!r}"
                )
        if failures:
            self.fail("\n".join(failures))

    def test_exact_text(self) -> None:
        """
        A problem reads exactly C{file:line: where: message}, as in the
        house style's example.
        """
        root = make_site(self)
        path = write_routes(
            root,
            """
            listen: tcp:8080
            routes:
              /blog/:
                django: blog
                workers: -1
            """,
        )
        [problem] = problems_of(self, path)
        self.assertEqual(
            str(problem), f"{path}:5: routes['/blog/'].workers: must be >= 0, got -1"
        )

    def test_duplicate_prefix_key(self) -> None:
        """
        A prefix given twice as a YAML key is reported on its second line,
        naming the first, although YAML itself would keep only the last.
        """
        root = make_site(self)
        path = write_routes(
            root,
            """
            listen: tcp:8080
            routes:
              /wiki/: {static: pub}
              /blog/: {static: pub}
              /wiki/: {static: hello}
            """,
        )
        [problem] = problems_of(self, path)
        self.assertEqual(problem.line, 5)
        self.assertTrue(
            str(problem).startswith(f"{path}:5: "), f"{problem} has no file:line"
        )
        self.assertIn("'/wiki/' is given twice (first on line 3)", problem.message)

    def test_duplicate_key_names_its_path(self) -> None:
        """
        A duplicate YAML key is reported like every other problem, with the
        path of the value inside the file (C{file:line: where: message}).
        """
        root = make_site(self)
        path = write_routes(
            root,
            """
            listen: tcp:8080
            routes:
              /wiki/: {static: pub}
              /wiki/: {static: hello}
            """,
        )
        [problem] = problems_of(self, path)
        self.assertEqual(problem.where, "routes['/wiki/']")

    def test_missing_file(self) -> None:
        """
        A file that does not exist gives one problem with no line, naming
        the file, and no chained exception that would print a traceback.
        """
        root = make_site(self)
        path = root / "nowhere.yaml"
        error = self.assertRaises(ConfigError, load_config, path)
        [problem] = error.problems
        self.assertEqual(
            (problem.file, problem.line, problem.where), (str(path), 0, "")
        )
        self.assertTrue(str(problem).startswith(f"{path}: cannot read the file: "))
        self.assertNotIn("Traceback", str(error))
        self.assertIsNone(error.__cause__)
        self.assertTrue(error.__suppress_context__)

    def test_yaml_error_is_not_chained(self) -> None:
        """
        A YAML syntax error is not chained to PyYAML's exception, so no
        traceback of the parser is printed with it.
        """
        root = make_site(self)
        path = write_routes(root, "listen: [tcp:8080\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertIsNone(error.__cause__)
        self.assertTrue(error.__suppress_context__)

    def test_unsafe_tag_refused(self) -> None:
        """
        YAML is safe-loaded: a C{!!python/object/apply} tag is a problem on
        its line, and the command it names is never run.
        """
        root = make_site(self)
        marker = root / "marker"
        path = write_routes(
            root,
            f"""
            listen: tcp:8080
            routes:
              /: !!python/object/apply:os.system ["touch {marker}"]
            """,
        )
        [problem] = problems_of(self, path)
        self.assertEqual(problem.line, 3)
        self.assertIn("not valid YAML", problem.message)
        self.assertIn("python/object/apply:os.system", problem.message)
        self.assertFalse(marker.exists(), "the YAML tag ran a command")

    def test_missing_listen_and_routes_both_reported(self) -> None:
        """
        A file with neither C{listen:} nor C{routes:} gets both problems at
        once, not one per run.
        """
        root = make_site(self)
        path = write_routes(root, "drain_timeout: 5\n")
        problems = problems_of(self, path)
        self.assertEqual(sorted(p.where for p in problems), ["listen", "routes"])

    def test_nan_refused(self) -> None:
        """
        C{.nan} is not a number of seconds: C{drain_timeout: .nan} is refused.
        """
        root = make_site(self)
        path = write_routes(
            root,
            """
            listen: tcp:8080
            drain_timeout: .nan
            routes:
              /: {static: pub}
            """,
        )
        [problem] = problems_of(self, path)
        self.assertEqual((problem.line, problem.where), (2, "drain_timeout"))

    def test_malformed_upstream_url(self) -> None:
        """
        An upstream URL that C{urlsplit} cannot parse (an unclosed IPv6
        bracket) is a problem on its line, not an uncaught C{ValueError}.
        """
        root = make_site(self)
        path = write_routes(
            root,
            """
            listen: tcp:8080
            routes:
              /api/: {proxy: "http://[::1/"}
            """,
        )
        [problem] = problems_of(self, path)
        self.assertEqual((problem.line, problem.where), (3, "routes['/api/'].proxy"))


class SeveralProblemsTests(SynchronousTestCase):
    """
    Every problem of a file is reported at once, in one L{ConfigError}.
    """

    TEXT = """
        listen:
          - tcp:notaport
        threads: {min: 9, max: 3}
        drain_timeout: -1
        colour: blue
        routes:
          /a/: {static: missing}
          /b/: {redirect: b}
          /c/: {static: pub, ttl: 5}
        hosts:
          "a.*.org": {routes: {/: {static: pub}}}
        """

    def test_all_reported(self) -> None:
        """
        Eight independent mistakes give eight problems, each on its own line
        and place.
        """
        root = make_site(self)
        path = write_routes(root, self.TEXT)
        problems = problems_of(self, path)
        self.assertEqual(len(problems), 8, "\n".join(map(str, problems)))
        self.assertEqual(
            sorted((p.line, p.where) for p in problems),
            [
                (2, "listen[0]"),
                (3, "threads"),
                (4, "drain_timeout"),
                (5, "colour"),
                (7, "routes['/a/'].static"),
                (8, "routes['/b/'].redirect"),
                (9, "routes['/c/'].ttl"),
                (11, "hosts['a.*.org']"),
            ],
        )

    def test_one_line_per_problem(self) -> None:
        """
        The error's text is one C{file:line: ...} line per problem, with no
        traceback in it.
        """
        root = make_site(self)
        path = write_routes(root, self.TEXT)
        error = self.assertRaises(ConfigError, load_config, path)
        lines = str(error).splitlines()
        self.assertEqual(lines, [str(p) for p in error.problems])
        self.assertEqual(len(lines), 8)
        for line in lines:
            self.assertTrue(line.startswith(f"{path}:"), line)
        self.assertNotIn("Traceback", str(error))


#: The message of a file nested more than 100 levels deep.
TOO_DEEP = (
    "nested too deeply (more than 100 levels of lists and mappings); a routes "
    "file needs only a few: look for a stray '[' or '{', or an alias that "
    "repeats a deep value"
)

#: The message of a character refused in an http(s) upstream URL.
NOT_IN_URL = (
    "is not allowed in an upstream URL (printable ASCII only, no spaces): "
    "percent-encode it in the path ('%20' for a space) and write a host name "
    "in its ASCII 'xn--' form"
)

#: The end of the message of a listener whose folder does not exist.
NO_FOLDER = (
    "of the socket does not exist (relative paths start at the working "
    "directory, '{root}', as in Twisted)"
)

#: The message of a C{listen} string given twice.
SAME = (
    "the same endpoint as {first}; each address can be bound once: remove one of them"
)

# (case name, routes file, the whole text of its one problem after "FILE:").
# "{root}" stands for the site folder, which is also the working directory;
# "{cert}" and "{key}" for a self-signed certificate and its key in it.
EXACT_PROBLEM_CASES: list[tuple[str, str, str]] = [
    (
        "a list nested 5,000 levels deep",
        "listen: " + "[" * 5000 + "]" * 5000 + "\nroutes: {/: {static: pub}}\n",
        f"1: {TOO_DEEP}",
    ),
    (
        "a flow mapping nested 5,000 levels deep",
        "listen: tcp:8080\nroutes:\n  /: {static: pub, cache: "
        + "{a: " * 5000
        + "1"
        + "}" * 5000
        + "}\n",
        f"3: {TOO_DEEP}",
    ),
    (
        "block mappings nested 150 levels deep: the 101st level's line",
        "listen: tcp:8080\nroutes:\n  /:\n"
        + "".join(" " * (i + 4) + f"k{i}:\n" for i in range(150)),
        f"102: {TOO_DEEP}",
    ),
    (
        "an alias of 60 levels used 60 levels deep",
        "listen: tcp:8080\nroutes: {/: {static: pub}}\n"
        "deep: &deep " + "[" * 60 + "]" * 60 + "\n"
        "deeper: " + "[" * 60 + "*deep" + "]" * 60 + "\n",
        f"4: {TOO_DEEP}",
    ),
    (
        "the same endpoint twice",
        """
        listen:
          - tcp:8080
          - tcp:8080
        routes: {/: {static: pub}}
        """,
        "3: listen[1]: " + SAME.format(first="listen[0] (line 2)"),
    ),
    (
        "one port, positional and named",
        """
        listen:
          - tcp:8080
          - tcp:8081
          - tcp:port=8080:backlog=10
        routes: {/: {static: pub}}
        """,
        "4: listen[2]: " + SAME.format(first="listen[0] (line 2)"),
    ),
    (
        "a PROXY-protocol listener on a port already listed",
        """
        listen:
          - tcp:8080:interface=127.0.0.1
          - haproxy:tcp:8080:interface=127.0.0.1
        routes: {/: {static: pub}}
        """,
        "3: listen[1]: " + SAME.format(first="listen[0] (line 2)"),
    ),
    (
        "one IPv6 interface written two ways",
        r"""
        listen:
          - 'tcp6:8080:interface=\:\:1'
          - 'tcp6:port=8080:interface=0\:0\:0\:0\:0\:0\:0\:1'
        routes: {/: {static: pub}}
        """,
        "3: listen[1]: " + SAME.format(first="listen[0] (line 2)"),
    ),
    (
        "one socket, relative and absolute",
        """
        listen:
          - unix:pub/txrouter.sock
          - unix:{root}/pub/./txrouter.sock
        routes: {/: {static: pub}}
        """,
        "3: listen[1]: " + SAME.format(first="listen[0] (line 2)"),
    ),
    (
        "port above 65535",
        "listen: tcp:70000\nroutes: {/: {static: pub}}\n",
        "1: listen: port must be 1-65535, got 70000",
    ),
    (
        "port 0 (any free port: nobody could find it)",
        "listen: tcp:0:interface=127.0.0.1\nroutes: {/: {static: pub}}\n",
        "1: listen: port must be 1-65535, got 0",
    ),
    (
        "negative port, named",
        "listen: tcp:port=-1\nroutes: {/: {static: pub}}\n",
        "1: listen: port must be 1-65535, got -1",
    ),
    (
        "IPv6 port above 65535, second in a list",
        "listen: [tcp:8080, tcp6:99999]\nroutes: {/: {static: pub}}\n",
        "1: listen[1]: port must be 1-65535, got 99999",
    ),
    (
        "TLS port above 65535",
        "listen: ssl:70000:privateKey={key}:certKey={cert}\n"
        "routes: {/: {static: pub}}\n",
        "1: listen: port must be 1-65535, got 70000",
    ),
    (
        "PROXY-protocol port above 65535",
        "listen: haproxy:tcp:70000\nroutes: {/: {static: pub}}\n",
        "1: listen: port must be 1-65535, got 70000",
    ),
    (
        "UNIX socket in a folder that does not exist",
        "listen: unix:/no/such/dir/s.sock\nroutes: {/: {static: pub}}\n",
        f"1: listen: the folder '/no/such/dir' {NO_FOLDER}",
    ),
    (
        "UNIX socket in a relative folder that does not exist",
        "listen: [tcp:8080, 'unix:run/s.sock:mode=600']\nroutes: {/: {static: pub}}\n",
        f"1: listen[1]: the folder '{{root}}/run' {NO_FOLDER}",
    ),
    (
        "PROXY-protocol socket in a folder that does not exist",
        "listen: haproxy:unix:address=/no/such/dir/s.sock\n"
        "routes: {/: {static: pub}}\n",
        f"1: listen: the folder '/no/such/dir' {NO_FOLDER}",
    ),
    (
        "endpoint ending in a lone backslash",
        "listen: tcp:8080\\\nroutes: {/: {static: pub}}\n",
        "1: listen: bad endpoint 'tcp:8080\\\\': the string ends in a lone "
        "backslash; write '\\\\' for a backslash",
    ),
    (
        "upstream with CR LF: a header injected upstream",
        "listen: tcp:8080\nroutes:\n"
        '  /api/: {proxy: "http://127.0.0.1:9000/a\\r\\nX: y"}\n',
        f"3: routes['/api/'].proxy: '\\r' at position 23 {NOT_IN_URL}",
    ),
    (
        "upstream with a space: the request line split",
        'listen: tcp:8080\nroutes:\n  /api/: {proxy: "http://127.0.0.1:9000/a b/"}\n',
        f"3: routes['/api/'].proxy: ' ' at position 23 {NOT_IN_URL}",
    ),
    (
        "upstream with a tab, second in a list",
        "listen: tcp:8080\nroutes:\n  /api/:\n    proxy:\n"
        "      - http://127.0.0.1:9001/\n"
        '      - "https://127.0.0.1:9002/\\t"\n',
        f"6: routes['/api/'].proxy[1]: '\\t' at position 23 {NOT_IN_URL}",
    ),
    (
        "upstream with DEL",
        'listen: tcp:8080\nroutes:\n  /api/: {proxy: "http://127.0.0.1\\x7f/"}\n',
        f"3: routes['/api/'].proxy: '\\x7f' at position 16 {NOT_IN_URL}",
    ),
    (
        "upstream with a character outside ASCII",
        "listen: tcp:8080\nroutes:\n  /api/: {proxy: http://127.0.0.1:9000/café/}\n",
        f"3: routes['/api/'].proxy: 'é' at position 25 {NOT_IN_URL}",
    ),
    (
        "UNIX upstream with LF",
        'listen: tcp:8080\nroutes:\n  /api/: {proxy: "unix:/run/a\\nb.sock"}\n',
        "3: routes['/api/'].proxy: '\\n' at position 11 is not allowed in a "
        "socket path (no control characters)",
    ),
]


class ExactProblemTests(SynchronousTestCase):
    """
    Files that once crashed the loader or were accepted get one problem
    each, whose whole text is known.
    """

    def test_each_case(self) -> None:
        """
        Every case of the table gives exactly its one problem, word for word.
        """
        root = make_site(self)
        chdir(self, root)
        cert, key = _self_signed(root)
        failures = []
        for name, text, expected in EXACT_PROBLEM_CASES:
            text = text.replace("{cert}", cert).replace("{key}", key)
            path = write_routes(root, text.replace("{root}", str(root)))
            wanted = [f"{path}:{expected.replace('{root}', str(root))}"]
            try:
                load_config(path)
            except ConfigError as e:
                found = [str(p) for p in e.problems]
            else:
                found = ["(accepted)"]
            if found != wanted:
                failures.append(f"{name}:\n    got      {found}\n    expected {wanted}")
        if failures:
            self.fail("\n".join(failures))

    def test_every_bad_listen_string_at_once(self) -> None:
        """
        Bad ports, a missing folder and a repeated string in one C{listen}
        list are all reported, each on its item's line.
        """
        root = make_site(self)
        chdir(self, root)
        path = write_routes(
            root,
            """
            listen:
              - tcp:70000
              - unix:/no/such/dir/s.sock
              - tcp:8080
              - tcp:8080
              - tcp:notaport
            routes: {/: {static: pub}}
            """,
        )
        self.assertEqual(
            [(p.line, p.where) for p in problems_of(self, path)],
            [
                (2, "listen[0]"),
                (3, "listen[1]"),
                (5, "listen[3]"),
                (6, "listen[4]"),
            ],
        )

    def test_port_and_twisted_problem_together(self) -> None:
        """
        An C{ssl:} string with a bad port and a missing key file gets both
        problems, not one per run.
        """
        root = make_site(self)
        chdir(self, root)
        path = write_routes(
            root, "listen: ssl:70000:privateKey=nokey.pem\nroutes: {/: {static: pub}}\n"
        )
        problems = problems_of(self, path)
        self.assertEqual(len(problems), 2, "\n".join(map(str, problems)))
        self.assertEqual(problems[0].message, "port must be 1-65535, got 70000")
        self.assertIn("nokey.pem", problems[1].message)

    def test_billion_laughs_duplicate(self) -> None:
        """
        A duplicate key after aliases nested to 10**7 values is reported at
        once: the search for its place visits each shared value once.
        """
        root = make_site(self)
        levels = ["a0: &a0 [" + ", ".join(["{x: 1}"] * 10) + "]"]
        for i in range(1, 8):
            levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
        path = write_routes(
            root,
            "listen: tcp:8080\n"
            + "\n".join(levels)
            + "\nroutes: {/: {static: pub}, /: {static: pub}}\n",
        )
        problems = problems_of(self, path)
        self.assertEqual(
            [(p.line, p.where) for p in problems if "given twice" in p.message],
            [(10, "routes['/']")],
        )


class ValidNeighbourTests(SynchronousTestCase):
    """
    Values next to the refused ones still load.
    """

    def test_listen_and_upstreams(self) -> None:
        """
        Ports 1 and 65535, one port on two interfaces, TLS, PROXY protocol,
        sockets in existing folders, percent-encoded upstream paths and
        socket paths with spaces are all accepted as written.
        """
        root = make_site(self)
        chdir(self, root)
        cert, key = _self_signed(root)
        listen = (
            "tcp:1",
            "tcp:65535",
            "tcp:8080",
            "tcp:8080:interface=127.0.0.1",
            r"tcp6:8080:interface=\:\:1",
            f"ssl:8443:privateKey={key}:certKey={cert}",
            "haproxy:tcp:8444",
            "unix:pub/txrouter.sock",
            f"unix:{root}/hello/txrouter.sock",
        )
        upstreams = (
            "http://127.0.0.1:9000/a%20b/",
            "https://127.0.0.1:9001/~x/",
            f"unix:{root}/my app.sock",
        )
        path = write_routes(
            root,
            "listen:\n"
            + "".join(f"  - '{item}'\n" for item in listen)
            # haproxy:tcp needs the balancer's address listed.
            + "trusted_proxies: [127.0.0.1]\n"
            + "routes:\n  /api/:\n    proxy:\n"
            + "".join(f"      - '{item}'\n" for item in upstreams),
        )
        config = load_config(path)
        self.assertEqual(config.listen, listen)
        self.assertEqual(config.tables[""]["/api/"].upstreams, upstreams)  # type: ignore[union-attr]


# (endpoint string, its positional and named arguments).
SPLIT_CASES: list[tuple[str, list[str], dict[str, str]]] = [
    ("tcp:8080", ["tcp", "8080"], {}),
    (r"tcp:8080:interface=\:\:1", ["tcp", "8080"], {"interface": "::1"}),
    (
        "unix:address=/run/a.sock:mode=600",
        ["unix"],
        {"address": "/run/a.sock", "mode": "600"},
    ),
    ("x:a=b=c", ["x"], {"a": "b=c"}),
    (r"x:a\=b", ["x", "a=b"], {}),
    (r"unix:/a\:b", ["unix", "/a:b"], {}),
    ("x:\\\\", ["x", "\\"], {}),
    ("tcp:", ["tcp", ""], {}),
    ("", [""], {}),
    ("port=80", [], {"port": "80"}),
]

# (endpoint string, what it binds). "{cwd}" stands for the working folder.
ADDRESS_CASES: list[tuple[str, ListenAddress]] = [
    ("tcp:8080", ListenAddress("tcp", "0.0.0.0", 8080)),
    ("tcp:port=8080:backlog=5", ListenAddress("tcp", "0.0.0.0", 8080)),
    ("tcp:8080:interface=0.0.0.0", ListenAddress("tcp", "0.0.0.0", 8080)),
    ("tcp:8080:127.0.0.1", ListenAddress("tcp", "127.0.0.1", 8080)),
    (r"tcp:8080:interface=\:\:1", ListenAddress("tcp", "::1", 8080)),
    ("tcp:8080:interface=LocalHost", ListenAddress("tcp", "localhost", 8080)),
    ("tcp6:8080", ListenAddress("tcp", "::", 8080)),
    (r"tcp6:8080:5:0\:0\:0\:0\:0\:0\:0\:1", ListenAddress("tcp", "::1", 8080)),
    ("ssl:8443:privateKey=k.pem", ListenAddress("tcp", "0.0.0.0", 8443)),
    ("ssl:port=8443:interface=127.0.0.1", ListenAddress("tcp", "127.0.0.1", 8443)),
    ("tls:/certs", ListenAddress("tcp", "::", 443)),
    ("tls:/certs:8443", ListenAddress("tcp", "::", 8443)),
    ("tls:path=/certs:port=70000", ListenAddress("tcp", "::", 70000)),
    ("haproxy:tcp:8080", ListenAddress("tcp", "0.0.0.0", 8080)),
    ("HAProxy:tcp:port=70000", ListenAddress("tcp", "0.0.0.0", 70000)),
    ("haproxy:haproxy:tcp6:1", ListenAddress("tcp", "::", 1)),
    ("tcp:-1", ListenAddress("tcp", "0.0.0.0", -1)),
    ("tcp:80a", ListenAddress("tcp", "0.0.0.0", None)),
    ("tcp", ListenAddress("tcp", "0.0.0.0", None)),
    ("unix:/run/a.sock", ListenAddress("unix", "/run/a.sock")),
    ("unix:address=/run/a.sock:mode=600", ListenAddress("unix", "/run/a.sock")),
    ("unix:/run/../run//a.sock", ListenAddress("unix", "/run/a.sock")),
    ("unix:run/a.sock", ListenAddress("unix", "{cwd}/run/a.sock")),
    ("haproxy:unix:/run/a.sock", ListenAddress("unix", "/run/a.sock")),
    ("unix:\0abstract", ListenAddress("unix", "\0abstract")),
]


class EndpointStringTests(SynchronousTestCase):
    """
    L{split_endpoint} reads endpoint strings as Twisted does, and
    L{listen_address} tells what they bind.
    """

    def test_split(self) -> None:
        """
        Colons separate, the first C{=} names, a backslash escapes.
        """
        for text, args, named in SPLIT_CASES:
            self.assertEqual(split_endpoint(text), (args, named), text)

    def test_lone_backslash(self) -> None:
        """
        A string ending in a lone backslash is refused.
        """
        self.assertRaises(ValueError, split_endpoint, "tcp:8080\\")

    def test_addresses(self) -> None:
        """
        Every case of the table binds its address: defaults filled in,
        interfaces and paths in one normal form, C{haproxy:} unwrapped.
        """
        cwd = os.getcwd()
        for text, address in ADDRESS_CASES:
            expected = ListenAddress(
                address.family, address.place.replace("{cwd}", cwd), address.port
            )
            self.assertEqual(listen_address(text), expected, text)

    def test_other_types(self) -> None:
        """
        Other endpoint types are the same address when their arguments are,
        named ones in any order.
        """
        first = listen_address("systemd:domain=INET:index=0")
        self.assertEqual(first, listen_address("Systemd:index=0:domain=INET"))
        self.assertNotEqual(first, listen_address("systemd:domain=INET:index=1"))
        self.assertEqual((first.family, first.port), ("systemd", None))


FULL = """
    # Every kind of route, two hosts and every top-level key.
    listen:
      - tcp:8080:interface=127.0.0.1
      - unix:/tmp/txrouter-test.sock
    threads: {min: 4, max: 8}
    drain_timeout: 12.5
    access_log: logs/access.log
    routes:
      /: {django: blog}
      /hello: {wsgi: "hello:application", path: hello}
      /files/: {static: pub, cache: 3600}
      /api/:
        proxy: http://127.0.0.1:9000/v1/
        timeout: 10
        connect_timeout: 2.5
        preserve_host: false
        tls_verify: false
      /lb/: {proxy: ["http://127.0.0.1:9001/", "https://127.0.0.1:9002/"]}
      /sock/: {proxy: ["unix:run/app.sock", "unix:/run/app.sock"]}
      /old/: {redirect: /new/, status: 301}
      /away/: {redirect: "https://example.com/"}
    hosts:
      Shop.Example.com: {routes: {/: {static: pub}}}
      "*.example.org":
        routes:
          /docs: {static: pub, cache: 0}
    """


class ValidFileTests(SynchronousTestCase):
    """
    A valid file becomes typed, frozen objects with normalized values.
    """

    def setUp(self) -> None:
        self.root = make_site(self)
        self.path = write_routes(self.root, FULL)
        self.name = str(self.path)

    def origin(self, line: int, where: str) -> Origin:
        return Origin(self.name, line, where)

    def test_top_level(self) -> None:
        """
        C{listen}, C{threads}, C{drain_timeout} and C{access_log} are read,
        the access log resolved against the routes file's folder.
        """
        config = load_config(self.path)
        self.assertIsInstance(config, Config)
        self.assertEqual(config.path, self.path)
        self.assertEqual(
            config.listen,
            ("tcp:8080:interface=127.0.0.1", "unix:/tmp/txrouter-test.sock"),
        )
        self.assertEqual(config.threads, Threads(min=4, max=8))
        self.assertEqual(config.drain_timeout, 12.5)
        self.assertEqual(config.access_log, str(self.root / "logs" / "access.log"))

    def test_default_host_routes(self) -> None:
        """
        Each kind of route of the default host is built with its options,
        prefixes get their trailing slash and paths are made absolute.
        """
        config = load_config(self.path)
        self.assertEqual(list(config.tables), ["", "shop.example.com", "*.example.org"])
        table = config.tables[""]
        self.assertEqual(
            list(table),
            ["/", "/hello/", "/files/", "/api/", "/lb/", "/sock/", "/old/", "/away/"],
        )
        self.assertEqual(
            table["/"],
            DjangoRoute(
                "/",
                self.origin(9, "routes['/']"),
                self.root / "blog",
                "proj.settings",
                0,
            ),
        )
        self.assertEqual(
            table["/hello/"],
            WsgiRoute(
                "/hello/",
                self.origin(10, "routes['/hello']"),
                "hello:application",
                self.root / "hello",
                0,
            ),
        )
        self.assertEqual(
            table["/files/"],
            StaticRoute(
                "/files/", self.origin(11, "routes['/files/']"), self.root / "pub", 3600
            ),
        )
        self.assertIs(type(table["/files/"].cache), int)  # type: ignore[union-attr]
        self.assertEqual(
            table["/api/"],
            ProxyRoute(
                "/api/",
                self.origin(12, "routes['/api/']"),
                ("http://127.0.0.1:9000/v1/",),
                10.0,
                2.5,
                False,
                False,
            ),
        )
        self.assertEqual(
            table["/sock/"].upstreams,  # type: ignore[union-attr]
            ("unix:" + str(self.root / "run" / "app.sock"), "unix:/run/app.sock"),
        )
        self.assertEqual(
            table["/old/"],
            RedirectRoute("/old/", self.origin(20, "routes['/old/']"), "/new/", 301),
        )

    def test_defaults(self) -> None:
        """
        Options left out take their defaults: proxy timeouts 60 and 5,
        C{preserve_host} and C{tls_verify} true, redirect status 302.
        """
        table = load_config(self.path).tables[""]
        self.assertEqual(
            table["/lb/"],
            ProxyRoute(
                "/lb/",
                self.origin(18, "routes['/lb/']"),
                ("http://127.0.0.1:9001/", "https://127.0.0.1:9002/"),
                60.0,
                5.0,
                True,
                True,
            ),
        )
        self.assertEqual(
            table["/away/"],
            RedirectRoute(
                "/away/",
                self.origin(21, "routes['/away/']"),
                "https://example.com/",
                302,
            ),
        )

    def test_hosts(self) -> None:
        """
        Host tables are keyed by the lower-case name or the C{*.} wildcard;
        a static route without C{cache} has none.
        """
        config = load_config(self.path)
        self.assertEqual(
            config.tables["shop.example.com"],
            {
                "/": StaticRoute(
                    "/",
                    self.origin(23, "hosts['Shop.Example.com'].routes['/']"),
                    self.root / "pub",
                    None,
                )
            },
        )
        self.assertEqual(
            config.tables["*.example.org"],
            {
                "/docs/": StaticRoute(
                    "/docs/",
                    self.origin(26, "hosts['*.example.org'].routes['/docs']"),
                    self.root / "pub",
                    0,
                )
            },
        )

    def test_routes_in_file_order(self) -> None:
        """
        C{Config.routes} lists every route of every host in file order.
        """
        config = load_config(self.path)
        self.assertEqual(
            [(r.origin.line, r.prefix) for r in config.routes()],
            [
                (9, "/"),
                (10, "/hello/"),
                (11, "/files/"),
                (12, "/api/"),
                (18, "/lb/"),
                (19, "/sock/"),
                (20, "/old/"),
                (21, "/away/"),
                (23, "/"),
                (26, "/docs/"),
            ],
        )

    def test_frozen(self) -> None:
        """
        The config and its routes cannot be changed after loading.
        """
        config = load_config(self.path)
        self.assertRaises(AttributeError, setattr, config, "drain_timeout", 1.0)
        route = config.tables[""]["/"]
        self.assertRaises(AttributeError, setattr, route, "prefix", "/x/")


class DefaultsTests(SynchronousTestCase):
    """
    A minimal file takes the documented defaults.
    """

    def test_minimal(self) -> None:
        """
        One listen string and one route: threads 2/20, drain_timeout 30, no
        access log, no cache.
        """
        root = make_site(self)
        path = write_routes(
            root,
            """
            listen: tcp:8080
            routes:
              /: {static: pub}
            """,
        )
        config = load_config(path)
        self.assertEqual(config.listen, ("tcp:8080",))
        self.assertEqual(config.threads, Threads(min=2, max=8))
        self.assertEqual(config.drain_timeout, 30.0)
        self.assertIsNone(config.access_log)
        self.assertEqual(
            config.tables,
            {
                "": {
                    "/": StaticRoute(
                        "/", Origin(str(path), 3, "routes['/']"), root / "pub", None
                    )
                }
            },
        )

    def test_access_log_dash(self) -> None:
        """
        C{access_log: "-"} is kept as C{"-"} (twistd's log), not made a path.
        """
        root = make_site(self)
        path = write_routes(
            root,
            """
            listen: tcp:8080
            access_log: "-"
            routes:
              /: {static: pub}
            """,
        )
        self.assertEqual(load_config(path).access_log, "-")

    def test_one_django_project_twice(self) -> None:
        """
        One Django project mounted at two prefixes is still one project: both
        routes default to C{workers: 0}, with the settings from manage.py.
        """
        root = make_site(self)
        path = write_routes(
            root,
            """
            listen: tcp:8080
            routes:
              /: {django: blog}
              /blog/: {django: ./blog/}
            """,
        )
        table = load_config(path).tables[""]
        for prefix in ("/", "/blog/"):
            route = table[prefix]
            assert isinstance(route, DjangoRoute)
            self.assertEqual(
                (route.project, route.settings, route.workers),
                (root / "blog", "proj.settings", 0),
            )

    def test_explicit_settings(self) -> None:
        """
        C{settings:} wins over manage.py's default and lets a project folder
        without manage.py be routed.
        """
        root = make_site(self)
        path = write_routes(
            root,
            """
            listen: tcp:8080
            routes:
              /: {django: bare, settings: bare.settings}
            """,
        )
        route = load_config(path).tables[""]["/"]
        assert isinstance(route, DjangoRoute)
        self.assertEqual(
            (route.project, route.settings), (root / "bare", "bare.settings")
        )


class RelativePathTests(SynchronousTestCase):
    """
    Relative paths start at the routes file's folder, whatever the cwd.
    """

    def test_not_the_cwd(self) -> None:
        """
        With the cwd elsewhere (holding its own C{pub}), C{pub} still means
        the folder beside the routes file.
        """
        root = make_site(self)
        elsewhere = make_site(self)
        path = write_routes(
            root,
            """
            listen: tcp:8080
            access_log: logs/access.log
            routes:
              /: {static: pub}
              /hello/: {wsgi: "hello:application", path: hello}
            """,
        )
        chdir(self, elsewhere)
        config = load_config(path)
        self.assertEqual(config.tables[""]["/"].root, root / "pub")  # type: ignore[union-attr]
        self.assertEqual(config.tables[""]["/hello/"].path, root / "hello")  # type: ignore[union-attr]
        self.assertEqual(config.access_log, str(root / "logs" / "access.log"))

    def test_relative_file_name(self) -> None:
        """
        A routes file named relatively is read from its own folder, and
        problems name it as the user wrote it.
        """
        root = make_site(self)
        write_routes(
            root,
            """
            listen: tcp:8080
            routes:
              /: {static: ../pub}
              /x/: {static: pub}
            """,
            name="conf/routes.yaml",
        )
        chdir(self, root)
        [problem] = problems_of(self, Path("conf/routes.yaml"))
        self.assertEqual(
            str(problem),
            f"conf/routes.yaml:4: routes['/x/'].static: '{root}/conf/pub' is not a "
            f"folder (relative paths start at '{root}/conf', the routes file's "
            "folder)",
        )


class LoadYamlTests(SynchronousTestCase):
    """
    L{load_yaml} keeps the line of every key and item and finds duplicates.
    """

    def test_lines(self) -> None:
        """
        Keys of nested mappings and items of lists know their 1-based lines.
        """
        data, duplicates = load_yaml(
            "a: 1\nb:\n  c: 2\n  d: {e: 3}\nitems:\n  - x\n  - y: 4\n"
        )
        self.assertEqual(duplicates, [])
        self.assertEqual(
            data, {"a": 1, "b": {"c": 2, "d": {"e": 3}}, "items": ["x", {"y": 4}]}
        )
        self.assertIsInstance(data, LocatedDict)
        self.assertEqual(data.line, 1)
        self.assertEqual([data.line_of(k) for k in ("a", "b", "items")], [1, 2, 5])
        self.assertEqual(data["b"].line_of("c"), 3)
        self.assertEqual(data["b"]["d"].line_of("e"), 4)
        items = data["items"]
        self.assertIsInstance(items, LocatedList)
        self.assertEqual(items.line, 6)
        self.assertEqual([items.line_of(0), items.line_of(1)], [6, 7])
        self.assertEqual(items[1].line_of("y"), 7)

    def test_line_of_missing_key(self) -> None:
        """
        Asking for a key that is absent gives the mapping's own line.
        """
        data, _ = load_yaml("x: 1\ny:\n  z: 2\n")
        self.assertEqual(data["y"].line_of("absent"), 3)

    def test_duplicates(self) -> None:
        """
        A key given twice is reported with both lines, at the top level, in
        nested mappings and in mappings inside lists; the last value wins.
        """
        data, duplicates = load_yaml(
            "a: 1\nb:\n  c: 1\n  d: {e: 1, e: 2}\n  c: 2\nl:\n  - {f: 1, f: 2}\na: 3\n"
        )
        self.assertEqual(
            sorted((d.key, d.first_line, d.line) for d in duplicates),
            [("a", 1, 8), ("c", 3, 5), ("e", 4, 4), ("f", 7, 7)],
        )
        self.assertEqual(data["a"], 3)
        self.assertEqual(data["b"]["c"], 2)

    def test_merge_keys(self) -> None:
        """
        C{<<: *base} merges as YAML says and is not reported as a duplicate,
        even when the mapping overrides a merged key.
        """
        text = (
            "base: &base\n"
            "  cache: 5\n"
            "  static: pub\n"
            "more: &more\n"
            "  cache: 7\n"
            "one:\n"
            "  <<: *base\n"
            "  static: other\n"
            "two:\n"
            "  <<: [*base, *more]\n"
        )
        data, duplicates = load_yaml(text)
        self.assertEqual(duplicates, [])
        self.assertEqual(data["one"], {"cache": 5, "static": "other"})
        # Several merged mappings sharing a key: whatever PyYAML's own safe
        # loader keeps, we keep too.
        self.assertEqual(data, yaml.safe_load(text))
        self.assertEqual(data["two"]["static"], "pub")
        self.assertNotIn("<<", data["one"])
        self.assertEqual(data["one"].line_of("cache"), 2)

    def test_merge_override_line(self) -> None:
        """
        A key that overrides a merged one reports its own line, where its
        value is written, not the line of the value it replaced.
        """
        data, _ = load_yaml("base: &base\n  cache: 5\none:\n  <<: *base\n  cache: -1\n")
        self.assertEqual(data["one"]["cache"], -1)
        self.assertEqual(data["one"].line_of("cache"), 5)

    def test_safe(self) -> None:
        """
        Python tags are refused by the loader itself.
        """
        self.assertRaises(
            yaml.YAMLError, load_yaml, "a: !!python/object/apply:os.getcwd []\n"
        )

    def test_depth_limit(self) -> None:
        """
        C{MAX_DEPTH} (100) levels of lists load; one more is L{TooDeep}, on
        the line where that level begins.
        """
        self.assertEqual(MAX_DEPTH, 100)
        data, _ = load_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH)
        for _ in range(MAX_DEPTH - 1):
            [data] = data
        self.assertEqual(data, [])
        self.assertRaises(TooDeep, load_yaml, "[" * 101 + "]" * 101)
        text = "a:\n" + "".join(" " * i + "-\n" for i in range(1, MAX_DEPTH + 1))
        error = self.assertRaises(TooDeep, load_yaml, text)
        self.assertEqual(error.line, MAX_DEPTH + 1)

    def test_alias_depth(self) -> None:
        """
        An alias counts the levels it repeats: 50 levels used inside 50 load,
        inside 51 they are refused, on the alias's line.
        """
        deep = "a: &a " + "[" * 50 + "]" * 50 + "\n"
        data, _ = load_yaml(deep + "b: " + "[" * 49 + "*a" + "]" * 49 + "\n")
        inner = data["b"]
        for _ in range(48):
            inner = inner[0]
        self.assertIs(inner[0], data["a"])
        error = self.assertRaises(
            TooDeep, load_yaml, deep + "b: " + "[" * 50 + "*a" + "]" * 50 + "\n"
        )
        self.assertEqual(error.line, 2)

    def test_recursive_alias(self) -> None:
        """
        A list that contains itself is a YAML error, not a C{RecursionError}.
        """
        error = self.assertRaises(yaml.YAMLError, load_yaml, "a: &a [*a]\n")
        self.assertNotIsInstance(error, TooDeep)


class DefaultSettingsModuleTests(SynchronousTestCase):
    """
    L{default_settings_module} reads manage.py without running it.
    """

    def setUp(self) -> None:
        self.project = Path(tempfile.mkdtemp(prefix="txrouter-project-"))
        self.addCleanup(shutil.rmtree, self.project, ignore_errors=True)

    def manage(self, text: str) -> None:
        (self.project / "manage.py").write_text(text)

    def test_found(self) -> None:
        """
        The C{os.environ.setdefault} call inside C{main()} gives the module.
        """
        self.manage(MANAGE_PY.replace("{settings}", "proj.settings"))
        self.assertEqual(default_settings_module(self.project), "proj.settings")

    def test_no_manage_py(self) -> None:
        """
        A folder without manage.py has no default.
        """
        self.assertIsNone(default_settings_module(self.project))

    def test_syntax_error(self) -> None:
        """
        A manage.py that is not valid Python has no default (and no error).
        """
        self.manage('os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings"\n')
        self.assertIsNone(default_settings_module(self.project))

    def test_no_call(self) -> None:
        """
        A manage.py that assigns the variable, or sets another default, has
        no default for us.
        """
        self.manage(
            "import os\n"
            'os.environ["DJANGO_SETTINGS_MODULE"] = "proj.settings"\n'
            'os.environ.setdefault("OTHER", "proj.settings")\n'
        )
        self.assertIsNone(default_settings_module(self.project))

    def test_not_run(self) -> None:
        """
        Reading manage.py does not execute it.
        """
        marker = self.project / "ran"
        self.manage(
            "import pathlib, os\n"
            f"pathlib.Path({str(marker)!r}).touch()\n"
            'os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")\n'
        )
        self.assertEqual(default_settings_module(self.project), "proj.settings")
        self.assertFalse(marker.exists())


class LimitsTests(SynchronousTestCase):
    """
    C{limits:} and a route's own C{max_body}.
    """

    def test_defaults(self) -> None:
        """
        Without C{limits:}, the documented defaults apply.
        """
        root = make_site(self)
        config = load_config(
            write_routes(root, "listen: tcp:8080\nroutes: {/: {static: pub}}\n")
        )
        self.assertEqual(config.limits, Limits())
        self.assertEqual(config.limits.max_body, 10 * 1024 * 1024)

    def test_values(self) -> None:
        """
        Sizes take a number of bytes or a unit (powers of 1024); a route of
        an application or proxy kind has its own C{max_body}.
        """
        root = make_site(self)
        config = load_config(
            write_routes(
                root,
                """
                listen: tcp:8080
                limits:
                  max_body: 50M
                  max_header: 16KiB
                  max_head: 64k
                  head_timeout: 5
                  max_connections: 200
                  max_streams: 64
                routes:
                  /: {static: pub}
                  /up/: {wsgi: "hello:app", path: hello, max_body: 1G}
                  /api/: {proxy: "http://127.0.0.1:9000/", max_body: 1024}
                """,
            )
        )
        limits = config.limits
        self.assertEqual(
            (limits.max_body, limits.max_header, limits.max_head),
            (50 * 1024**2, 16 * 1024, 64 * 1024),
        )
        self.assertEqual((limits.head_timeout, limits.max_connections), (5.0, 200))
        self.assertEqual(limits.max_streams, 64)
        self.assertEqual(config.tables[""]["/up/"].max_body, 1024**3)  # type: ignore[attr-defined]
        self.assertEqual(config.tables[""]["/api/"].max_body, 1024)  # type: ignore[attr-defined]

    def test_problems(self) -> None:
        """
        Unknown keys, bad sizes and numbers, a request line larger than the
        head, and C{max_body} on a static route are each reported.
        """
        root = make_site(self)
        path = write_routes(
            root,
            """
            listen: tcp:8080
            limits:
              max_body: 10 apples
              max_request_line: 100K
              max_head: 32K
              head_timeout: -1
              speed: fast
            routes:
              /: {static: pub, max_body: 1M}
            """,
        )
        found = {(p.line, p.where): p.message for p in problems_of(self, path)}
        self.assertIn("expected a size in bytes", found[(3, "limits.max_body")])
        self.assertIn("must be >= 0.001", found[(6, "limits.head_timeout")])
        self.assertIn("unknown key", found[(7, "limits.speed")])
        self.assertIn("max_request_line is larger than max_head", found[(3, "limits")])
        self.assertIn(
            "'max_body' is an option of django and wsgi and proxy and asgi routes, "
            "not static",
            found[(9, "routes['/'].max_body")],
        )


class BulkheadOptionTests(SynchronousTestCase):
    """
    A route's C{max_concurrent}, C{queue} and (application kinds) C{timeout}.
    """

    def test_values_and_defaults(self) -> None:
        """
        Set values are kept; unset ones are the documented defaults.
        """
        root = make_site(self)
        config = load_config(
            write_routes(
                root,
                """
                listen: tcp:8080
                routes:
                  /up/: {wsgi: "hello:app", path: hello, max_concurrent: 3,
                         queue: 0, timeout: 2.5}
                  /api/: {proxy: "http://127.0.0.1:9000/", queue: 10}
                  /other/: {wsgi: "hello:app", path: hello}
                """,
            )
        )
        up, api, other = (config.tables[""][p] for p in ("/up/", "/api/", "/other/"))
        self.assertEqual(up.admission, Admission(3, 0))  # type: ignore[attr-defined]
        self.assertEqual(up.timeout, 2.5)  # type: ignore[attr-defined]
        self.assertEqual(api.admission, Admission(None, 10))  # type: ignore[attr-defined]
        self.assertEqual(other.admission, Admission(None, 1000))  # type: ignore[attr-defined]
        self.assertEqual(other.timeout, 60.0)  # type: ignore[attr-defined]

    def test_left_empty(self) -> None:
        """
        An option written with no value (YAML's null) is not given, as for
        every other option: C{max_concurrent:} and C{max_body:} left empty
        are the defaults, not a limit of 1 (nor C{cache:} a max-age of 0).
        """
        root = make_site(self)
        config = load_config(
            write_routes(
                root,
                """
                listen: tcp:8080
                routes:
                  /up/:
                    wsgi: "hello:app"
                    path: hello
                    max_concurrent:
                    max_body:
                  /pub/:
                    static: pub
                    cache:
                """,
            )
        )
        up, pub = (config.tables[""][p] for p in ("/up/", "/pub/"))
        self.assertEqual(up.admission, Admission(None, 1000))  # type: ignore[attr-defined]
        self.assertIsNone(up.max_body)  # type: ignore[attr-defined]
        self.assertIsNone(pub.cache)  # type: ignore[attr-defined]

    def test_problems(self) -> None:
        """
        A zero or fractional C{max_concurrent}, a negative C{queue}, a zero
        C{timeout} and C{queue} on a static route are each reported.
        """
        root = make_site(self)
        path = write_routes(
            root,
            """
            listen: tcp:8080
            routes:
              /a/: {wsgi: "hello:app", path: hello, max_concurrent: 0}
              /b/: {wsgi: "hello:app", path: hello, max_concurrent: 1.5}
              /c/: {proxy: "http://127.0.0.1:9000/", queue: -1}
              /d/: {wsgi: "hello:app", path: hello, timeout: 0}
              /: {static: pub, queue: 5}
            """,
        )
        found = {(p.line, p.where): p.message for p in problems_of(self, path)}
        self.assertIn("must be >= 1", found[(3, "routes['/a/'].max_concurrent")])
        self.assertIn(
            "expected a whole number", found[(4, "routes['/b/'].max_concurrent")]
        )
        self.assertIn("must be >= 0", found[(5, "routes['/c/'].queue")])
        self.assertIn("must be >= 0.001", found[(6, "routes['/d/'].timeout")])
        self.assertIn("not static", found[(7, "routes['/'].queue")])
