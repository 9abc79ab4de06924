"""The import direction of DESIGN.md: the contracts in pyproject.toml ([tool.importlinter]), checked with
import-linter on the source tree.

Each contract is checked on its own, so a broken one names itself and the import chains that break it. A second
test copies the tree, adds one forbidden import for each contract and checks that the contract then breaks: a
contract that a forbidden import cannot break (a misspelt module, a wildcard matching nothing) fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

PYPROJECT = ROOT / "pyproject.toml"
CONTRACTS = {c["id"]: c for c in tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]
             ["contracts"]}
PACKAGES = ("agent", "dashboard", "simulators", "shopfloor")

# Contracts the code does not keep yet. strict: the day one holds, its test fails until the entry goes.
STILL_BROKEN: dict[str, str] = {}

# Forbidden imports, each in a module placed in a contract's source package: every contract must break on its own.
PROBES = [
    ("core-is-pure", "agent/core/_probe.py", "import agent.runner"),
    ("core-is-pure", "agent/core/_probe.py", "import paho.mqtt.client"),
    ("config-loads-no-source-runtime", "agent/config/_probe.py", "import asyncua"),
    ("config-loads-no-source-runtime", "agent/config/_probe.py", "import agent.sources.mqtt.source"),
    ("sources-and-sinks-side-by-side", "agent/sinks/_probe.py", "import agent.sources.base"),
    ("sources-below-runner", "agent/sources/_probe.py", "import agent.sinks.live"),
    ("dashboard-without-agent-runtime", "dashboard/_probe.py", "import agent.runner"),
    ("dashboard-without-agent-runtime", "dashboard/_probe.py", "import agent.sources.mqtt.source"),
    ("dashboard-without-agent-runtime", "dashboard/_probe.py", "import pymodbus"),
    ("kpi-is-pure", "dashboard/kpi/_probe.py", "import flask"),
    ("kpi-is-pure", "dashboard/kpi/_probe.py", "import dashboard.queries"),
    ("simulators-stay-outside", "agent/_probe.py", "import simulators"),
    ("simulators-stay-outside", "dashboard/_probe.py", "import shopfloor.cli"),
    ("command-line-on-top", "simulators/_probe.py", "import shopfloor.cli"),
]


def lint(root: Path, contract_id: str) -> subprocess.CompletedProcess[str]:
    """`lint-imports` for one contract of root/pyproject.toml, on the packages under `root`."""
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"}
    command = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", command, "--no-cache", "--no-logo", "--contract", contract_id,
                           str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def expected_to_hold(contract_id: str) -> object:
    if contract_id in STILL_BROKEN:
        return pytest.param(contract_id, marks=pytest.mark.xfail(strict=True, reason=STILL_BROKEN[contract_id]))
    return contract_id


@pytest.mark.parametrize("contract_id", [expected_to_hold(c) for c in CONTRACTS])
def test_the_code_keeps_the_contract(contract_id: str) -> None:
    result = lint(ROOT, contract_id)
    if result.returncode != 0:
        pytest.fail(f"import contract {contract_id!r} is broken: {CONTRACTS[contract_id]['name']}\n"
                    f"{result.stdout}{result.stderr}", pytrace=False)


@pytest.mark.parametrize(("contract_id", "path", "line"), PROBES, ids=[f"{c}: {line}" for c, _, line in PROBES])
def test_a_forbidden_import_breaks_the_contract(tmp_path: Path, contract_id: str, path: str, line: str) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "static",
                                                                                         "templates"))
    shutil.copy(PYPROJECT, tmp_path / "pyproject.toml")
    (tmp_path / path).write_text(f'"""A forbidden import."""\n\n{line}\n', encoding="utf-8")
    probe = path.removesuffix(".py").replace("/", ".")

    result = lint(tmp_path, contract_id)

    assert result.returncode == 1, f"{contract_id}: {line} in {path} did not break it\n{result.stdout}{result.stderr}"
    assert f"{probe} -> " in result.stdout, result.stdout  # the chain from the probe is what broke it


def test_every_contract_has_a_probe() -> None:
    assert {contract_id for contract_id, _, _ in PROBES} == set(CONTRACTS)
