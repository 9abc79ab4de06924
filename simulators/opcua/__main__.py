"""`python -m simulators.opcua --config config/factory.yaml`: the OPC UA PLC simulator on its own."""

import sys

from simulators.opcua.cli import main

sys.exit(main())
