"""
L{tests.support.program}: a missing Debian program skips an end-to-end
test on a developer's machine, and fails it in CI.
"""

from __future__ import annotations

import os
import unittest

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.support import program

pytestmark = pytest.mark.unit

_MISSING = "txrouter-no-such-program"


class ProgramTests(SynchronousTestCase):
    def test_found(self) -> None:
        self.assertTrue(program("sh", "dash").endswith("/sh"))

    def test_missing_skips(self) -> None:
        self.patch(os, "environ", {})
        with self.assertRaises(unittest.SkipTest) as caught:
            program(_MISSING, "some-package")
        self.assertIn("apt-get install some-package", str(caught.exception))

    def test_missing_fails_in_ci(self) -> None:
        self.patch(os, "environ", {"CI": "true"})
        with self.assertRaises(AssertionError) as caught:
            program(_MISSING, "some-package")
        self.assertIn("CI must run this test", str(caught.exception))
