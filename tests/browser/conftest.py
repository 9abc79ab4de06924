"""Browser tests: the whole shop floor (broker, PLC simulators for OPC UA, Modbus TCP and S7, line simulator, agent,
dashboard) running on one simulated clock, looked at through Debian's headless Chromium. Screenshots go to test-artifacts/screenshots."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.broker import Broker, free_port
from simulators.browser import chromium
from simulators.harness import wait_until
from tests.conftest import ROOT
from tests.e2e.conftest import SIM_START, Proc, System

LEAD_PASSWORD = "line lead of the day"
SIMULATOR_READY_S = 120
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


class Shop(System):
    anchor = ""

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(self.dashboard_url + path, timeout=10) as resp:
            return json.loads(resp.read())


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    tmp = tmp_path_factory.mktemp("shop")
    with Broker(port=free_port(), data_dir=tmp / "broker") as broker:
        (tmp / "lead-password").write_text(LEAD_PASSWORD, encoding="utf-8")

        # machines read over Modbus TCP or S7 get a simulator each on a free port, as in `shopfloor demo`
        plcs: list[tuple[str, str, int]] = []  # (kind, source id, port)

        def with_lead(data: dict[str, Any]) -> None:
            data["dashboard"] = {"users": [{"name": "lead", "password_file": str(tmp / "lead-password")}]}
            for kind in ("modbus", "s7"):
                for source in data.get("sources", {}).get(kind, []):
                    source.update(host="127.0.0.1", port=free_port())
                    plcs.append((kind, source["id"], source["port"]))

        system = Shop(tmp, broker, with_lead)
        try:
            system.anchor = f"{time.time():.3f}"  # one clock for every process, whenever each starts
            anchor = ("--sim-anchor", system.anchor)
            clock = ("--sim-start", SIM_START, *anchor)
            start = ("--start", SIM_START, *anchor, "--speed", "1")
            simulators = [("plc", ["simulate", "plc", "--config", str(system.config), "--endpoint", system.endpoint,
                                   *start, "--sim-timestamps", "--cert-dir", str(tmp / "plc-pki")],
                           "PLC simulator ready at")]
            simulators += [(f"{kind}-{source_id}", ["simulate", kind, "--config", str(system.config), "--source",
                                                    source_id, "--port", str(port), *start],
                            {"modbus": "Modbus simulator ready at", "s7": "S7 simulator ready at"}[kind])
                           for kind, source_id, port in plcs]
            for name, argv, ready in simulators:
                proc = Proc(name, argv, tmp)
                system.procs.append(proc)  # stopped at the end even if it is not ready in time
                # the OPC UA simulator needs many seconds to be ready, more on a loaded machine
                proc.start(ready=ready, timeout=SIMULATOR_READY_S)
            system.agent(*clock)  # subscribed before the line simulator publishes the first order
            system.line("--start", SIM_START, *anchor)
            system.dashboard(*clock)

            def live() -> bool:
                boards = [system.api(f"/api/v1/lines/{line}") for line in ("line-1", "line-2")]
                return all(m["state"] != "OFFLINE" for b in boards for m in b["machines"].values()) and all(
                    b["people"]["headcount"]["present"] > 0 for b in boards)

            wait_until(live, 60, "both lines live on the dashboard, with people")
            yield system
        finally:
            system.close()
            logs = ROOT / "test-artifacts" / "browser-logs"
            logs.mkdir(parents=True, exist_ok=True)
            for log in Path(tmp).glob("*.log"):
                (logs / log.name).write_bytes(log.read_bytes())


# Installed in every page before its own scripts: collects what goes wrong in them (an exception, a module the
# browser refused or could not load) in window.__scriptErrors, for the tests to read.
ERROR_COLLECTOR = """
window.__scriptErrors = [];
window.addEventListener("error", (e) => {
  const src = e.target && e.target.src;
  window.__scriptErrors.push(src ? "failed to load " + src : String(e.message) + " at " + e.filename + ":" + e.lineno);
}, true);
window.addEventListener("unhandledrejection", (e) => window.__scriptErrors.push("unhandled: " + String(e.reason)));
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = chromium()
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ERROR_COLLECTOR})
    yield driver
    driver.quit()


def script_errors(driver: Any) -> list[str]:
    """What went wrong in the page's scripts since it loaded."""
    return list(driver.execute_script("return window.__scriptErrors || ['the error collector is missing']"))


def screenshot(driver: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
