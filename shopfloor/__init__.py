"""The `shopfloor` command line and the demo wiring: the one package that knows the agent, the dashboard and the
simulators together. Nothing in agent/, dashboard/ or simulators/ imports it."""
