"""How many cores this process may really use, for sizing its own parallelism.

The CPU affinity says which cores the scheduler may put the process on; a CPU quota
(`docker run --cpus 2`, a Kubernetes CPU limit, systemd's `CPUQuota=`) caps how much of them
it gets, and leaves the affinity at every core of the host. Sizing by the affinity alone would
give a 2-CPU container on a 64-core host 64 frame workers, each with a detector of its own.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
# Where cgroup v1 mounts the cpu controller's tree under the root (the names vary by distribution).
_V1_CPU_TREES = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def usable_cores(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """The CPU affinity's core count, capped by the cgroup CPU quota (rounded up), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs' worth of time the process may use per period: the smallest quota (cgroup v2
    `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`) of its own cgroup and those
    above it; None without a quota or a readable file.

    A container with its own view of the tree sees its group at the mount's root; a process in
    a group of the host's tree (a systemd unit's `CPUQuota=`, a child group) has its quota at
    the path `/proc/self/cgroup` names, which reading the root alone misses.
    """
    quotas = [quota for folder in _cpu_cgroup_folders(cgroup_root, proc_cgroup)
              if (quota := _quota_in(folder)) is not None]
    return min(quotas, default=None)


def _cpu_cgroup_folders(cgroup_root: Path, proc_cgroup: Path) -> list[Path]:
    """The roots of the v2 and v1 cpu trees, and every folder from the process's own group up."""
    trees = [cgroup_root, *(cgroup_root / name for name in _V1_CPU_TREES)]
    folders = list(trees)
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # the v2 tree
            bases = trees[:1]
        elif "cpu" in controllers.split(","):
            bases = trees[1:]
        else:
            continue
        relative = Path(path.strip().lstrip("/"))
        if ".." in relative.parts:  # a group outside this namespace's view: not under the mount
            continue
        for base in bases:
            folders.extend(base / parent for parent in (relative, *relative.parents) if parent != Path("."))
    return folders


def _quota_in(folder: Path) -> float | None:
    try:
        quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        pass
    try:
        quota_us = int((folder / "cpu.cfs_quota_us").read_text())
        period_us = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None
