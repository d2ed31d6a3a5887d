"""What a run ran on, for benchmark reports and evaluation summaries: platform, CPU model, cores, RAM."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> dict:
    """``platform``, ``python``, ``cpu`` (model name), ``nproc`` (usable cores), ``ram`` (GiB)."""
    cpu = _proc_field("/proc/cpuinfo", "model name") or "unknown"
    mem_kb = _proc_field("/proc/meminfo", "MemTotal")
    ram = f"{int(mem_kb.split()[0]) / 1024**2:.1f} GiB" if mem_kb else "unknown"
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "nproc": nproc, "ram": ram}
