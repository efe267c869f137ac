"""
Tests for L{txrouter.heap}.
"""

from __future__ import annotations

import gc
import weakref

import pytest
from twisted.trial.unittest import SynchronousTestCase

from txrouter.heap import freeze_startup_heap

pytestmark = pytest.mark.unit


class _Node:
    other: _Node | None = None


class FreezeStartupHeapTests(SynchronousTestCase):
    def setUp(self) -> None:
        # The test process's own heap must not stay frozen.
        self.addCleanup(gc.unfreeze)

    def test_live_objects_frozen(self) -> None:
        """
        Every object alive is moved out of the collector's passes; the
        count is returned.
        """
        kept = [_Node() for _ in range(100)]
        count = freeze_startup_heap()
        self.assertEqual(count, gc.get_freeze_count())
        self.assertGreaterEqual(count, len(kept))
        self.assertNotIn(kept[0], gc.get_objects())

    def test_garbage_collected_first(self) -> None:
        """
        A reference cycle nothing refers to is collected before the heap is
        frozen (frozen, it would never be).
        """
        first, second = _Node(), _Node()
        first.other, second.other = second, first
        gone = weakref.ref(first)
        del first, second
        freeze_startup_heap()
        self.assertIsNone(gone())

    def test_later_objects_collected(self) -> None:
        """
        Objects made after the freeze are collected as before.
        """
        freeze_startup_heap()
        later = _Node()
        self.assertIn(later, gc.get_objects())
