"""`python -m qernel ...`: the same command-line interface as the `qernel` console script."""

import sys

from qernel.cli import main

if __name__ == "__main__":
    sys.exit(main())
