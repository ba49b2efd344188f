"""Cores the process may use: the CPU affinity, capped by a container's CPU quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from videodag_service.cores import cgroup_cpu_quota, usable_cores


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "max 100000\n"}, None),  # cgroup v2, no limit
        ({"cpu.max": "150000 100000\n"}, 1.5),  # docker run --cpus 1.5
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1, no limit
        ({"cpu,cpuacct/cpu.cfs_quota_us": "200000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 2.0),
        ({"cpu.max": "garbage"}, None),
        ({}, None),
    ],
)
def test_the_cgroup_quota_is_read_from_v2_or_v1_files(tmp_path: Path, files: dict[str, str],
                                                       quota: float | None) -> None:
    for relative, text in files.items():
        write(tmp_path, relative, text)
    assert cgroup_cpu_quota(tmp_path) == quota


def test_a_quota_caps_the_affinity_rounded_up_and_never_below_one(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(tmp_path) == affinity  # no cgroup files: the affinity
    write(tmp_path, "cpu.max", "50000 100000")
    assert usable_cores(tmp_path) == 1
    write(tmp_path, "cpu.max", f"{(affinity + 5) * 100000} 100000")
    assert usable_cores(tmp_path) == affinity
    if affinity > 1:
        write(tmp_path, "cpu.max", "110000 100000")  # 1.1 CPUs: two threads can use them
        assert usable_cores(tmp_path) == 2


@pytest.mark.parametrize(
    ("proc_cgroup", "files", "quota"),
    [
        # cgroup v2: a systemd unit with CPUQuota=50%, its parent slice with none
        ("0::/system.slice/videodag.service\n",
         {"cpu.max": "max 100000\n", "system.slice/cpu.max": "max 100000\n",
          "system.slice/videodag.service/cpu.max": "50000 100000\n"}, 0.5),
        # a quota on a group above the process's own is the one that holds
        ("0::/limited/inner\n", {"limited/cpu.max": "100000 100000\n", "limited/inner/cpu.max": "max 100000\n"}, 1.0),
        # cgroup v1: the cpu controller's line names the group
        ("12:memory:/other\n4:cpu,cpuacct:/batch\n1:name=systemd:/\n",
         {"cpu,cpuacct/batch/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/batch/cpu.cfs_period_us": "100000\n",
          "memory/other/cpu.cfs_quota_us": "10000\n"}, 0.5),
        # a container's own view: the host's path it is named by is not there, its quota at the root is
        ("0::/docker/abc123\n", {"cpu.max": "150000 100000\n"}, 1.5),
        ("garbage without colons\n", {"cpu.max": "200000 100000\n"}, 2.0),
        ("0::/../../outside\n", {"cpu.max": "150000 100000\n"}, 1.5),  # a group outside the namespace's view
    ],
)
def test_the_quota_of_the_processs_own_group_and_those_above_it_counts(
    tmp_path: Path, proc_cgroup: str, files: dict[str, str], quota: float | None
) -> None:
    """Only the mount's root was read: a server in a systemd unit with CPUQuota=50% on a large
    host sized its frame workers and decoder threads by every core."""
    root = tmp_path / "cgroup"
    root.mkdir()
    for relative, text in files.items():
        write(root, relative, text)
    write(tmp_path, "self-cgroup", proc_cgroup)
    assert cgroup_cpu_quota(root, tmp_path / "self-cgroup") == quota
