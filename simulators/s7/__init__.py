"""S7 simulator: the machines of one S7 source of a factory config, served by snap7's S7 server."""
