"""How many CPU threads inference should use by default: the CPUs this process may run on.

`os.cpu_count()` counts every CPU of the machine. A process pinned to a few of them
(taskset, numactl, a job scheduler) or a container given a CPU quota (docker --cpus,
Kubernetes limits) that starts one thread per machine CPU oversubscribes what it was
given, and every intra-op barrier then waits for descheduled threads.
"""
from __future__ import annotations

import math
import os

CGROUP_ROOT = "/sys/fs/cgroup"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_cpu_limit(root: str = CGROUP_ROOT) -> int | None:
    """CPUs allowed by the cgroup's CPU quota (rounded up), or None when unlimited or unknown.

    cgroup v2: `cpu.max` holds "QUOTA PERIOD" or "max PERIOD"; cgroup v1:
    `cpu/cpu.cfs_quota_us` (-1 = unlimited) and `cpu/cpu.cfs_period_us`."""
    v2 = _read(os.path.join(root, "cpu.max"))
    if v2 is not None:
        fields = v2.split()
        quota, period = (fields + ["100000"])[:2]
    else:
        quota = _read(os.path.join(root, "cpu", "cpu.cfs_quota_us"))
        period = _read(os.path.join(root, "cpu", "cpu.cfs_period_us"))
    try:
        quota_us, period_us = int(quota), int(period)
    except (TypeError, ValueError):  # "max", a missing file or an unexpected format: no limit known
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return max(1, math.ceil(quota_us / period_us))


def available_cpus(cgroup_root: str = CGROUP_ROOT) -> int:
    """CPUs in this process's affinity mask (all CPUs where the OS has no such mask),
    capped by the cgroup CPU quota."""
    if hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_root)
    return max(1, min(count, limit) if limit is not None else count)
