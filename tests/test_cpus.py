"""How many CPUs maskc uses by default: the affinity mask capped by the cgroup's CPU quota
(``maskc.parallel.usable_cpus``), read from cgroup trees built here."""

from __future__ import annotations

import os

from maskc.parallel import usable_cpus


def _tree(tmp_path, cgroup: str, files: dict[str, str]):
    root = tmp_path / "cg"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    return str(root), str(proc)


def test_no_quota_is_the_affinity(tmp_path):
    root, proc = _tree(tmp_path, "0::/a\n", {"a/cpu.max": "max 100000\n"})
    assert usable_cpus(root, proc) == len(os.sched_getaffinity(0))


def test_cgroup_v2_quota_rounds_up_and_parents_count(tmp_path):
    n = len(os.sched_getaffinity(0))
    root, proc = _tree(tmp_path, "0::/a/b\n", {"a/b/cpu.max": "50000 100000\n"})
    assert usable_cpus(root, proc) == 1  # half a CPU: one thread
    root, proc = _tree(
        tmp_path / "2", "0::/a/b\n", {"a/b/cpu.max": "max 100000\n", "a/cpu.max": "150000 100000"}
    )
    assert usable_cpus(root, proc) == min(n, 2)  # the parent's 1.5 CPUs: two threads


def test_cgroup_v1_quota(tmp_path):
    root, proc = _tree(
        tmp_path,
        "4:cpu,cpuacct:/\n",
        {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"},
    )
    assert usable_cpus(root, proc) == 1
    root, proc = _tree(tmp_path / "2", "4:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n"})
    assert usable_cpus(root, proc) == len(os.sched_getaffinity(0))


def test_unreadable_or_odd_files_fall_back_to_the_affinity(tmp_path):
    root, proc = _tree(tmp_path, "garbage\n0::/x\n", {"x/cpu.max": "lots\n"})
    assert usable_cpus(root, proc) == len(os.sched_getaffinity(0))
    assert usable_cpus(str(tmp_path / "none"), str(tmp_path / "none")) >= 1
