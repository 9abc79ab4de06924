"""Child processes of a benchmark: start, wait for readiness, sample CPU and memory, stop for sure."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from simulators import harness

ROOT = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """A benchmark could not run (a process died or never became ready); the message says which and why."""


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll `condition` until it returns something truthy; BenchError naming `what` on timeout."""
    return harness.wait_until(condition, timeout, what, every, error=BenchError)


class Proc:
    """One `python -m shopfloor ...` child with its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", "shopfloor", *argv]
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self._ps: psutil.Process | None = None
        self._cpu_seen = 0.0  # last CPU time read: what the process had used when it exited

    def start(self, ready: str | None = None, timeout: float = 60) -> Proc:
        """Start; with `ready`, wait until that text is in the log (BenchError if the process dies first)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                          stdin=subprocess.DEVNULL)
        self._ps = psutil.Process(self.popen.pid)
        if ready:
            wait_until(lambda: ready in self.log() or not self.running, timeout, f"{self.name}: {ready!r}")
            self.check()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check(self) -> None:
        """BenchError with the end of the log if the process is no longer running."""
        if not self.running:
            code = self.popen.returncode if self.popen else None
            raise BenchError(f"{self.name} exited with {code}:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far; once the process is gone, the last figure read."""
        try:
            assert self._ps is not None
            t = self._ps.cpu_times()
            self._cpu_seen = float(t.user + t.system)
        except (psutil.Error, AssertionError):
            pass
        return self._cpu_seen

    def peak_rss_mb(self) -> float:
        """Peak resident set size (VmHWM) in MB; 0 where /proc is not available."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except (OSError, ValueError):
            pass
        return 0.0

    def rss_mb(self) -> float:
        try:
            assert self._ps is not None
            return float(self._ps.memory_info().rss) / 2**20
        except (psutil.Error, AssertionError):
            return 0.0

    def send(self, sig: int = signal.SIGTERM) -> None:
        """Send a signal without waiting (several processes can then stop in parallel)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Signal and wait; SIGKILL when it does not exit within `timeout`."""
        if self.popen is None or self.popen.poll() is not None:
            return self.popen.returncode if self.popen else None
        self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(10)


class CpuMeter:
    """CPU used by some processes between `start()` and `stop()`, as % of one core."""

    def __init__(self, procs: dict[str, Proc], extra_pids: dict[str, int] | None = None) -> None:
        self.procs = procs
        self.extra = {name: psutil.Process(pid) for name, pid in (extra_pids or {}).items()}
        self._t0 = 0.0
        self._cpu0: dict[str, float] = {}
        self._sys0: Any = None
        self.result: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        out = {name: p.cpu_s() for name, p in self.procs.items()}
        for name, ps in self.extra.items():
            with contextlib.suppress(psutil.Error):
                t = ps.cpu_times()
                out[name] = float(t.user + t.system)
        me = psutil.Process().cpu_times()
        out["bench"] = float(me.user + me.system)
        return out

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = self._sample()
        self._sys0 = psutil.cpu_times()

    def tick(self) -> None:
        """Read every process's CPU time now, so one that exits before `stop()` keeps its last figure."""
        for p in self.procs.values():
            p.cpu_s()

    def stop(self) -> dict[str, float]:
        wall = max(1e-6, time.monotonic() - self._t0)
        now = self._sample()
        self.result = {name: 100.0 * (now[name] - self._cpu0.get(name, 0.0)) / wall for name in now}
        sys1 = psutil.cpu_times()
        busy = (sum(sys1) - sys1.idle) - (sum(self._sys0) - self._sys0.idle)
        total = sum(sys1) - sum(self._sys0)
        # Whole machine, as % of all cores: shows when the 2-core box itself was the limit.
        self.result["machine_total_pct_of_all_cores"] = 100.0 * busy / total if total > 0 else 0.0
        return self.result


def http_get(port: int, path: str, timeout: float = 5) -> tuple[int, str]:
    """GET http://127.0.0.1:<port><path> -> (status, body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(port: int, name: str, labels: str = "") -> float:
    """Sum of a Prometheus metric's samples on the agent's /metrics (optionally only lines containing `labels`)."""
    total = 0.0
    for line in http_get(port, "/metrics")[1].splitlines():
        if line.startswith("#"):
            continue
        key = line.split(" ")[0]
        if key.split("{")[0] == name and labels in key:
            total += float(line.rsplit(" ", 1)[1])
    return total


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file written with temp file + rename, or None when it is not there (yet)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
