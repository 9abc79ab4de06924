"""`python -m simulators.modbus --config FILE`: the Modbus TCP simulator alone."""

import sys

from simulators.modbus.server import main

sys.exit(main())
