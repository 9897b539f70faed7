"""A fingerprint of the machine results were measured on."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any, Optional

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
    cores = core_limits()
    result: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu_model": cpu.get("model name") or cpu.get("Hardware") or platform.processor() or platform.machine(),
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        **cores,
        "isa_features": sorted(f for f in ISA_FLAGS if f in flags),
        "memory_gb": _memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    mhz = _cpu_mhz(cpu)
    if mhz:
        result["cpu_mhz"] = mhz
    result["engine_versions"] = library_versions()
    model = _read("/proc/device-tree/model")
    if model:
        result["board_model"] = model
    l4t = _read("/etc/nv_tegra_release")
    if l4t:
        result["l4t_release"] = l4t.splitlines()[0]
    power = _nvpmodel()
    if power:
        result["power_mode"] = power
    result.update(_gpu())
    return result


#: where the kernel mounts the cgroup hierarchies (v2 alone, or v1 controllers beside a v2 'unified' one)
CGROUP_ROOT = Path("/sys/fs/cgroup")


def core_limits() -> dict[str, Any]:
    """This process's usable cores (see :func:`usable_cores`) and what they were derived from:
    {"usable_cores", "affinity_cores", "cpu_quota"} (cpu_quota in CPUs, None when unlimited or unreadable)."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return {"usable_cores": usable_cores(affinity, quota), "affinity_cores": affinity, "cpu_quota": quota}


def resolve_threads(threads: Optional[int]) -> int:
    """``threads``, or when it is not set the cores this process can really use (affinity and cgroup quota)."""
    return threads or core_limits()["usable_cores"]


def usable_cores(affinity: int, quota: float | None) -> int:
    """The cores a process can really use: the smaller of the CPUs it may run on (``affinity``, from
    ``os.sched_getaffinity``) and its cgroup CPU ``quota`` in CPUs (None: no limit), rounded down, at least 1.

    More threads than this wait for a core (or for the quota's next period): their latency measures
    contention, not the model.
    """
    return affinity if quota is None else max(1, min(affinity, math.floor(quota + 1e-9)))


def parse_cpu_max(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` text ("QUOTA PERIOD" in microseconds, or "max PERIOD" for no
    limit); None for no limit or text that is not of that form."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    return _ratio(parts[0], parts[1])


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return round(q / p, 3) if q > 0 and p > 0 else None  # v1 writes -1 for no limit


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> float | None:
    """The tightest CPU quota over this process's cgroup and its ancestors, in CPUs (1.5 = one and a half),
    from ``proc_cgroup`` (the text of /proc/self/cgroup) and the hierarchies under ``root``; None when no
    quota is set or none can be read (not Linux, no cgroup mounted)."""
    text = _read("/proc/self/cgroup") if proc_cgroup is None else proc_cgroup
    found = []
    for line in (text or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:  # v2: one hierarchy, limit in cpu.max
            base = root if (root / "cgroup.controllers").exists() else root / "unified"
            found += [parse_cpu_max(_read(str(d / "cpu.max")) or "") for d in _cgroup_chain(base, path)]
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own hierarchy
            base = next((d for d in (root / controllers, root / "cpu") if d.is_dir()), root / "cpu")
            found += [_ratio(_read(str(d / "cpu.cfs_quota_us")) or "", _read(str(d / "cpu.cfs_period_us")) or "")
                      for d in _cgroup_chain(base, path)]
    limits = [q for q in found if q is not None]
    return min(limits) if limits else None


def _cgroup_chain(base: Path, path: str) -> list[Path]:
    """A cgroup's directory and its ancestors up to ``base``; just ``base`` when the path is not visible
    there (a container that sees its own cgroup as the root)."""
    own = base / path.strip("/")
    if not path.strip("/") or not own.is_dir():
        return [base]
    chain = [own]
    while chain[-1] != base and base in chain[-1].parents:
        chain.append(chain[-1].parent)
    return chain


def _cpu_mhz(cpu: dict[str, str]) -> float | None:
    """Maximum clock (cpufreq) where the kernel exposes it, else the clock /proc/cpuinfo reports."""
    khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if khz and khz.isdigit():
        return round(int(khz) / 1000, 1)
    try:
        return round(float(cpu.get("cpu MHz", "")), 1)
    except ValueError:
        return None


def _nvpmodel() -> str | None:
    """Jetson power mode from ``nvpmodel -q`` (e.g. 'NV Power Mode: MAXN'), where the tool exists."""
    import shutil
    import subprocess

    tool = shutil.which("nvpmodel")
    if not tool:
        return None
    try:
        out = subprocess.run([tool, "-q"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return "; ".join(lines[:2]) or None


def _gpu() -> dict[str, Any]:
    from edgepipe.gpu import cuda_facts, cuda_unavailable

    reason = cuda_unavailable()
    if reason:
        return {"gpu": None, "gpu_unavailable": reason}
    try:
        return {"gpu": cuda_facts()}
    except Exception as exc:  # a CUDA device that will not describe itself: say why
        return {"gpu": None, "gpu_unavailable": f"{type(exc).__name__}: {str(exc)[:120]}"}


#: multiply-accumulates per cycle per core, assuming two FMA pipes (fp32) and the dot-product
#: instructions for int8 (VNNI on x86, SDOT on Arm); the basis is recorded with every estimate
MACS_PER_CYCLE = [
    ("avx512f", 32, ("avx512_vnni", 128)),
    ("avx2", 16, ("avx_vnni", 64)),
    ("asimd", 8, ("asimddp", 32)),
]


def peak_estimate(fp: dict[str, Any], threads: int, integer: bool = False) -> dict[str, Any] | None:
    """Estimated peak of the CPU for ``threads`` cores: GMAC/s and how it was estimated (None if unknown)."""
    mhz = fp.get("cpu_mhz")
    isa = set(fp.get("isa_features") or ())
    for flag, fp32, (int8_flag, int8) in MACS_PER_CYCLE:
        if flag in isa and mhz:
            per_cycle = int8 if integer and int8_flag in isa else fp32
            kind = f"int8 {int8_flag}" if integer and int8_flag in isa else f"fp32 {flag} FMA"
            gmacs = threads * mhz / 1000 * per_cycle
            return {"gmacs_per_s": round(gmacs, 1),
                    "basis": f"{threads} core(s) x {mhz / 1000:.2f} GHz x {per_cycle} MAC/cycle ({kind}, estimate)"}
    return None


def device_label(fp: dict[str, Any]) -> str:
    """Short name for tables: 'cpu: <model> (<n> cores)'."""
    return f"cpu: {fp.get('cpu_model')} ({fp.get('usable_cores')} cores)"


#: fingerprint fields that change only when the machine does (not the clock /proc/cpuinfo reports, which moves
#: with load, nor the software: engine versions are keyed separately)
IDENTITY_FIELDS = ("hostname", "cpu_model", "machine", "logical_cores", "usable_cores", "isa_features", "memory_gb", "os",
                   "board_model", "l4t_release", "power_mode", "gpu")


def identity_digest(fp: dict[str, Any]) -> str:
    """SHA-256 of the machine's stable facts in a fingerprint: equal digests, the same device as far as timing goes."""
    from edgepipe.fileio import sha256_value

    return sha256_value({k: fp.get(k) for k in IDENTITY_FIELDS})


def library_versions() -> dict[str, str]:
    from importlib import metadata

    from edgepipe.backends import tracked_packages
    from edgepipe.versions import CORE_PACKAGES

    versions = {"python": platform.python_version()}
    for name in (*CORE_PACKAGES, *tracked_packages()):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
