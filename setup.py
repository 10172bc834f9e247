"""Package discovery, the one thing pyproject.toml cannot say (everything else is there).

Every package under ``sflnet/`` is found, so a new subpackage is never left out; the data
folders ``sflnet/demo_data`` and ``sflnet/digits_data`` have no ``__init__.py`` and are found
as namespace packages, which makes their files package data of a listed package. The CLI's
folder ``cli/`` is installed under the import name ``sflnet_cli`` (``package-dir`` in
pyproject.toml), with any subpackage it gains.
"""

from setuptools import find_namespace_packages, setup

SFLNET = find_namespace_packages(include=["sflnet", "sflnet.*"])
CLI = ["sflnet_cli"] + [f"sflnet_cli.{name}" for name in find_namespace_packages(where="cli")]

setup(packages=SFLNET + CLI)
