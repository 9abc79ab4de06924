"""Shopfloor benchmarks: the agent's throughput, latency, CPU and memory, measured against real processes.

Run with `python -m bench` (or `make bench`). Every process under test runs on its own: the MQTT broker
(Mosquitto), the simulators and one agent, each started with `sys.executable -m shopfloor ...` from a config
derived from config/factory.yaml in a temporary directory. The bench process only reads the agent's SQLite
historian (read-only) and samples CPU and memory with psutil. Figures are reported, never asserted.
"""
