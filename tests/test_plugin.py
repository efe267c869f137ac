"""
Packaging: the installed distribution ships the twistd plugin, and twistd
finds it (Daphne once shipped without its plugin; this guards against that).
"""

from __future__ import annotations

import site
import subprocess
import sys
from importlib.metadata import distributions, files
from pathlib import Path

import pytest
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SkipTest, SynchronousTestCase

pytestmark = pytest.mark.e2e


class PluginTests(SynchronousTestCase):
    """
    C{twistd txrouter} is available after C{pip install}.
    """

    def test_get_plugins(self) -> None:
        """
        Twisted's plugin system finds the txrouter service maker.
        """
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("txrouter", makers)
        self.assertEqual(makers["txrouter"].module, "txrouter.tap")
        self.assertTrue(callable(makers["txrouter"].makeService))

    def test_distribution_files(self) -> None:
        """
        The wheel holds the plugin module and never a twisted/__init__.py of
        its own, which would hide the real Twisted.
        """
        names = {str(f) for f in files("txrouter") or []}
        self.assertIn("twisted/plugins/txrouter_plugin.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)

    def test_every_module_shipped(self) -> None:
        """
        Every module of the checkout's package, subpackages included, is in
        the installed distribution (a subpackage missing from the packaging
        config would work in the checkout and fail after install).
        """
        # The distribution in site-packages, not the egg-info that building
        # leaves in the checkout (first on sys.path when tests run there).
        installed = [
            d
            for d in distributions(path=site.getsitepackages())
            if d.metadata["Name"] == "txrouter"
        ]
        names = {str(f) for d in installed for f in d.files or []}
        if "txrouter/__init__.py" not in names:
            raise SkipTest("an editable install lists no modules")
        repo = Path(__file__).resolve().parent.parent
        modules = {
            str(path.relative_to(repo)) for path in (repo / "txrouter").rglob("*.py")
        }
        self.assertEqual(modules - names, set())

    def test_twistd_lists_it(self) -> None:
        """
        C{twistd --help} lists the txrouter command.
        """
        twistd = Path(sys.executable).parent / "twistd"
        result = subprocess.run(
            [str(twistd), "--help"], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("txrouter", result.stdout)
