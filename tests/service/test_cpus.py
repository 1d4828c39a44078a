"""The cores a process may use: its affinity, capped by a container's CPU quota (cgroup v2 or v1),
so that a container limited to 2 CPUs on a large node starts 2 workers, not one per node core."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.cpus import available_cpus, cgroup_cpus

AFFINITY = len(os.sched_getaffinity(0))


def v2(root: Path, text: str) -> Path:
    (root / "cpu.max").write_text(text)
    return root


def v1(root: Path, quota: int, period: int) -> Path:
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


@pytest.mark.parametrize(
    ("text", "cores"), [("max 100000\n", None), ("200000 100000\n", 2.0), ("150000 100000", 1.5)]
)
def test_cgroup_v2_quota(tmp_path: Path, text: str, cores: float | None) -> None:
    assert cgroup_cpus(v2(tmp_path, text)) == cores


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    assert cgroup_cpus(v1(tmp_path, 50_000, 100_000)) == 0.5


def test_cgroup_v1_without_quota(tmp_path: Path) -> None:
    assert cgroup_cpus(v1(tmp_path, -1, 100_000)) is None


def test_no_cgroup_files_mean_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpus(tmp_path) is None
    assert available_cpus(tmp_path) == AFFINITY


def test_a_quota_caps_the_affinity_rounded_up(tmp_path: Path) -> None:
    assert available_cpus(v2(tmp_path, "50000 100000")) == 1  # half a CPU: still one worker
    assert available_cpus(v2(tmp_path, f"{100_000 * (AFFINITY + 8)} 100000")) == AFFINITY
    if AFFINITY >= 2:
        assert available_cpus(v2(tmp_path, "150000 100000")) == 2
