"""python -m pgmigrate_runner: see pgmigrate_runner/__init__.py."""

import sys

from pgmigrate_runner import main

sys.exit(main())
