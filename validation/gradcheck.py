"""The gradient-check validation suite as a script: ``python validation/gradcheck.py [options]``.

The same as ``sflnet gradcheck [options]`` (same options, output and exit
status); the suite itself lives in :mod:`sflnet.gradcheck`.
"""

import sys

from sflnet_cli.main import main

if __name__ == "__main__":
    main(["gradcheck", *sys.argv[1:]])
