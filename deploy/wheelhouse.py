"""Build a wheelhouse: everything an edge PC without network access needs to install Shopfloor.

    python deploy/wheelhouse.py [--out dist/wheelhouse] [--platform win_amd64] [--python-version 3.11]

The wheelhouse holds the Shopfloor wheel and every runtime dependency as a wheel (`wheels/`), a
`requirements.txt` pinning each of them by exact version and SHA-256, the install scripts (`install.sh`,
`install.ps1`), the example config and docs/operations.md. docs/operations.md says how factory IT installs
from it.

The dependency versions are those of the Python environment running this script (the project's tested
virtualenv when run by `make wheelhouse`), so an edge PC gets what the test suite ran with; a dependency that
environment does not hold (one only Windows needs) resolves to the newest release the project allows.

Without `--platform` the wheels are for this machine (its OS, architecture and Python). With `--platform`
(e.g. `win_amd64`, or `manylinux_2_28_x86_64` for a Linux older than this one) only ready-built wheels are
taken (`--only-binary=:all:`) and pip resolves for that target. pip evaluates dependency markers
(`; platform_system == "Windows"`) for the machine it runs on, not for the target, so after downloading, this
script walks the requirements of every wheel with the target's markers and fetches what pip left out.
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROJECT = "shopfloor"
# Installers bring their own; pinning them from the build environment would only restrict the target.
NOT_PINNED = {PROJECT, "pip", "setuptools", "wheel"}


class WheelhouseError(Exception):
    """A wheelhouse cannot be built; the message says why and what to do."""


def target_environment(platform: str | None, python_version: str) -> dict[str, str]:
    """The marker environment (PEP 508) of the machine the wheelhouse is for."""
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    if platform is None:
        return env
    full = python_version if python_version.count(".") == 2 else python_version + ".0"
    env.update(python_version=".".join(python_version.split(".")[:2]), python_full_version=full,
               implementation_name="cpython", implementation_version=full,
               platform_python_implementation="CPython", platform_release="", platform_version="")
    if platform.startswith("win"):
        machine = {"win_amd64": "AMD64", "win_arm64": "ARM64", "win32": "x86"}.get(platform, "AMD64")
        env.update(os_name="nt", sys_platform="win32", platform_system="Windows", platform_machine=machine)
    elif "linux" in platform:
        machine = re.sub(r"^(manylinux|musllinux)(_\d+_\d+|\d+)?_|^linux_", "", platform)
        env.update(os_name="posix", sys_platform="linux", platform_system="Linux", platform_machine=machine)
    else:
        raise WheelhouseError(f"--platform {platform}: Shopfloor's wheelhouse is built for Windows (win_amd64) "
                              "or Linux (manylinux_2_28_x86_64 and the like)")
    return env


def platform_tags(platform: str) -> list[str]:
    """The wheel platform tags a target accepts: for `manylinux_2_28_x86_64` every older glibc too (down to
    manylinux1), which pip does not add by itself to a platform given on its command line."""
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform)
    if m is None:
        return [platform]
    glibc, arch = int(m.group(1)), m.group(2)
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags = []
    for minor in range(glibc, 4, -1):
        tags.append(f"manylinux_2_{minor}_{arch}")
        if minor in legacy:
            tags.append(f"{legacy[minor]}_{arch}")
    return tags


def build_environment_pins() -> list[str]:
    """`name==version` of every distribution in the Python environment running this script."""
    pins = {}
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if name and name not in NOT_PINNED:
            pins[name] = f"{name}=={dist.version}"
    return sorted(pins.values())


def source_tree(dest: Path) -> Path:
    """A copy of the project's files (tracked, or new and not ignored) to build the wheel from: a build in
    the working tree itself would pack whatever an earlier build left in build/."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True)
    if listed.returncode != 0:  # not a git checkout: an unpacked source archive
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "data", "test-artifacts"))
        return dest
    for rel in filter(None, listed.stdout.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the working tree is not part of it
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    print("+ pip " + " ".join(args), flush=True)
    done = subprocess.run(cmd)
    if done.returncode != 0:
        raise WheelhouseError(f"pip {args[0]} failed (exit {done.returncode}); its output is above")


def wheel_requirements(path: Path) -> list[Requirement]:
    """The Requires-Dist entries of a wheel's METADATA."""
    with zipfile.ZipFile(path) as wheel:
        meta = next(n for n in wheel.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        message = email.parser.BytesParser().parsebytes(wheel.read(meta), headersonly=True)
    return [Requirement(line) for line in message.get_all("Requires-Dist") or []]


def wheels_by_name(wheels: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted(wheels.glob("*.whl")):
        name = canonicalize_name(parse_wheel_filename(path.name)[0])
        if name in out:
            raise WheelhouseError(f"two wheels of {name} in {wheels}: {out[name].name} and {path.name}")
        out[name] = path
    return out


def missing_requirements(wheels: Path, env: dict[str, str]) -> list[Requirement]:
    """Requirements reachable from the Shopfloor wheel, with the target's markers, that no wheel satisfies."""
    have = wheels_by_name(wheels)
    missing: dict[str, Requirement] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(PROJECT, "")]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        if name not in have:
            continue
        for req in wheel_requirements(have[name]):
            if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
                continue
            dep = canonicalize_name(req.name)
            if dep not in have:
                missing.setdefault(dep, req)
                continue
            version = parse_wheel_filename(have[dep].name)[1]
            if not req.specifier.contains(version, prereleases=True):
                raise WheelhouseError(f"{name} requires {req}, the wheelhouse has {have[dep].name}")
            todo += [(dep, "")] + [(dep, e) for e in sorted(req.extras)]
    return list(missing.values())


def write_requirements(out: Path, wheels: Path, header: str) -> list[str]:
    """requirements.txt: each wheel by exact version and SHA-256 (pip's hash-checking mode)."""
    lines = [header]
    names = []
    for name, path in wheels_by_name(wheels).items():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        version = parse_wheel_filename(path.name)[1]
        lines.append(f"{name}=={version} \\\n    --hash=sha256:{digest}")
        names.append(f"{name}=={version}")
    (out / "requirements.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return names


def git_commit() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if done.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return done.stdout.strip() + ("+local-changes" if dirty else "")


def build(out: Path, platform: str | None, python_version: str, pins: list[str]) -> Path:
    """Build the wheelhouse into `out` (replaced as a whole once complete) and return it."""
    env = target_environment(platform, python_version)
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    wheels = work / "wheels"
    wheels.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="shopfloor-wheelhouse-") as tmp:
        src = source_tree(Path(tmp) / "src")
        pip("wheel", "--no-deps", "--wheel-dir", str(wheels), str(src))
        project = next(wheels.glob(f"{PROJECT}-*.whl"))
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n", encoding="utf-8")
        target = (["--only-binary=:all:", *[a for tag in platform_tags(platform) for a in ("--platform", tag)],
                   "--python-version", python_version, "--implementation", "cp"] if platform else [])
        if platform:
            pip("download", "--dest", str(wheels), *target, "--constraint", str(constraints), str(project))
        else:  # for this machine: a dependency published only as source is built into a wheel here
            pip("wheel", "--wheel-dir", str(wheels), "--constraint", str(constraints), str(project))
        fetched: set[str] = set()
        while missing := missing_requirements(wheels, env):
            # the marker held for the target already: pip would evaluate it again, for this machine
            wanted = [f"{r.name}{'[' + ','.join(sorted(r.extras)) + ']' if r.extras else ''}{r.specifier}"
                      for r in missing]
            if fetched & set(wanted):
                raise WheelhouseError(f"no wheel for {platform or 'this machine'} satisfies {', '.join(wanted)}")
            fetched.update(wanted)
            print("for the target's markers also: " + ", ".join(wanted), flush=True)
            pip("download", "--dest", str(wheels), *(target or ["--only-binary=:all:"]),
                "--constraint", str(constraints), *wanted)
        version = parse_wheel_filename(project.name)[1]
        tag = platform or sysconfig.get_platform()
        built = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        names = write_requirements(work, wheels, f"# Shopfloor {version} for CPython {python_version} on {tag}, "
                                                 f"built {built}: every wheel by version and SHA-256. Install "
                                                 "with install.sh or install.ps1 (docs/operations.md).")
    # the same resolution the edge PC will make, from these files only
    pip("install", "--dry-run", "--quiet", "--ignore-installed", "--no-index", "--find-links", str(wheels),
        *(["--target", str(work / "dry-run"), *target] if platform else []), "--requirement",
        str(work / "requirements.txt"))
    shutil.rmtree(work / "dry-run", ignore_errors=True)
    for script in ("install.sh", "install.ps1"):
        shutil.copy2(DEPLOY / script, work / script)
    (work / "install.sh").chmod(0o755)
    shutil.copytree(ROOT / "config", work / "example-config")
    shutil.copy2(ROOT / "docs" / "operations.md", work / "operations.md")
    (work / "BUILD.txt").write_text(
        f"shopfloor={version}\npython={'.'.join(python_version.split('.')[:2])}\n"
        f"platform={platform or sysconfig.get_platform() + ' (the machine that built it)'}\n"
        f"sys_platform={env['sys_platform']}\nbuilt={built}\ncommit={git_commit()}\n"
        f"wheels={len(names)}\n", encoding="utf-8")
    sums = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(work).as_posix()}"
            for p in sorted(work.rglob("*")) if p.is_file()]
    (work / "SHA256SUMS").write_text("\n".join(sums) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    work.rename(out)
    print(f"wheelhouse for CPython {python_version} on {tag}: {out} ({len(names)} wheels, "
          f"{sum(p.stat().st_size for p in out.rglob('*') if p.is_file()) / 1e6:.0f} MB)")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wheelhouse.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "wheelhouse",
                        help="directory to create (replaced if it exists); default dist/wheelhouse")
    parser.add_argument("--platform", help="wheel platform tag of the target: win_amd64, manylinux_2_28_x86_64, "
                                           "...; default: this machine")
    parser.add_argument("--python-version", default="{}.{}".format(*sys.version_info[:2]),
                        help="the target's Python (major.minor); default: the Python running this script")
    parser.add_argument("--pins", type=Path, help="a constraints file of exact versions instead of the versions "
                                                  "of the environment running this script")
    args = parser.parse_args(argv)
    if args.platform is None and args.python_version != "{}.{}".format(*sys.version_info[:2]):
        parser.error("--python-version other than this Python's needs --platform (the target's wheel tag)")
    pins = (args.pins.read_text(encoding="utf-8").splitlines() if args.pins else build_environment_pins())
    try:
        build(args.out.resolve(), args.platform, args.python_version, pins)
    except WheelhouseError as exc:
        print(f"wheelhouse: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
