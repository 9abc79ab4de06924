"""`python -m simulators.s7 --config FILE`: the S7 simulator alone."""

import sys

from simulators.s7.server import main

sys.exit(main())
