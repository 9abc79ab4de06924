"""`python -m shopfloor`: the same as the `shopfloor` command."""

import sys

from shopfloor.cli import main

sys.exit(main())
