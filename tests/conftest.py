"""
Run the tests the way trial does: from a scratch working directory, so that
C{TestCase.mktemp()} and anything else relative never writes into the
repository.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _scratch_cwd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    scratch = tmp_path_factory.mktemp("trial_temp")
    before = Path.cwd()
    os.chdir(scratch)
    yield scratch
    os.chdir(before)
