"""`python -m climatik.world`: the scrape target alone, as the integration tests start it."""

import sys

from climatik.world.cli import main

sys.exit(main())
