"""MQTT: config model and routes (model.py), the runtime (source.py, with paho). See README.md."""

# The config package imports model.py; importing it first keeps `import agent.sources.mqtt.model` working
# when nothing imported the config before.
import agent.config  # noqa: F401
