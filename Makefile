# Shopfloor: `make demo` runs the whole system on this machine; `make test` runs the test suite.
# Both install what they need first: Debian packages with apt-get, Python packages into .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBS   := mosquitto influxdb influxdb-client victoria-metrics chromium chromium-driver fonts-noto-cjk prometheus nginx-light systemd

.PHONY: install system-deps demo test lint unit bench clean wheelhouse test-wheelhouse chaos fuzz

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

# Debian packages: Mosquitto is the MQTT broker the demo and the tests start on a free loopback port;
# InfluxDB 1.x (with its `influx` client) and VictoriaMetrics are the real servers of the InfluxDB historian tests;
# Chromium and its driver run the dashboard's browser tests, with a CJK font so zh-CN boards render readably;
# Prometheus's promtool checks the alert rules in deploy/prometheus against a running agent's metrics; nginx runs
# the sample reverse proxy of deploy/nginx in front of a real dashboard over HTTPS; systemd-analyze verifies the
# units of deploy/systemd.
system-deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

demo: install system-deps
	$(BIN)/shopfloor demo

lint: install
	$(BIN)/ruff check agent dashboard simulators shopfloor tests bench
	$(BIN)/mypy

# Two workers: the 10-minute InfluxDB outage test (marked `long`, collected first) holds one while the other
# runs the rest of the suite; worksteal moves the queued tests off the busy worker.
test: install system-deps lint
	$(BIN)/pytest -n 2 --dist worksteal

bench: install system-deps
	$(BIN)/python -m bench

# The fuzz suites at length: hypothesis (MQTT payload mapping, config loader, OPC UA values) with 50 times the
# examples of make test, and schemathesis against docs/openapi.yaml on a running dashboard, 300 examples per operation.
fuzz: install system-deps
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q -p no:cacheprovider tests/fuzz
	SHOPFLOOR_FUZZ_EXAMPLES=300 $(BIN)/pytest -q -p no:cacheprovider tests/dashboard/test_schemathesis.py

# The chaos suite: every fault (InfluxDB, broker, PLC, agent SIGKILL, outbox quota, historian disk full, clock
# jumps, platform outage) against the simulators' ground truth, 30 s each, about 10 minutes; root for the
# historian's tmpfs. CHAOS_ARGS=--record writes the table into docs/benchmarks.md; --short: 5 s per fault.
chaos: install system-deps
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

# Everything an air-gapped edge PC needs: the Shopfloor wheel, every runtime dependency as a wheel, pinned
# requirements with hashes, install scripts and the example config (docs/operations.md). For a Windows PC:
# make wheelhouse WHEELHOUSE_ARGS="--platform win_amd64"
wheelhouse: install
	$(BIN)/python deploy/wheelhouse.py --out dist/wheelhouse $(WHEELHOUSE_ARGS)

# make test builds and installs the Linux wheelhouse with the network cut off; this adds the Windows build (a
# second full download of the dependencies, for win_amd64).
test-wheelhouse: install
	SHOPFLOOR_TEST_WINDOWS_WHEELHOUSE=1 $(BIN)/pytest -q -p no:cacheprovider tests/test_wheelhouse.py

clean:
	rm -rf $(VENV) data build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache test-artifacts
