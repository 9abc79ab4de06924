"""MQTT: config model and routes (model.py), the runtime (source.py, with paho; the client is agent/mqtt_client.py),
receiver worker processes for `workers: N` (workers.py) and the sessions a change of workers leaves at the broker
(sessions.py). See README.md."""

# The config package imports model.py; importing it first keeps `import agent.sources.mqtt.model` working
# when nothing imported the config before.
import agent.config  # noqa: F401
