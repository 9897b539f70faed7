"""A fingerprint of the machine results were measured on."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any

from edgepipe.errors import error_line

#: /proc/cpuinfo flags recorded in the fingerprint: the vector, dot-product and matrix units the peak
#: estimate and the engines' kernel choices depend on (x86: AVX-512 VNNI/BF16/FP16 and AMX; Arm: NEON
#: dot product, half precision, SVE, int8 matrix multiply)
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx_vnni",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
    "asimd",
    "asimddp",
    "asimdhp",
    "sve",
    "i8mm",
)


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first value of each 'key : value' line of /proc/cpuinfo text (the first CPU's entry)."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    return info


def _cpuinfo() -> dict[str, str]:
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return {}


def cpu_facts(cpu: dict[str, str]) -> dict[str, Any]:
    """CPU model, the recorded ISA features and the clock (MHz, where known) from parsed /proc/cpuinfo."""
    flags = set((cpu.get("flags") or cpu.get("Features") or "").split())
    facts: dict[str, Any] = {
        "cpu_model": cpu.get("model name") or cpu.get("Hardware") or platform.processor() or platform.machine(),
        "isa_features": sorted(f for f in ISA_FLAGS if f in flags),
    }
    mhz = _cpu_mhz(cpu)
    if mhz:
        facts["cpu_mhz"] = mhz
    return facts


def proc_kb(path: str | Path, field: str) -> int | None:
    """The size in kB a /proc file of ``Name:   value kB`` lines (/proc/meminfo, /proc/self/status) gives for
    ``field``; None where the file, the field or its number is missing (not Linux, a restricted /proc)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _memory_gb() -> float | None:
    total = proc_kb("/proc/meminfo", "MemTotal")
    return None if total is None else round(total / 1024**2, 1)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def fingerprint() -> dict[str, Any]:
    """CPU model, cores, ISA features, memory, OS and Python; Jetson facts where readable."""
    facts = cpu_facts(_cpuinfo())
    cores = core_limits()
    result: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu_model": facts["cpu_model"],
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        **cores,
        "isa_features": facts["isa_features"],
        "memory_gb": _memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    if "cpu_mhz" in facts:
        result["cpu_mhz"] = facts["cpu_mhz"]

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


def resolve_threads(threads: int | None) -> int:
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
            found += [
                _ratio(_read(str(d / "cpu.cfs_quota_us")) or "", _read(str(d / "cpu.cfs_period_us")) or "")
                for d in _cgroup_chain(base, path)
            ]
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
        return {"gpu": None, "gpu_unavailable": error_line(exc, 120)}


#: Multiply-accumulates per cycle per core by the data type a model computes in: the units to look for,
#: fastest first, as (ISA flag, MACs per cycle, unit). Each figure is the unit's peak throughput:
#: - AMX (Intel Sapphire Rapids and later): one TDPBUSD on full tiles is 16 x 16 x 64 = 16,384 int8 MACs,
#:   one TDPBF16PS (or TDPFP16PS) 16 x 16 x 32 = 8,192 bf16 (fp16) MACs, each issued every 16 cycles:
#:   1024 int8 and 512 bf16/fp16 MACs per cycle (Intel Architecture Day 2021: 2048 int8 and 1024 bf16
#:   operations per cycle per core; Intel 64 and IA-32 Architectures Optimization Reference Manual, AMX).
#: - AVX-512 with two FMA ports: fp32 2 x 16 FMAs; VNNI (VPDPBUSD) 2 x 64 int8 MACs; AVX512_BF16
#:   (VDPBF16PS) 2 x 32 bf16 MACs; AVX512_FP16 (VFMADDPH) 2 x 32 fp16 FMAs. CPUs with one 512-bit FMA
#:   port (some Xeon Silver/Bronze, AMD Zen 4's double-pumped units) reach half of these.
#: - AVX2/FMA: fp32 2 x 8 FMAs; AVX-VNNI (256-bit VPDPBUSD) 2 x 32 int8 MACs.
#: - Arm NEON: fp32 2 x 4 FMAs; SDOT 2 x 16 int8 MACs; half precision 2 x 8 FMAs.
#: Without a unit for the type (int8 without VNNI or SDOT, bf16 without AMX or AVX512_BF16), the fp32
#: figure is used. The basis is recorded with every estimate.
MACS_PER_CYCLE: dict[str, tuple[tuple[str, int, str], ...]] = {
    "fp32": (("avx512f", 32, "AVX-512 FMA"), ("avx2", 16, "AVX2 FMA"), ("asimd", 8, "NEON FMA")),
    "int8": (
        ("amx_int8", 1024, "AMX-INT8 TMUL"),
        ("avx512_vnni", 128, "AVX-512 VNNI"),
        ("avx_vnni", 64, "AVX-VNNI"),
        ("asimddp", 32, "NEON SDOT"),
    ),
    "bf16": (("amx_bf16", 512, "AMX-BF16 TMUL"), ("avx512_bf16", 64, "AVX512_BF16")),
    "fp16": (("amx_fp16", 512, "AMX-FP16 TMUL"), ("avx512_fp16", 64, "AVX512_FP16"), ("asimdhp", 16, "NEON FP16 FMA")),
}


def macs_per_cycle(isa_features, kind: str = "fp32") -> tuple[int, str] | None:
    """Peak MACs per cycle per core of a CPU with ``isa_features`` for data of type ``kind`` (fp32, int8,
    bf16, fp16; see MACS_PER_CYCLE) and the unit that gives them (the fp32 one where no unit computes
    ``kind``); None when no known unit is present."""
    isa = set(isa_features or ())
    for flag, per_cycle, unit in MACS_PER_CYCLE[kind]:
        if flag in isa:
            return per_cycle, f"{kind} {unit}"
    for flag, per_cycle, unit in MACS_PER_CYCLE["fp32"]:
        if flag in isa:
            return per_cycle, f"{kind} on the fp32 {unit}" if kind != "fp32" else f"fp32 {unit}"
    return None


def peak_estimate(fp: dict[str, Any], threads: int, kind: str = "fp32") -> dict[str, Any] | None:
    """Estimated peak of the CPU for ``threads`` cores computing in ``kind`` (fp32, int8, bf16, fp16):
    GMAC/s and how it was estimated; None when the clock or the vector unit is unknown."""
    mhz = fp.get("cpu_mhz")
    found = macs_per_cycle(fp.get("isa_features"), kind)
    if not mhz or found is None:
        return None
    per_cycle, unit = found
    return {
        "gmacs_per_s": round(threads * mhz / 1000 * per_cycle, 1),
        "basis": f"{threads} core(s) x {mhz / 1000:.2f} GHz x {per_cycle} MAC/cycle ({unit}, estimate)",
    }


def device_label(fp: dict[str, Any]) -> str:
    """Short name for tables: 'cpu: <model> (<n> cores)'."""
    return f"cpu: {fp.get('cpu_model')} ({fp.get('usable_cores')} cores)"


#: fingerprint fields that change only when the machine does (not the clock /proc/cpuinfo reports, which moves
#: with load, nor the software: engine versions are keyed separately)
IDENTITY_FIELDS = (
    "hostname",
    "cpu_model",
    "machine",
    "logical_cores",
    "usable_cores",
    "isa_features",
    "memory_gb",
    "os",
    "board_model",
    "l4t_release",
    "power_mode",
    "gpu",
)


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
