"""`python -m srkit ...`: the same as the `srkit` console script."""

import sys

from srkit.cli import main

sys.exit(main())
