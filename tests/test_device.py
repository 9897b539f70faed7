"""The cores a process can really use: CPU affinity and the cgroup CPU quota, the smaller."""

import os

from edgepipe.device import cgroup_cpu_quota, core_limits, parse_cpu_max, usable_cores


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
