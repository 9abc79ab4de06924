"""OPC UA PLC simulator: an asyncua server showing the machines of the simulated plant (simulators/plant/).

The plant decides what each machine does (the line's orders, changeovers, stops, faults, breaks and shifts);
simulators/machines turns that into the raw tags each machine type declares (state codes, PackML names or bits;
counters with rollover; the product; process values; alarm codes), and this server shows them, every change
stamped with its own simulated time when `--sim-timestamps` is given. Beside the raw tags it publishes the ground
truth (unwrapped counts, true board state), writes the plant's full truth to `--truth FILE`, and has two controls:
`Sim.Running` stops the simulated clock, `<line>.<machine>.Force` pins a machine in a board state.

- server.py   PlcSimulator (address space, ticking, bench tags)
- fastpath.py asyncua's data change path made faster and spec-conformant
- cli.py      `shopfloor simulate plc` (add_arguments, run, main)
"""

from simulators.opcua.cli import add_arguments, main, run
from simulators.opcua.server import PlcSimulator

__all__ = ["PlcSimulator", "add_arguments", "main", "run"]
