"""OPC UA: config model and NodeId syntax (model.py), the runtime (source.py, with asyncua) and its fast publish
parser (wire.py). See README.md."""

# The config package imports model.py; importing it first keeps `import agent.sources.opcua.model` working
# when nothing imported the config before.
import agent.config  # noqa: F401
