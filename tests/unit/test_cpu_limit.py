"""Torch threads follow the container's CPU limit: cgroup v2 and v1, over fake cgroup files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnemo_embedder.model import cpu_limit


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text + "\n")


@pytest.mark.parametrize(
    ("files", "cgroup", "expected"),
    [
        # cgroup v2
        ({"cpu.max": "200000 100000"}, "0::/", 2),
        ({"cpu.max": "150000 100000"}, "0::/", 2),  # 1.5 CPUs: two threads
        ({"cpu.max": "50000 100000"}, "0::/", 1),
        ({"cpu.max": "max 100000"}, "0::/", None),
        # cgroup v1 at the controller's mount root (what a container sees)
        (
            {"cpu,cpuacct/cpu.cfs_quota_us": "300000", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
            "4:cpu,cpuacct:/",
            3,
        ),
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, "4:cpu:/", None),
        ({"cpu/cpu.cfs_quota_us": "25000", "cpu/cpu.cfs_period_us": "100000"}, "", 1),
        # cgroup v1, this process's own cgroup below the root (a host without cgroupns)
        (
            {
                "cpu,cpuacct/cpu.cfs_quota_us": "-1",
                "cpu,cpuacct/cpu.cfs_period_us": "100000",
                "cpu,cpuacct/docker/ab12/cpu.cfs_quota_us": "400000",
                "cpu,cpuacct/docker/ab12/cpu.cfs_period_us": "100000",
            },
            "12:memory:/docker/ab12\n4:cpu,cpuacct:/docker/ab12\n1:name=systemd:/docker/ab12",
            4,
        ),
        # nothing readable: no limit known
        ({}, "", None),
        ({"cpu/cpu.cfs_quota_us": "garbage", "cpu/cpu.cfs_period_us": "100000"}, "", None),
    ],
)
def test_cpu_limit(
    tmp_path: Path, files: dict[str, str], cgroup: str, expected: int | None
) -> None:
    root = tmp_path / "sys-fs-cgroup"
    root.mkdir()
    write(root, files)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(cgroup + "\n")
    assert cpu_limit(root, proc) == expected
