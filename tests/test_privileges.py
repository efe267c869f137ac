"""
Tests for L{txrouter.privileges} and the Twisted private names a UNIX port
closed after a privilege drop needs (L{txrouter.privatetwisted.keep_socket_files}).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.trial.unittest import SynchronousTestCase, TestCase

from txrouter.privatetwisted import keep_socket_files
from txrouter.privileges import STARTED_AS, drop_target, give_to_runner
from txrouter.services import RuntimeDirService

pytestmark = pytest.mark.unit


class DropTargetTests(SynchronousTestCase):
    def test_not_under_twistd(self) -> None:
        """
        Outside C{twistd} (a test, C{txrouter check}) nothing is dropped,
        and nothing is made over to anyone.
        """
        self.assertIsNone(drop_target())
        path = Path(self.mktemp())
        path.mkdir()
        before = path.stat()
        give_to_runner(str(path))
        after = path.stat()
        self.assertEqual((after.st_uid, after.st_gid), (before.st_uid, before.st_gid))

    def test_started_as(self) -> None:
        """
        The user the process started as, before any drop, is known.
        """
        self.assertEqual(STARTED_AS, os.geteuid())

    def test_runtime_dir(self) -> None:
        """
        With no drop, the runtime folder is made at C{startService}, 0700.
        """
        path = Path(self.mktemp())
        service = RuntimeDirService(str(path), temporary=True)
        service.privilegedStartService()
        self.assertFalse(path.exists())
        service.startService()
        self.assertEqual(path.stat().st_mode & 0o777, 0o700)
        service.stopService()
        self.assertFalse(path.exists())


class KeepSocketFilesTests(TestCase):
    @inlineCallbacks
    def test_files_stay(self) -> Any:
        """
        A real UNIX port (with its lock file, as C{unix:} strings make)
        closes without removing its socket's file or its lock.
        """
        folder = Path(self.mktemp())
        folder.mkdir()
        path = str(folder / "s.sock")
        port = reactor.listenUNIX(path, Factory(), wantPID=True)  # type: ignore[attr-defined]
        keep_socket_files(port)
        yield port.stopListening()
        self.assertTrue(os.path.exists(path))
        self.assertTrue(os.path.lexists(path + ".lock"))
        probe = socket.socket(socket.AF_UNIX)
        self.addCleanup(probe.close)
        with self.assertRaises(ConnectionRefusedError):
            probe.connect(path)
