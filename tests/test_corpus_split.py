"""
The raw-request corpus (C{tests/corpus/}) through the router's real server
protocol in memory: a L{RouterSite} with the corpus's limits, its
L{RouterChannel} and llhttp gate, a real L{Router} and, behind the route,
our C{WSGIResource} running the recording app of L{tests.corpusapp}, on a
C{StringTransport}.

Each case is fed whole, and again one byte at a time (real sockets coalesce
bytes, so only here is every split point reached): both runs must get the
statuses and reach the case expects, and the same answers, byte for byte
(but the C{Date} header). A connection left open must serve a GET next.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.corpus import (
    CASES,
    LIMITS,
    Case,
    follow_up,
    follow_up_problems,
    parse_answers,
    problems,
)
from tests.corpusapp import recording_application
from txrouter.limits import Limits
from txrouter.router import Router
from txrouter.site import RouterSite
from txrouter.wsgi import WSGIResource

pytestmark = pytest.mark.unit

#: The route every case is fed to here (the cases' C{{R}}).
ROUTE = "inp"

_DATE = re.compile(rb"\r\nDate: [^\r]*")


class _Pool:
    """
    A thread pool that runs each call at once, in the caller's thread.
    """

    def callInThread(self, f: Callable[..., object], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


class _Reactor(MemoryReactorClock):
    """
    A memory reactor whose C{callFromThread} runs the call at once.
    """

    def callFromThread(self, f: Callable[..., object], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


class _Transport(StringTransport):
    """
    A C{StringTransport} that, as a TCP transport does, lets its producer be
    resumed once it is closing (Twisted resumes a channel when a request is
    done, even on a connection that is being closed).
    """

    def resumeProducing(self) -> None:
        if not self.disconnecting:
            super().resumeProducing()


@dataclass
class Run:
    """
    One feed of a case: what the client got, and what reached the app.
    """

    transcript: bytes
    problems: list[str]
    records: list[dict[str, Any]]
    closed: bool


def _feed(protocol: Any, transport: _Transport, data: bytes, split: bool) -> None:
    pieces = [data[i : i + 1] for i in range(len(data))] if split else [data]
    for piece in pieces:
        if transport.disconnecting:
            break
        protocol.dataReceived(piece)


@functools.cache
def run(name: str, split: bool) -> Run:
    """
    Feed case C{name} to a new connection, whole or byte by byte, then the
    follow-up GET if the connection stays open (once: the comparison of
    both feeds reuses them).
    """
    case = CASES[name]
    records: list[dict[str, Any]] = []
    resource = WSGIResource(_Reactor(), _Pool(), recording_application(records.append))
    site = RouterSite(
        Router({"": {f"/{ROUTE}/": resource}}),
        MemoryReactorClock(),
        None,
        Limits(**LIMITS),
    )
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = _Transport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
        peerAddress=IPv4Address("TCP", "127.0.0.1", 5555),
    )
    protocol.makeConnection(transport)
    _feed(protocol, transport, case.raw_for(ROUTE), split)
    got = transport.value()
    closed = bool(transport.disconnecting)
    answers, rest = parse_answers(got, case.head, eof=closed)
    found = problems(case, ROUTE, answers, rest, list(records), closed)
    if not closed and not found:
        reached = len(records)
        _feed(protocol, transport, follow_up(ROUTE), split)
        more, rest = parse_answers(
            transport.value()[len(got) :], False, eof=bool(transport.disconnecting)
        )
        found += follow_up_problems(more, rest, records[reached:])
    return Run(_DATE.sub(b"", transport.value()), found, records, closed)


class CorpusSplitTests(SynchronousTestCase):
    """
    Every corpus case, whole and byte by byte; its methods are made below,
    three per case: C{test_whole_*}, C{test_split_*} and C{test_same_*}.
    """

    def check(self, case: Case, split: bool) -> None:
        """
        Fail with every problem of one feed of C{case}.
        """
        result = run(case.name, split)
        self.assertEqual(result.problems, [], f"{case.name}: {case.why}")

    def compare(self, case: Case) -> None:
        """
        Fail if the whole and byte-by-byte feeds of C{case} differ.
        """
        whole, split = run(case.name, False), run(case.name, True)
        self.assertEqual(
            (whole.transcript, whole.closed, whole.records),
            (split.transcript, split.closed, split.records),
            f"{case.name}: whole and byte-by-byte feeds differ",
        )


def _method(case: Case, how: str) -> Callable[[CorpusSplitTests], None]:
    def test(self: CorpusSplitTests) -> None:
        if how == "same":
            self.compare(case)
        else:
            self.check(case, how == "split")

    what = {
        "whole": "fed whole",
        "split": "fed one byte at a time",
        "same": "gets the same answers whole and byte by byte",
    }[how]
    test.__doc__ = f"{case.name}, {what}: {case.why}"
    bug = case.bug_in(how)
    if bug is not None:
        return pytest.mark.xfail(strict=True, reason=bug)(test)
    return test


for _case in CASES.values():
    for _how in ("whole", "split", "same"):
        _name = f"test_{_how}_{_case.name.replace('-', '_')}"
        setattr(CorpusSplitTests, _name, _method(_case, _how))
del _case, _how, _name
