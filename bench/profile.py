"""Where the agent's CPU goes: a py-spy recording summarised as top functions (self and inclusive) per thread.

Recorded with `--gil`: only the thread holding the GIL is sampled. The agent is one Python process whose
threads (asyncio loop, paho network thread, ingest, drain) share one GIL, so that is where its throughput goes;
without it, threads waiting for the GIL would show as busy in whatever frame they wait.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

RATE_HZ = 100
TOP = 15
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    """The py-spy next to this interpreter (the venv's), else on PATH."""
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def _short(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`: lines split one function into many rows."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m.group("file").replace("\\", "/")
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    else:
        file = "/".join(file.split("/")[-2:])
    return f"{m.group('func')} ({file})"


# Frames every sample of a thread passes through: they say nothing about where the time goes.
_WRAPPERS = ("main (", "<module> (", "cmd_agent (", "Agent.run (", "Agent.run_async (", "Pipeline._guard.")


def _is_project(frame: str) -> bool:
    m = _FRAME.match(frame)
    file = m.group("file").replace("\\", "/") if m else ""
    # Paths are relative to the agent's working directory (agent/...) or absolute (/.../agent/...).
    if "/site-packages/" in file or "/agent/" not in "/" + file:
        return False
    return not _short(frame).startswith(_WRAPPERS)


def summarise(raw: str, seconds: float) -> dict[str, Any]:
    """Top functions from py-spy's raw (collapsed stack) output recorded with --threads."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()  # the project's own functions only: the rest is asyncio/runpy framing
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:]
        if not frames:
            continue
        total += count
        threads[thread] += count
        self_time[_short(frames[-1])] += count
        for name in {_short(f) for f in frames if _is_project(f)}:
            inclusive[name] += count

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": name, "pct": round(100.0 * n / total, 1),
                 "cpu_ms_per_s": round(1000.0 * n / RATE_HZ / seconds, 1)} for name, n in counter.most_common(TOP)]

    return {"seconds": seconds, "samples": total, "rate_hz": RATE_HZ,
            "gil_held_pct": round(100.0 * total / RATE_HZ / seconds, 1) if seconds else 0.0,
            "threads": rows(threads), "self": rows(self_time), "inclusive": rows(inclusive)}


class Recording:
    """A py-spy recording running beside the agent (non-blocking: the agent is never paused)."""

    def __init__(self, pid: int, seconds: float, out: Path) -> None:
        self.seconds = int(max(1, seconds))
        self.out = out
        self.error: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        exe = py_spy()
        if exe is None:
            self.error = "py-spy not installed"
            return
        cmd = [exe, "record", "--pid", str(pid), "--duration", str(self.seconds), "--rate", str(RATE_HZ),
               "--format", "raw", "--output", str(out), "--threads", "--nonblocking", "--gil"]
        try:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        except OSError as exc:
            self.error = f"py-spy failed: {exc}"

    def finish(self) -> dict[str, Any]:
        """Wait for the recording to end and summarise it (or say why there is none)."""
        if self._proc is not None:
            try:
                output, _ = self._proc.communicate(timeout=self.seconds + 60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                output, _ = self._proc.communicate()
            if self._proc.returncode != 0 or not self.out.exists():
                self.error = f"py-spy exited with {self._proc.returncode}: {(output or '')[-500:]}"
        if self.error:
            return {"error": self.error}
        return summarise(self.out.read_text(errors="replace"), self.seconds)

    def stop(self) -> None:
        """Kill a recording still running (on an error path)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


def record(pid: int, seconds: float, out: Path) -> dict[str, Any]:
    """Sample `pid` for `seconds` and summarise."""
    return Recording(pid, seconds, out).finish()
