"""Shop-floor KPIs as pure code (no I/O, no clock): shift windows, ISO 22400-2 OEE and its parts, and the
time figures of stops and andon calls. Historian reads come in as plain values; results go out as frozen
dataclasses."""
