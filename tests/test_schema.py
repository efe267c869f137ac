"""
Tests of L{txrouter.schema}: the JSON Schema of routes.yaml is valid draft
2020-12, describes every key, and agrees with the config reader
(L{txrouter.config.load_config}), which is the judge:

  - every routes file of the repository, and every routes file written in
    the tests (found in their source), that the reader accepts is valid;
  - a file the reader refuses for a structural reason (unknown key, wrong
    type, missing key, value outside its pattern, range or enum) is
    invalid, and one refused only for what a schema cannot know (a missing
    folder, a bad endpoint string, a prefix given twice) is valid;
  - value by value, for sizes, prefixes, host names, upstreams, redirect
    targets and module names, both accept the same;
  - every default in the schema is the value the reader gives a key left
    out.
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from twisted.trial.unittest import SynchronousTestCase

from tests.test_config import MANAGE_PY, SINGLE_PROBLEM_CASES, chdir, make_site
from txrouter.config import _TOP_KEYS, load_config
from txrouter.errors import ConfigError
from txrouter.kinds import KINDS
from txrouter.limits import Limits
from txrouter.schema import DRAFT, routes_schema

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent

#: A problem of the reader that the schema must see too: the value's type,
#: pattern, range or enum, a key unknown or missing. (A NaN is a float
#: that JSON cannot hold, so the schema's minimum says nothing of it.)
STRUCTURAL = re.compile(
    r"unknown key|is an option of \w+ routes|^has both|^no route kind|^missing"
    r"|^no routes:|^expected|^must be >= (?!.*got nan)|^not a variable name"
    r"|^a prefix|^not a valid host name|is not allowed in (an upstream|a socket)"
)

#: The cases of tests/test_config.py's SINGLE_PROBLEM_CASES that the schema
#: must refuse: each is wrong in its structure.
STRUCTURAL_CASES = {
    "unknown top-level key",
    "unknown route key",
    "option of another kind",
    "two kind keys",
    "no kind key",
    "listen missing",
    "listen of the wrong type",
    "threads of the wrong type",
    "threads.max not a whole number",
    "negative workers",
    "boolean where a number is expected",
    "wsgi spec without a colon",
    "redirect status that is not a redirect",
    "redirect target without a leading slash",
    "proxy upstream with an unsupported scheme",
    "proxy upstream without a host, second in a list",
    "host name with a port",
    "host name with a wildcard inside",
    "empty file",
    "top level is a list",
}

#: The other cases, which only the reader can refuse: the schema accepts
#: them (or, for the YAML error, cannot even read them).
SEMANTIC_CASES = {
    "same prefix with and without its slash": "prefixes are normalized",
    "missing directory": "the file system",
    "endpoint with a bad port": "Twisted's endpoint parser",
    "endpoint of an unknown type, second in a list": "Twisted's endpoint parser",
    "threads min greater than max": "compares two values",
    "same host twice, differing only in case": "names are normalized",
    "django project without manage.py or settings": "reads manage.py",
    "two Django projects both in the router process": "looks at every route",
    "access log in a folder that does not exist": "the file system",
    "YAML syntax error": "not YAML",
}


def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(routes_schema())


def site(case: SynchronousTestCase) -> Path:
    """
    The folder of tests/test_config.py's routes files, with what the other
    tests' files name too (C{1} stands for every value an f-string puts in),
    as the working directory.
    """
    root = make_site(case)
    for name in ("apps", "run", "1"):
        (root / name).mkdir()
    (root / "proj").mkdir()
    (root / "proj" / "manage.py").write_text(
        MANAGE_PY.replace("{settings}", "proj.settings")
    )
    chdir(case, root)
    return root


def _text_of(node: ast.AST) -> str | None:
    """
    The string a literal (or a sum of literals) in a test's source makes;
    each value an f-string puts in is C{1}.
    """
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) else "1" for v in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text_of(node.left), _text_of(node.right)
        if left is not None and right is not None:
            return left + right
    return None


def routes_files_in_tests() -> Iterator[tuple[str, str]]:
    """
    Every routes file written in the tests' source (this module's aside),
    dedented as the tests write them, with the file it is found in.
    """
    seen = set()
    for path in sorted((REPO / "tests").glob("*.py")):
        if path.name == Path(__file__).name:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # The literal pieces of an f-string are not files of their own.
        pieces = {
            id(piece)
            for node in ast.walk(tree)
            if isinstance(node, ast.JoinedStr)
            for piece in node.values
        }
        for node in ast.walk(tree):
            if id(node) in pieces:
                continue
            text = _text_of(node)
            if text is None or "listen" not in text:
                continue
            if "routes" not in text and "hosts" not in text:
                continue
            text = textwrap.dedent(text).lstrip("\n")
            if text not in seen:
                seen.add(text)
                yield path.name, text


def _judge(root: Path, text: str) -> tuple[Any, list[str] | None]:
    """
    Read C{text} as YAML and as a routes file in C{root}.

    @return: the YAML data, and the reader's problems (L{None}: accepted).
    """
    path = root / "routes.yaml"
    path.write_text(text.replace("{root}", str(root)), encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as e:
        return yaml.safe_load(path.read_text()), [p.message for p in e.problems]
    return yaml.safe_load(path.read_text()), None


class SchemaTests(SynchronousTestCase):
    """
    The schema itself: valid, complete, described.
    """

    def test_valid(self) -> None:
        """
        It is a valid draft 2020-12 schema, and plain JSON.
        """
        schema = routes_schema()
        self.assertEqual(schema["$schema"], DRAFT)
        jsonschema.Draft202012Validator.check_schema(schema)
        self.assertEqual(json.loads(json.dumps(schema)), schema)

    def test_keys_are_the_readers(self) -> None:
        """
        The schema names exactly the keys the reader reads: top-level keys,
        each kind's key and options, the limits.
        """
        schema = routes_schema()
        self.assertEqual(list(schema["properties"]), list(_TOP_KEYS))
        for name, kind in KINDS.items():
            self.assertEqual(
                list(schema["$defs"][name]["properties"]), [name, *kind.options]
            )
        self.assertEqual(
            list(schema["$defs"]["limits"]["properties"]),
            [field.name for field in fields(Limits)],
        )

    def test_described(self) -> None:
        """
        Every key has a description, for editors to show.
        """
        schema = routes_schema()
        places = [("", schema["properties"])]
        places += [
            (name, schema["$defs"][name]["properties"]) for name in (*KINDS, "limits")
        ]
        places.append(("threads", schema["properties"]["threads"]["properties"]))
        for place, properties in places:
            for key, value in properties.items():
                description = value.get("description") or schema["$defs"].get(
                    key, {}
                ).get("description")
                self.assertTrue(description, f"{place}.{key} has no description")


#: The keys whose schema has no default, and why: the reader's default is
#: computed, absent, or the key is required.
NO_DEFAULT = {
    "listen": "required",
    "access_log": "absent: no access log",
    "runtime_dir": "absent: a new temporary folder",
    "routes": "a table",
    "hosts": "tables",
    "hsts": "absent: no Strict-Transport-Security header",
    "acme": "absent: no certificates obtained",
    "admin": "computed from the file's path",
    "limits": "its keys have theirs",
    "django": "required",
    "settings": "read from manage.py",
    "workers": "django: 0 or 1 by the number of projects",
    "max_concurrent": "computed from the pool or the workers",
    "max_body": "limits.max_body",
    "wsgi": "required",
    "path": "absent: nothing added to sys.path",
    "static": "required",
    "cache": "absent: no Cache-Control",
    "proxy": "required",
    "redirect": "required",
}


class DefaultsTests(SynchronousTestCase):
    """
    Every default in the schema is what the reader gives a key left out.
    """

    MINIMAL = {
        "django": "{django: blog}",
        "wsgi": '{wsgi: "hello:application"}',
        "static": "{static: pub}",
        "proxy": '{proxy: "http://127.0.0.1:9000/"}',
        "redirect": "{redirect: /new/}",
    }

    def read(self, route: Any, key: str) -> Any:
        """
        What the reader made of C{key} for C{route}, as the schema says it.
        """
        if key == "queue":
            return route.admission.queue
        if key == "threads":
            return asdict(route.threads)
        if key == "env":
            return dict(route.env)
        if key == "upgrade":
            return list(route.upgrade)
        return getattr(route, key)

    def test_routes(self) -> None:
        """
        Each kind's options with a default, on a route that sets none.
        """
        root = site(self)
        schema = routes_schema()
        checked = 0
        for name, spec in self.MINIMAL.items():
            path = root / "routes.yaml"
            path.write_text(f"listen: tcp:8080\nroutes:\n  /: {spec}\n")
            route = load_config(path).tables[""]["/"]
            for key, option in schema["$defs"][name]["properties"].items():
                if "default" not in option:
                    self.assertIn(key, NO_DEFAULT, f"{name}.{key} has no default")
                    continue
                checked += 1
                self.assertEqual(
                    self.read(route, key), option["default"], f"{name}.{key}"
                )
        self.assertGreaterEqual(checked, 15)

    def test_top_level(self) -> None:
        """
        The top-level keys and the limits with a default.
        """
        root = site(self)
        path = root / "routes.yaml"
        path.write_text("listen: tcp:8080\nroutes: {/: {static: pub}}\n")
        config = load_config(path)
        schema = routes_schema()
        read = {
            "threads": asdict(config.threads),
            "drain_timeout": config.drain_timeout,
            "access_log_format": config.access_log_format,
            "trusted_proxies": list(config.trusted_proxies),
        }
        for key, option in schema["properties"].items():
            if "default" in option:
                self.assertEqual(read[key], option["default"], key)
            else:
                self.assertIn(key, NO_DEFAULT, f"{key} has no default")
        limits = schema["$defs"]["limits"]["properties"]
        for key, value in asdict(config.limits).items():
            self.assertEqual(value, limits[key]["default"], f"limits.{key}")


class AgreementTests(SynchronousTestCase):
    """
    The schema and the reader judge the same files alike.
    """

    def test_repository_files(self) -> None:
        """
        The repository's routes files (routes.yaml, and any other YAML
        outside the virtual environment) are accepted by both.
        """
        files = [
            path
            for pattern in ("*.yaml", "*.yml")
            for path in REPO.rglob(pattern)
            if not {".venv", ".git", "node_modules"} & set(path.parts)
        ]
        self.assertIn(REPO / "routes.yaml", files)
        for path in files:
            load_config(path)
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            errors = [e.message for e in validator().iter_errors(data)]
            self.assertEqual(errors, [], str(path))

    def test_files_in_tests(self) -> None:
        """
        Every routes file written in the tests: accepted by the reader, it
        is valid; refused for a structural problem, it is invalid; refused
        only for others, it is valid.
        """
        root = site(self)
        check = validator()
        counts = {"accepted": 0, "structural": 0, "other": 0}
        failures = []
        for name, text in routes_files_in_tests():
            try:
                data, problems = _judge(root, text)
            except (yaml.YAMLError, RecursionError):
                continue  # not YAML: nothing to validate
            valid = check.is_valid(data)
            if problems is None:
                kind, wanted = "accepted", True
            elif any(STRUCTURAL.search(p) for p in problems):
                kind, wanted = "structural", False
            else:
                kind, wanted = "other", True
            counts[kind] += 1
            if valid != wanted:
                failures.append(f"{name}: {kind} {problems}, valid={valid}:\n{text}")
        self.assertEqual(failures, [], "\n\n".join(failures))
        # The search finds what it should: tests/test_config.py alone has
        # dozens of files.
        self.assertGreaterEqual(counts["accepted"], 15, counts)
        self.assertGreaterEqual(counts["structural"], 40, counts)
        self.assertGreaterEqual(counts["other"], 25, counts)

    def test_single_problem_cases(self) -> None:
        """
        Each case of tests/test_config.py's SINGLE_PROBLEM_CASES is either
        structural, and invalid, or only the reader's to refuse, and valid.
        """
        root = site(self)
        check = validator()
        names = {case[0] for case in SINGLE_PROBLEM_CASES}
        self.assertEqual(names, STRUCTURAL_CASES | set(SEMANTIC_CASES))
        for name, text, *_ in SINGLE_PROBLEM_CASES:
            try:
                data, problems = _judge(root, textwrap.dedent(text).lstrip("\n"))
            except yaml.YAMLError:
                self.assertEqual(SEMANTIC_CASES.get(name), "not YAML", name)
                continue
            self.assertIsNotNone(problems, name)
            self.assertEqual(check.is_valid(data), name not in STRUCTURAL_CASES, name)


# (template, values the reader and the schema both accept, values both
# refuse); "V" in a template is replaced by each value, as YAML.
VALUE_CASES: dict[str, tuple[str, list[Any], list[Any]]] = {
    "size": (
        "limits: {max_body: V}",
        [1, 10485760, "10M", "10 MiB", "512k", "1g", "10MB", "1kib", " 10M ", "007"],
        [0, -1, True, "0", "0K", "1.5M", "10T", "M", "", "10Mi", "ten", 1.5],
    ),
    "prefix": (
        "routes: {V: {static: pub}}",
        ["/", "/a", "/a/", "/a/b/", "/.well-known/", "/...", "/café/", "/a-b_c~/"],
        ["a/", "", "/a//b/", "//", "/./", "/../", "/a/./", "/a b/", "/a?b"],
    ),
    "host": (
        "hosts: {V: {routes: {/: {static: pub}}}}",
        ["example.com", "Shop.Example.COM", "*.example.org", "[::1]", "a_b.com"],
        ["a.*.com", "example.com:8080", "::1", "ex ample.com", "-a.com", "*"],
    ),
    "upstream": (
        "routes: {/api/: {proxy: V}}",
        [
            "http://127.0.0.1:9000/v1/",
            "https://api.internal/",
            "HTTP://h/",
            "http://h",
            "http://[::1]:80/",
            "http://h/a%20b",
            "unix:/run/app.sock",
            "unix:run/app.sock",
            ["http://a/", "unix:/x.sock"],
        ],
        [
            "http://[::1/",
            "ftp://x",
            "http://",
            "http://u:p@h/",
            "http://h/?q=1",
            "http://h/#f",
            "http://h/a b",
            "http://h/café",
            "http://h:abc/",
            "unix:",
            "unix:/run/a\nb.sock",
            [],
            5,
        ],
    ),
    "redirect": (
        "routes: {/old/: {redirect: V}}",
        ["/new/", "/", "http://x/", "https://x/a?b#c"],
        ["new/", "ftp://x", "/a b", "/a\tb", "", "HTTP://x/", 301],
    ),
    "settings": (
        "routes: {/: {django: blog, settings: V}}",
        ["mysite.settings", "a", "_x.y2"],
        ["1a", "a..b", "a.b.", "a-b", "", 5],
    ),
    "wsgi": (
        "routes: {/: {wsgi: V}}",
        ["hello:application", "a.b:c.d"],
        ["hello", "a:b:c", ":b", "a:", "a-b:c"],
    ),
    "env name": (
        'routes: {/: {wsgi: "a:b", env: {V: x}}}',
        ["A", "_x1"],
        ["1A", "A-B", ""],
    ),
    "status": (
        "routes: {/old/: {redirect: /new/, status: V}}",
        [301, 302, 303, 307, 308],
        [200, 304, "301", True],
    ),
}


class ValueTests(SynchronousTestCase):
    """
    Value by value, the schema's patterns and ranges accept what the
    reader accepts.
    """

    def test_values(self) -> None:
        """
        Each value of L{VALUE_CASES} is accepted by both, or refused by
        both.
        """
        root = site(self)
        check = validator()
        failures = []
        for name, (template, good, bad) in VALUE_CASES.items():
            for value, wanted in [(v, True) for v in good] + [(v, False) for v in bad]:
                text = "listen: tcp:8080\n" + template.replace("V", json.dumps(value))
                if "routes:" not in template:
                    text += "\nroutes: {/: {static: pub}}"
                data, problems = _judge(root, text + "\n")
                verdicts = (problems is None, check.is_valid(data))
                if verdicts != (wanted, wanted):
                    failures.append(
                        f"{name} {value!r}: reader {verdicts[0]}, schema "
                        f"{verdicts[1]}, wanted {wanted} ({problems})"
                    )
        self.assertEqual(failures, [], "\n".join(failures))

    def test_known_differences(self) -> None:
        """
        What only the reader refuses: a port out of range, a float where a
        whole number goes (JSON cannot tell 2.0 from 2), a NaN. And what
        only the schema refuses: an upstream host with characters no URL
        host has.
        """
        root = site(self)
        check = validator()
        for text in [
            "routes: {/api/: {proxy: 'http://h:99999/'}}",
            "threads: {min: 1, max: 2.0}\nroutes: {/: {static: pub}}",
            "drain_timeout: .nan\nroutes: {/: {static: pub}}",
        ]:
            data, problems = _judge(root, f"listen: tcp:8080\n{text}\n")
            self.assertIsNotNone(problems, text)
            self.assertTrue(check.is_valid(data), text)
        for text in ["routes: {/api/: {proxy: 'http://a{b/'}}"]:
            data, problems = _judge(root, f"listen: tcp:8080\n{text}\n")
            self.assertIsNone(problems, text)
            self.assertFalse(check.is_valid(data), text)
