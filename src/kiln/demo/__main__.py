"""`python -m kiln.demo ...`: the demo model's command line (see kiln.demo.cli)."""

import sys

from kiln.demo.cli import main

sys.exit(main())
