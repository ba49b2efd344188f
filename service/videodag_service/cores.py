"""How many cores this process may really use, for sizing its own parallelism.

The CPU affinity says which cores the scheduler may put the process on; a container's CPU
quota (`docker run --cpus 2`, a Kubernetes CPU limit) caps how much of them it gets, and
leaves the affinity at every core of the host. Sizing by the affinity alone would give a
2-CPU container on a 64-core host 64 frame workers, each with a detector of its own.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The CPU affinity's core count, capped by the cgroup CPU quota (rounded up), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """CPUs' worth of time the cgroup may use per period (cgroup v2 `cpu.max`, or v1
    `cpu.cfs_quota_us` / `cpu.cfs_period_us`); None without a quota or a readable file."""
    try:
        quota, _, period = (cgroup_root / "cpu.max").read_text().strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for folder in ("cpu", "cpu,cpuacct"):
        try:
            quota_us = int((cgroup_root / folder / "cpu.cfs_quota_us").read_text())
            period_us = int((cgroup_root / folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    return None
