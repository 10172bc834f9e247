"""The ``sflnet`` command line (Click). Installed as the package ``sflnet_cli``.

The folder is ``cli/`` in the repository, but a top-level import name ``cli``
would clash with other distributions that ship one, so ``pyproject.toml`` maps
it to the unambiguous name ``sflnet_cli``.
"""
