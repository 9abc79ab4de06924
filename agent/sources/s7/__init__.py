"""Siemens S7 (S7comm over ISO-on-TCP): config model and address syntax (model.py), read planning (plan.py), the
read response (wire.py), decoding (values.py), the runtime (source.py, imported only when an S7 source is
configured, so an agent without S7 PLCs never loads snap7). See README.md."""

# The config package imports model.py; importing it first keeps `import agent.sources.s7.model` working when
# nothing imported the config before.
import agent.config  # noqa: F401
