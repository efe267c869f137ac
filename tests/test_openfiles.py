"""
Tests of L{txrouter.openfiles}: the router raises its soft limit of open
files to the hard one (in a child process, whose limits are its own).
"""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest
from twisted.trial.unittest import SynchronousTestCase

pytestmark = pytest.mark.unit

_CHILD = """
import resource
from txrouter.openfiles import raise_open_files_limit
print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _with_soft_limit(soft: int) -> str:
    def lower() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run(
        [sys.executable, "-c", _CHILD],
        preexec_fn=lower,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


class RaiseTests(SynchronousTestCase):
    def test_raised_to_hard(self) -> None:
        """
        A soft limit below the hard one is raised to it.
        """
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard == resource.RLIM_INFINITY or hard <= 256:
            raise self.skipTest(f"hard limit {hard}: nothing to raise to")
        self.assertEqual(_with_soft_limit(256), f"(256, {hard}) {hard}")

    def test_at_hard(self) -> None:
        """
        At the hard limit already, nothing changes (and nothing is said).
        """
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard == resource.RLIM_INFINITY:
            raise self.skipTest("no hard limit")
        self.assertEqual(_with_soft_limit(hard), f"None {hard}")
