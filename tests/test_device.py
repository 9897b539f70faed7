"""The device fingerprint: the cores a process can really use (CPU affinity and the cgroup CPU quota, the smaller),
its CPU facts from /proc/cpuinfo text, and the peak the efficiency column uses."""

import os

import pytest

from edgepipe.device import (
    cgroup_cpu_quota,
    core_limits,
    cpu_facts,
    fingerprint,
    parse_cpu_max,
    parse_cpuinfo,
    peak_estimate,
    usable_cores,
)
from edgepipe.pipeline.bench import add_efficiency, compute_kind
from edgepipe.results import Record, Status

#: /proc/cpuinfo of an AMD EPYC 7763 (Zen 3): AVX2 and FMA, no AVX-512, no VNNI (first lines of two CPUs)
EPYC_7763 = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 1
model name	: AMD EPYC 7763 64-Core Processor
cpu MHz		: 2445.406
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid aperfmperf rapl pni pclmulqdq monitor ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand lahf_lm cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit wdt tce topoext perfctr_core perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 invpcid_single hw_pstate ssbd mba ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid cqm rdt_a rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local clzero irperf xsaveerptr rdpru wbnoinvd amd_ppin brs arat npt lbrv svm_lock nrip_save tsc_scale vmcb_clean flushbyasid decodeassists pausefilter pfthreshold v_vmsave_vmload vgif v_spec_ctrl umip pku ospke vaes vpclmulqdq rdpid overflow_recov succor smca fsrm

