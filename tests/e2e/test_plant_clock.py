"""The PLC simulator runs on the demo's shared clock with no lag of its own: the time it spends starting its
server is not lost from its simulated clock (it was: ~3 real seconds, 181 simulated seconds at x60)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from asyncua import Client, ua

from tests.e2e.conftest import SIM_NS, SIM_START

SPEED = 60


def test_the_plc_simulators_clock_is_the_shared_clock(make_system):
    system = make_system()
    anchor = time.time()
    system.plc("--start", SIM_START, "--sim-anchor", f"{anchor:.3f}", "--sim-timestamps", speed=SPEED)

    async def newest_stamp() -> float:
        async with Client(system.endpoint, timeout=5) as client:
            ns = await client.get_namespace_index(SIM_NS)
            node = client.get_node(ua.NodeId("line-1.press-1.Pressure", ns))
            dv = await node.read_data_value()
            return dv.SourceTimestamp.timestamp()

    lags = []
    for _ in range(3):
        stamp = asyncio.run(newest_stamp())
        shared_now = datetime.fromisoformat(SIM_START).timestamp() + (time.time() - anchor) * SPEED
        lags.append(shared_now - stamp)
        time.sleep(0.5)
    # a process value is written every tick (0.1 s = 6 simulated seconds) and read over a local connection
    assert max(abs(lag) for lag in lags) < 20, lags
