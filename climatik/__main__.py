"""`python -m climatik` is the same program as the `climatik` console script."""

import sys

from climatik.cli import main

sys.exit(main())
