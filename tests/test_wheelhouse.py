"""The offline install: `make wheelhouse` builds everything an edge PC without network needs, and install.sh
installs from it with the network cut off (a user and network namespace of its own: `unshare -rn`)."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

import pytest
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _wheelhouse_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wheelhouse", ROOT / "deploy" / "wheelhouse.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wheelhouse = _wheelhouse_module()


def _offline(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run `argv` in a network namespace of its own: no interface but a loopback that is down."""
    return subprocess.run(["unshare", "--map-root-user", "--net", *argv], capture_output=True, text=True,
                          timeout=300, **kwargs)  # type: ignore[call-overload]


def _once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """`make(path)` once per test session, also when pytest-xdist spreads this module's tests over workers:
    the first worker builds under a lock in the session's shared temporary folder, the others reuse it."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = shared / name
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / f"{name}.done").exists():
            shutil.rmtree(path, ignore_errors=True)
            make(path)
            (shared / f"{name}.done").touch()
    return path


@pytest.fixture(scope="session")
def house(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheelhouse for this machine, built as `make wheelhouse` builds it."""
    def build(out: Path) -> None:
        done = subprocess.run([sys.executable, str(ROOT / "deploy" / "wheelhouse.py"), "--out", str(out)],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return _once(tmp_path_factory, "wheelhouse", build)


@pytest.fixture(scope="session")
def installed(house: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheelhouse installed with install.sh with the network cut off; the prefix."""
    def install(prefix: Path) -> None:
        # The machine's own pip setup must not stand in for the wheelhouse, nor get in its way: a pip.conf and
        # PIP_* variables that would send pip to an index and refuse wheels are in the installer's environment.
        hostile = prefix.parent / "pip.conf"
        hostile.write_text("[global]\nindex-url = http://127.0.0.1:9/simple\nno-binary = :all:\n")
        env = {**os.environ, "PIP_CONFIG_FILE": str(hostile), "PIP_NO_BINARY": ":all:",
               "PIP_FIND_LINKS": "/nonexistent"}
        done = _offline(["sh", str(house / "install.sh"), "--prefix", str(prefix), "--no-compile"], env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Shopfloor 0.1.0 installed" in done.stdout, done.stdout
    return _once(tmp_path_factory, "opt-shopfloor", install)


def _normalized(pins: Iterable[str]) -> list[str]:
    return sorted(f"{canonicalize_name(name)}=={version}" for name, version in (p.split("==") for p in pins))


def test_the_network_namespace_has_no_way_out() -> None:
    probe = ("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 443), timeout=3)\n"
             "except OSError as exc:\n    print('no network:', exc)\nelse:\n    print('connected')")
    done = _offline([sys.executable, "-c", probe])
    assert done.returncode == 0, done.stderr
    assert "no network" in done.stdout


def test_wheelhouse_pins_every_wheel_by_version_and_hash(house: Path) -> None:
    wheels = sorted(p.name for p in (house / "wheels").glob("*.whl"))
    requirements = (house / "requirements.txt").read_text()
    pinned = [line.split(" ")[0] for line in requirements.splitlines() if "==" in line]
    assert len(pinned) == len(wheels) == requirements.count("--hash=sha256:")
    assert any(w.startswith("shopfloor-0.1.0-") for w in wheels)
    for name in ("pandas", "asyncua", "paho-mqtt", "waitress", "argon2-cffi", "cryptography"):
        assert any(p.startswith(name + "==") for p in pinned), name
    # the versions the test suite runs with: this environment's
    for name in ("pandas", "flask", "pydantic"):
        from importlib.metadata import version
        assert f"{name}=={version(name)}" in pinned
    build = dict(line.split("=", 1) for line in (house / "BUILD.txt").read_text().splitlines())
    assert build["python"] == "{}.{}".format(*sys.version_info[:2]) and build["sys_platform"] == "linux"
    for part in ("install.sh", "install.ps1", "operations.md", "example-config/factory.yaml", "SHA256SUMS"):
        assert (house / part).is_file(), part
    check = subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=house, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_installed_offline_the_commands_run(installed: Path, house: Path) -> None:
    shopfloor = installed / ".venv" / "bin" / "shopfloor"
    assert (installed / ".venv").is_symlink()
    # everything installed came from the wheelhouse, and nothing else was installed
    freeze = subprocess.run([str(installed / ".venv" / "bin" / "python"), "-m", "pip", "freeze", "--all"],
                            capture_output=True, text=True, check=True).stdout.split()
    pinned = [line.split(" ")[0] for line in (house / "requirements.txt").read_text().splitlines() if "==" in line]
    assert _normalized(p for p in freeze if not p.startswith(("pip==", "setuptools=="))) == _normalized(pinned)
    done = _offline([str(shopfloor), "check-config", str(installed / "example-config" / "factory.yaml")])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid" in done.stdout
    done = _offline([str(shopfloor), "--help"])
    assert done.returncode == 0 and "check-config" in done.stdout, done.stderr
    # the installed package is a wheel of its own, not this working tree
    where = _offline([str(installed / ".venv" / "bin" / "python"), "-c", "import agent; print(agent.__file__)"],
                     cwd="/")
    assert where.stdout.startswith(str(installed)), where.stdout + where.stderr


def test_a_damaged_wheel_is_refused_and_the_installed_version_stays(installed: Path, house: Path,
                                                                    tmp_path: Path) -> None:
    copy = tmp_path / "wheelhouse"
    shutil.copytree(house, copy, copy_function=os.link)
    victim = next((copy / "wheels").glob("six-*.whl"))
    whole = victim.read_bytes()
    victim.unlink()  # a link to the wheelhouse's file: the damage must stay in this copy
    victim.write_bytes(whole[:-100])  # cut short, as a copy broken off on a USB stick
    before = os.readlink(installed / ".venv")
    venvs = set((installed / "venvs").iterdir())
    done = _offline(["sh", str(copy / "install.sh"), "--prefix", str(installed), "--no-compile"])
    assert done.returncode == 2
    assert f"wheels/{victim.name}: FAILED" in done.stderr
    assert "the wheelhouse is damaged" in done.stderr and "nothing was installed" in done.stderr
    assert os.readlink(installed / ".venv") == before
    assert set((installed / "venvs").iterdir()) == venvs
    # without SHA256SUMS (or sha256sum), pip's hash check against requirements.txt refuses the wheel
    (copy / "SHA256SUMS").unlink()
    done = _offline(["sh", str(copy / "install.sh"), "--prefix", str(installed), "--no-compile"])
    assert done.returncode == 2
    assert "DO NOT MATCH THE HASHES" in done.stderr and victim.name.split("-")[0] in done.stderr
    assert "installing the wheels failed" in done.stderr and "installed version is unchanged" in done.stderr
    assert os.readlink(installed / ".venv") == before
    assert set((installed / "venvs").iterdir()) == venvs  # the half-made virtualenv is gone


def test_a_wheelhouse_for_another_python_or_windows_is_refused_with_the_way_out(house: Path, tmp_path: Path) -> None:
    copy = tmp_path / "wheelhouse"
    copy.mkdir()
    for part in ("install.sh", "requirements.txt", "wheels"):
        (copy / part).symlink_to(house / part)
    build = (house / "BUILD.txt").read_text()
    (copy / "BUILD.txt").write_text(build.replace(f"python={sys.version_info[0]}.{sys.version_info[1]}", "python=3.99"))
    done = subprocess.run(["sh", str(copy / "install.sh"), "--prefix", str(tmp_path / "opt"),
                           "--python", sys.executable], capture_output=True, text=True)
    assert done.returncode == 2
    have = "{}.{}".format(*sys.version_info[:2])
    assert "holds wheels for Python 3.99" in done.stderr and f"is Python {have}" in done.stderr
    assert "--python PATH" in done.stderr
    (copy / "BUILD.txt").write_text(build.replace("sys_platform=linux", "sys_platform=win32"))
    done = subprocess.run(["sh", str(copy / "install.sh"), "--prefix", str(tmp_path / "opt")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "on Windows run install.ps1" in done.stderr
    assert not (tmp_path / "opt").exists()


def test_windows_markers_are_followed_that_pip_evaluates_for_this_machine(house: Path) -> None:
    """pip leaves out `colorama; platform_system == "Windows"` (typer) when it downloads for win_amd64 on
    Linux: the walk over the wheels with Windows' markers finds it; Linux' markers need nothing more."""
    windows = wheelhouse.target_environment("win_amd64", "3.11")
    missing = wheelhouse.missing_requirements(house / "wheels", windows)
    assert [r.name for r in missing] == ["colorama"]
    assert wheelhouse.missing_requirements(house / "wheels", wheelhouse.target_environment(None, "3.11")) == []
    linux = wheelhouse.target_environment("manylinux_2_28_x86_64", "3.11")
    assert linux["platform_machine"] == "x86_64" and linux["sys_platform"] == "linux"


@pytest.mark.skipif(os.environ.get("SHOPFLOOR_TEST_WINDOWS_WHEELHOUSE") != "1",
                    reason="builds a second wheelhouse (20 s of CPU, more on a busy machine): `make test-wheelhouse` "
                           "runs it; the walk over Windows' markers is tested above on the Linux wheelhouse")
def test_windows_wheelhouse_holds_windows_wheels_and_what_windows_needs(tmp_path: Path) -> None:
    out = tmp_path / "wheelhouse-win"
    done = subprocess.run([sys.executable, str(ROOT / "deploy" / "wheelhouse.py"), "--out", str(out),
                           "--platform", "win_amd64"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheels = [p.name for p in (out / "wheels").glob("*.whl")]
    assert any(w.startswith("colorama-") for w in wheels) and any(w.startswith("tzdata-") for w in wheels)
    native = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert native and all(w.endswith("win_amd64.whl") for w in native), native
    assert "sys_platform=win32" in (out / "BUILD.txt").read_text()


def test_an_unknown_platform_is_refused() -> None:
    with pytest.raises(wheelhouse.WheelhouseError, match="win_amd64"):
        wheelhouse.target_environment("macosx_14_0_arm64", "3.11")


def test_an_older_linux_takes_the_wheels_of_every_older_glibc() -> None:
    """pip takes a `--platform manylinux_2_28_x86_64` literally and would refuse pydantic-core's manylinux2014
    wheel: the wheelhouse passes every tag such a PC accepts."""
    tags = wheelhouse.platform_tags("manylinux_2_28_x86_64")
    assert tags[0] == "manylinux_2_28_x86_64"
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert not any(t.startswith(("manylinux_2_29", "manylinux_2_34")) for t in tags)
    assert wheelhouse.platform_tags("win_amd64") == ["win_amd64"]
