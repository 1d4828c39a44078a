"""How many cores this process may really use: its CPU affinity, capped by a cgroup CPU quota.

``os.cpu_count()`` counts the host's cores; a container limited to 2 CPUs on a 64-core node
would start 64 workers and 64-thread pools fighting over two CPUs' worth of quota. The quota
(cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) rounded up is the
real budget, as Docker's ``--cpus``, compose's ``cpus`` and Kubernetes' ``limits.cpu`` set it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def _quota_v2(root: Path) -> float | None:
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _quota_v1(root: Path) -> float | None:
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpus(root: Path = CGROUP) -> float | None:
    """The CPU quota in cores, or None when there is none."""
    quota = _quota_v2(root)
    return quota if quota is not None else _quota_v1(root)


def available_cpus(root: Path = CGROUP) -> int:
    """Cores to plan threads and processes for (at least 1)."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpus(root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)