processor	: 1
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7763 64-Core Processor
cpu MHz		: 1500.000
flags		: fpu avx avx2 fma
"""

#: /proc/cpuinfo of an Intel Xeon Platinum 8480+ (Sapphire Rapids): AVX-512 VNNI/BF16/FP16 and AMX
SAPPHIRE_RAPIDS = """processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 143
model name	: Intel(R) Xeon(R) Platinum 8480+
cpu MHz		: 2000.000
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch cpuid_fault fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 arat avx512vbmi umip avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid cldemote movdiri movdir64b fsrm serialize tsxldtrk amx_bf16 avx512_fp16 amx_tile amx_int8 arch_capabilities
"""


def _cpu(text):
    return cpu_facts(parse_cpuinfo(text))


def test_the_fingerprint_records_amx_and_the_avx512_extensions():
    epyc, spr = _cpu(EPYC_7763), _cpu(SAPPHIRE_RAPIDS)
    assert epyc["cpu_model"] == "AMD EPYC 7763 64-Core Processor" and epyc["cpu_mhz"] == 2445.4  # the first CPU's
    assert {"avx2", "fma"} <= set(epyc["isa_features"])
    assert not [f for f in epyc["isa_features"] if f.startswith(("avx512", "amx", "avx_vnni"))]
    assert {"amx_tile", "amx_int8", "amx_bf16", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni"} <= set(
        spr["isa_features"]
    )
    assert "amx_fp16" not in spr["isa_features"]  # Granite Rapids' addition
    assert set(fingerprint()["isa_features"]) <= set(_cpu(open("/proc/cpuinfo").read())["isa_features"])


def _peak(text, kind, threads=4):
    return peak_estimate({**_cpu(text), "cpu_mhz": 2000.0}, threads, kind)


def test_the_peak_estimate_uses_amx_for_int8_and_bf16():
    # 4 cores x 2 GHz x MACs per cycle per core
    assert _peak(SAPPHIRE_RAPIDS, "fp32")["gmacs_per_s"] == 4 * 2 * 32
    assert _peak(SAPPHIRE_RAPIDS, "int8")["gmacs_per_s"] == 4 * 2 * 1024
    assert _peak(SAPPHIRE_RAPIDS, "bf16")["gmacs_per_s"] == 4 * 2 * 512
    assert _peak(SAPPHIRE_RAPIDS, "fp16")["gmacs_per_s"] == 4 * 2 * 64  # AVX512_FP16: AMX-FP16 came later
    assert "AMX-INT8" in _peak(SAPPHIRE_RAPIDS, "int8")["basis"]
    without_amx = SAPPHIRE_RAPIDS.replace(" amx_bf16", "").replace(" amx_tile amx_int8", "")
    assert _peak(without_amx, "int8")["gmacs_per_s"] == 4 * 2 * 128  # AVX-512 VNNI
    assert _peak(without_amx, "bf16")["gmacs_per_s"] == 4 * 2 * 64  # AVX512_BF16
    # no int8 dot product and no bf16 unit: the fp32 FMA units' figure, and the basis says so
    for kind in ("fp32", "int8", "bf16"):
        assert _peak(EPYC_7763, kind)["gmacs_per_s"] == 4 * 2 * 16
    assert "int8 on the fp32 AVX2 FMA" in _peak(EPYC_7763, "int8")["basis"]
    assert peak_estimate({"isa_features": ["avx2"]}, 4, "int8") is None  # no clock: no estimate


@pytest.mark.parametrize(
    "precision, settings, kind",
    [
        ("int8", {}, "int8"),
        ("fp32", {"inference_precision": "f32"}, "fp32"),
        ("fp32", {"inference_precision": "bf16"}, "bf16"),
        ("fp16", {"inference_precision": "f16"}, "fp16"),
        ("fp16", {}, "fp32"),
    ],
)
def test_efficiency_is_judged_against_the_peak_of_the_precision_computed_in(precision, settings, kind):
    record = Record(
        "m",
        "f",
        precision,
        Status.OK,
        device="cpu",
        threads=2,
        batch_size=1,
        settings=settings,
        latency_ms={"p50": 1.0},
    )
    assert compute_kind(record) == kind
    device = {**_cpu(SAPPHIRE_RAPIDS), "cpu_mhz": 2000.0}
    add_efficiency(record, 10**6, device)
    assert record.efficiency["peak_gmacs_per_s"] == peak_estimate(device, 2, kind)["gmacs_per_s"]


def test_usable_cores_is_the_smaller_of_affinity_and_quota_rounded_down():
    assert usable_cores(8, None) == 8  # no quota: every CPU the process may run on
    assert usable_cores(8, 2.0) == 2
    assert usable_cores(8, 1.5) == 1  # 2 threads on one and a half CPUs are throttled
    assert usable_cores(2, 4.0) == 2
    assert usable_cores(4, 0.5) == 1


def test_cpu_max_text():
    assert parse_cpu_max("max 100000\n") is None
    assert parse_cpu_max("200000 100000\n") == 2.0
    assert parse_cpu_max("150000 100000") == 1.5
    assert parse_cpu_max("") is None and parse_cpu_max("garbage") is None


def test_the_tightest_quota_over_the_cgroup_and_its_ancestors(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")  # a cgroup v2 hierarchy
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "user.slice" / "job").mkdir(parents=True)
    (tmp_path / "user.slice" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "user.slice" / "job" / "cpu.max").write_text("300000 100000\n")
    assert cgroup_cpu_quota(tmp_path, "0::/user.slice/job\n") == 1.5
    assert cgroup_cpu_quota(tmp_path, "0::/\n") is None
    assert cgroup_cpu_quota(tmp_path, "0::/not/visible/here\n") is None  # a container's own root: root's cpu.max


def test_a_cgroup_v1_quota(tmp_path):
    cpu = tmp_path / "cpu,cpuacct"
    cpu.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text("250000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path, "3:cpu,cpuacct:/\n1:memory:/x\n0::/\n") == 2.5
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path, "3:cpu,cpuacct:/\n") is None


def test_this_machine():
    limits = core_limits()
    assert 1 <= limits["usable_cores"] <= limits["affinity_cores"] == len(os.sched_getaffinity(0))


def test_proc_sizes_are_read_in_kb_and_missing_ones_are_none(tmp_path):
    from edgepipe.device import proc_kb

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16318412 kB\nMemAvailable:    9000 kB\nBroken:\nHugePages_Total:       0\n")
    assert proc_kb(meminfo, "MemTotal") == 16318412
    assert proc_kb(meminfo, "MemAvailable") == 9000
    assert proc_kb(meminfo, "Mem") is None  # a prefix is not a field
    assert proc_kb(meminfo, "Broken") is None
    assert proc_kb(tmp_path / "absent", "MemTotal") is None
