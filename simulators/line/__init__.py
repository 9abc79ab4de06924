"""MQTT line simulator: badge readers, andon buttons, line-side material and orders of the simulated plant.

What happens is decided by the plant (simulators/plant/), the same world the PLC simulator shows: this
simulator publishes its floor's messages. It publishes exactly the topics and JSON fields that `sources.mqtt[].routes` of config/factory.yaml expect, on a
simulated clock that starts at the real now and runs `speed` times faster. Every payload carries `ts` (ISO 8601
UTC with microseconds), strictly increasing per topic, because the historian keys a point by series + timestamp.

With `malformed_every=N` it also publishes one bad message after every N valid ones (not JSON, wrong types,
unknown topics, 1 MB payloads, missing fields), so the agent's dead-letter path is exercised. The ground truth
(valid messages per signal, malformed per kind) counts only what the broker acknowledged (PUBACK for QoS 1), so
a test can compare it with what the agent stored.

    sim = LineSimulator(agent.config.load("config/factory.yaml"), "mqtt://127.0.0.1:1883", speed=60)
    sim.start(); ...; sim.stop(); print(sim.truth())

- payloads.py        timestamps per topic, malformed messages
- publisher.py       paho publisher counting what the broker acknowledged (the truth)
- raw_publisher.py   bare MQTT 3.1.1 publisher for floods
- simulator.py       LineSimulator
- cli.py             `shopfloor simulate line`
"""

from simulators.line.cli import add_arguments, run
from simulators.line.simulator import LineSimulator

__all__ = ["LineSimulator", "add_arguments", "run"]
