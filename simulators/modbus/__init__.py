"""Modbus TCP simulator: the machines of one Modbus source of a factory config, served by pymodbus."""
