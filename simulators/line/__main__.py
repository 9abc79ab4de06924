"""`python -m simulators.line --config config/factory.yaml`: the MQTT line simulator on its own."""

import argparse
import logging
import sys

from simulators.line.cli import add_arguments, run

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
_parser = argparse.ArgumentParser(prog="python -m simulators.line", description="MQTT line simulator")
add_arguments(_parser)
sys.exit(run(_parser.parse_args()))
