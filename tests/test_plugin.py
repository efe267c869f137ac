"""
Packaging: the installed distribution ships the twistd plugin, and twistd
finds it (Daphne once shipped without its plugin; this guards against that).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import files
from pathlib import Path

import pytest
from setuptools import find_namespace_packages
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

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

    def test_every_package_packaged(self) -> None:
        """
        Every folder of the package holding modules is one that the
        packaging config ships (a subpackage left out would work in the
        checkout and fail after a non-editable install). Read from
        pyproject.toml as setuptools reads it, so it holds for any install.
        """
        repo = Path(__file__).resolve().parent.parent
        setuptools_config = tomllib.loads(
            (repo / "pyproject.toml").read_text(encoding="utf-8")
        )["tool"]["setuptools"]
        packages = setuptools_config["packages"]
        if isinstance(packages, list):
            shipped = set(packages)
        else:
            shipped = set(find_namespace_packages(str(repo), **packages["find"]))
        folders = {
            ".".join(path.parent.relative_to(repo).parts)
            for path in (repo / "txrouter").rglob("*.py")
        }
        self.assertEqual(folders - shipped, set())
        self.assertIn("twisted.plugins", shipped)
        self.assertNotIn("twisted", shipped)

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
