"""python -m srkit.cli: the srkit command (what torchrun runs: torchrun ... -m srkit.cli train RECIPE)."""

import sys

from srkit.cli import main

sys.exit(main())
