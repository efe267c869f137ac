"""
The raw-request corpus: one C{NAME.http} file of raw bytes per case, and
C{cases.toml} saying what each must get (see C{README.md} in this folder).
This module loads the cases, reads answers off the wire, and checks a run
of a case against its expectations, for the end-to-end run
(C{tests/test_corpus_e2e.py}) and the byte-by-byte one
(C{tests/test_corpus_split.py}) alike.

    >>> case = CASES["get"]
    >>> raw = case.raw_for("inp")             # {R} -> the route's prefix
    >>> answers, rest = parse_answers(got, case.head, eof=closed)
    >>> problems(case, "inp", answers, rest, records, closed)   # [] if right
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

__all__ = [
    "CASES",
    "FOLLOW_UP",
    "LIMITS",
    "PLACEHOLDER",
    "ROUTES",
    "Answer",
    "Case",
    "follow_up",
    "follow_up_problems",
    "parse_answers",
    "problems",
    "record_from_upstream",
]

FOLDER = Path(__file__).resolve().parent

#: What each case file has where the route's prefix goes (as many bytes as
#: each prefix, so that sizes near a limit stay exact).
PLACEHOLDER = b"{R}"
#: The prefixes of the three routes: in process, in a worker, proxied.
ROUTES = ("inp", "wrk", "prx")

#: What the edge answers when it refuses a request, and then closes.
REFUSALS = frozenset({400, 408, 413, 414, 431, 501, 505})

#: The path of L{follow_up}.
FOLLOW_UP = "/follow-up"

_RUNS = frozenset({"e2e", "e2e-inp", "e2e-wrk", "e2e-prx", "whole", "split", "same"})
_SEEN_KEYS = frozenset(
    {"method", "path", "query", "host", "client", "body", "headers", "absent"}
)


@dataclass(frozen=True)
class Case:
    """
    One corpus case: its bytes and what it must get.

    @ivar allowed: for each answer expected, the statuses it may have.
    @ivar reach: how many requests reach the app, by the status of the
        last answer (key L{None}: whatever it is).
    """

    name: str
    raw: bytes
    allowed: tuple[frozenset[int], ...]
    reach: dict[int | None, int]
    why: str
    head: bool = False
    close: bool | None = None
    seen: tuple[dict[str, Any], ...] = ()
    bug: str | None = None
    xfail: frozenset[str] = frozenset()

    def raw_for(self, route: str) -> bytes:
        """
        The bytes to send to C{route}.
        """
        assert len(route) == len(PLACEHOLDER), route
        return self.raw.replace(PLACEHOLDER, route.encode("ascii"))

    def reach_for(self, last_status: int | None) -> int | None:
        """
        How many requests must reach the app when the last answer has
        C{last_status} (L{None}: that status is not allowed anyway).
        """
        if None in self.reach:
            return self.reach[None]
        return self.reach.get(last_status) if last_status is not None else None

    def closes(self, last_status: int | None) -> bool:
        """
        Whether the connection must be closed after the answers.
        """
        if self.close is not None:
            return self.close
        return last_status in REFUSALS

    def bug_in(self, *runs: str) -> str | None:
        """
        The known bug, if it makes one of C{runs} fail.
        """
        return self.bug if self.xfail.intersection(runs) else None


def _load(folder: Path) -> tuple[dict[str, int], dict[str, Case]]:
    with (folder / "cases.toml").open("rb") as f:
        table = tomllib.load(f)
    limits = dict(table["limits"])
    cases = {}
    for name, spec in table["cases"].items():
        cases[name] = _case(folder, name, spec)
    files = {p.stem for p in folder.glob("*.http")}
    if files != set(cases):
        raise ValueError(
            f"cases.toml and the .http files differ: no entry for "
            f"{sorted(files - set(cases))}, no file for {sorted(set(cases) - files)}"
        )
    return limits, cases


def _case(folder: Path, name: str, spec: dict[str, Any]) -> Case:
    unknown = set(spec) - {
        "status",
        "statuses",
        "reach",
        "why",
        "head",
        "close",
        "seen",
        "bug",
        "xfail",
    }
    if unknown or ("status" in spec) == ("statuses" in spec) or not spec.get("why"):
        raise ValueError(f"cases.{name}: bad keys {sorted(spec)}")
    if "status" in spec:
        status = spec["status"]
        allowed: tuple[frozenset[int], ...] = (
            frozenset(status if isinstance(status, list) else [status]),
        )
    else:
        allowed = tuple(frozenset([s]) for s in spec["statuses"])
    reach = spec["reach"]
    reaches: dict[int | None, int] = (
        {int(k): v for k, v in reach.items()}
        if isinstance(reach, dict)
        else {None: reach}
    )
    if isinstance(reach, dict) and set(reaches) != set(allowed[-1]):
        raise ValueError(f"cases.{name}: reach must name each allowed status")
    seen = tuple(spec.get("seen", ()))
    for entry in seen:
        if set(entry) - _SEEN_KEYS:
            raise ValueError(f"cases.{name}: unknown seen keys {sorted(entry)}")
    xfail = frozenset(spec.get("xfail", ()))
    if xfail - _RUNS or bool(xfail) != ("bug" in spec):
        raise ValueError(f"cases.{name}: xfail needs a bug and known runs")
    return Case(
        name=name,
        raw=(folder / f"{name}.http").read_bytes(),
        allowed=allowed,
        reach=reaches,
        why=spec["why"],
        head=spec.get("head", False),
        close=spec.get("close"),
        seen=seen,
        bug=spec.get("bug"),
        xfail=xfail,
    )


LIMITS, CASES = _load(FOLDER)


# -- answers


@dataclass(frozen=True)
class Answer:
    """
    One HTTP/1.1 answer as it came.
    """

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    raw: bytes

    def header(self, name: bytes) -> list[bytes]:
        """
        The values of header C{name} (any case).
        """
        return [v for n, v in self.headers if n.lower() == name.lower()]


class Malformed(Exception):
    """
    Bytes that are not an HTTP/1.1 answer.
    """


def parse_answers(data: bytes, head: bool, eof: bool) -> tuple[list[Answer], bytes]:
    """
    The complete answers at the start of C{data}, and what follows them.

    @param head: whether the first final answer is to a HEAD (no body).
    @param eof: whether the connection has closed after C{data} (an
        answer without length ends there).
    @raise Malformed: an answer that is not HTTP/1.1.
    """
    answers: list[Answer] = []
    rest = data
    while rest:
        end = rest.find(b"\r\n\r\n")
        if end < 0:
            break
        lines = rest[:end].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
            raise Malformed(f"not a status line: {lines[0]!r}")
        status = int(parts[1])
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise Malformed(f"not a header line: {line!r}")
            headers.append((name.strip(), value.strip()))
        start = end + 4
        finals = sum(1 for a in answers if a.status >= 200)
        answer = Answer(status, tuple(headers), b"", b"")
        no_body = status < 200 or status in (204, 304) or (head and finals == 0)
        if no_body:
            size = 0
        elif any(v.lower() == b"chunked" for v in answer.header(b"transfer-encoding")):
            end_of_body = _chunked_end(rest, start)
            if end_of_body is None:
                break
            size = end_of_body - start
        elif answer.header(b"content-length"):
            size = int(answer.header(b"content-length")[-1])
            if len(rest) - start < size:
                break
        elif eof:
            size = len(rest) - start
        else:
            break
        body = rest[start : start + size]
        answers.append(Answer(status, tuple(headers), body, rest[: start + size]))
        rest = rest[start + size :]
    return answers, rest


def _chunked_end(data: bytes, start: int) -> int | None:
    """
    Where a chunked body that starts at C{start} ends (L{None}: not yet).
    """
    at = start
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(data[at:line_end].split(b";")[0], 16)
        at = line_end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n\r\n", at - 2)
            return None if trailer_end < 0 else trailer_end + 4
        at += size + 2
        if at > len(data):
            return None


# -- what the app or upstream saw


def record_from_upstream(
    method: str, target: str, headers: list[tuple[str, str]], body: bytes
) -> dict[str, Any]:
    """
    What the recording upstream got, in the form of
    L{tests.corpusapp.describe}: the path decoded as a WSGI server decodes
    C{PATH_INFO}, the client address as the last C{X-Forwarded-For} entry.
    """
    path, _, query = target.partition("?")
    joined: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    forwarded_for = joined.get("x-forwarded-for", "")
    return {
        "route": "/prx",
        "method": method,
        "path": unquote_to_bytes(path).decode("latin-1"),
        "query": query,
        "host": joined.get("host", ""),
        "client": forwarded_for.rpartition(",")[2].strip(),
        "headers": joined,
        "body": body.decode("latin-1"),
    }


def _seen_problems(
    expected: dict[str, Any], got: dict[str, Any], route: str
) -> list[str]:
    found = []
    for key in ("method", "path", "query", "host", "client", "body"):
        if key not in expected:
            continue
        value = expected[key].replace(PLACEHOLDER.decode(), route)
        if got[key] != value:
            found.append(f"{key}: expected {value!r}, got {got[key]!r}")
    for name, value in expected.get("headers", {}).items():
        if got["headers"].get(name) != value:
            found.append(
                f"header {name}: expected {value!r}, got {got['headers'].get(name)!r}"
            )
    values = [got["host"], got["client"], *got["headers"].values()]
    for text in expected.get("absent", []):
        if any(text.lower() in v.lower() for v in values):
            found.append(f"{text!r} reached the app: {got['headers']}")
    return found


def problems(
    case: Case,
    route: str,
    answers: list[Answer],
    rest: bytes,
    records: list[dict[str, Any]],
    closed: bool,
) -> list[str]:
    """
    Everything wrong with one run of C{case} on C{route}: the answers got
    (and the unparsed bytes after them), the records of the requests that
    reached the app, and whether the connection was closed after them.
    """
    found = []
    statuses = [a.status for a in answers]
    if len(answers) != len(case.allowed) or any(
        s not in allowed for s, allowed in zip(statuses, case.allowed, strict=False)
    ):
        wanted = [sorted(a) if len(a) > 1 else min(a) for a in case.allowed]
        found.append(f"statuses: expected {wanted}, got {statuses}")
    if rest:
        found.append(f"bytes after the answers: {rest[:200]!r}")
    last = statuses[-1] if statuses else None
    reach = case.reach_for(last)
    if reach is not None and len(records) != reach:
        found.append(
            f"reach: expected {reach} request(s) at the app, got {len(records)}: "
            f"{[(r['method'], r['path']) for r in records]}"
        )
    for record in records:
        if record["route"] != "/" + route:
            found.append(f"reached the wrong route: {record['route']}")
    if reach == len(records) and not found:
        for i, (expected, got) in enumerate(zip(case.seen, records, strict=False)):
            found.extend(
                f"request {i + 1}: {p}" for p in _seen_problems(expected, got, route)
            )
    if case.closes(last) != closed:
        found.append(
            "the connection was closed" if closed else "the connection stayed open"
        )
    return found


def follow_up(route: str) -> bytes:
    """
    The GET sent after the answers of a case whose connection stays open:
    it must be served on the same connection.
    """
    return b"GET /%s%s HTTP/1.1\r\nHost: example.com\r\n\r\n" % (
        route.encode("ascii"),
        FOLLOW_UP.encode("ascii"),
    )


def follow_up_problems(
    answers: list[Answer], rest: bytes, records: list[dict[str, Any]]
) -> list[str]:
    """
    Everything wrong with the answer to L{follow_up} and what it reached.
    """
    statuses = [a.status for a in answers]
    if statuses != [200] or rest:
        return [f"follow-up GET: expected [200], got {statuses} and {rest[:200]!r}"]
    if [r["path"] for r in records] != [FOLLOW_UP]:
        return [f"follow-up GET reached the app as {records}"]
    return []
