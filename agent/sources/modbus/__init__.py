"""Modbus TCP: config model and address syntax (model.py), read planning and decoding (plan.py, codec.py), the
runtime (source.py, imported only when a Modbus source is configured). See README.md."""

# The config package imports model.py; importing it first keeps `import agent.sources.modbus.model` working
# when nothing imported the config before.
import agent.config  # noqa: F401
