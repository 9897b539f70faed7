"""A fingerprint of the machine results were measured on."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
             "asimd", "asimddp", "sve", "i8mm")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    return info


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def fingerprint() -> dict[str, Any]:
    """CPU model, cores, ISA features, memory, OS and Python; Jetson facts where readable."""
    cpu = _cpuinfo()
    flags = set((cpu.get("flags") or cpu.get("Features") or "").split())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    result: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu_model": cpu.get("model name") or cpu.get("Hardware") or platform.processor() or platform.machine(),
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "isa_features": sorted(f for f in ISA_FLAGS if f in flags),
        "memory_gb": _memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    model = _read("/proc/device-tree/model")
    if model:
        result["board_model"] = model
    l4t = _read("/etc/nv_tegra_release")
    if l4t:
        result["l4t_release"] = l4t.splitlines()[0]
    return result


def device_label(fp: dict[str, Any]) -> str:
    """Short name for tables: 'cpu: <model> (<n> cores)'."""
    return f"cpu: {fp.get('cpu_model')} ({fp.get('usable_cores')} cores)"
