"""The counts of free space: what any writer may use, what this process may use, the inodes left."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import videodag_service.disk_space as disk_space_module
from videodag_service.disk_space import free_bytes, free_bytes_for_this_process, free_inodes, out_of_inodes


def a_disk(monkeypatch: pytest.MonkeyPatch, real: os.statvfs_result, **fields: int) -> None:
    """Every statvfs answers as `real` with `fields` changed."""
    names = ["f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail", "f_flag",
             "f_namemax"]
    values = list(real)
    for name, value in fields.items():
        values[names.index(name)] = value
    monkeypatch.setattr(disk_space_module.os, "statvfs", lambda path: os.statvfs_result(values))


def test_free_bytes_leaves_out_roots_blocks_as_shutil_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a_disk(monkeypatch, os.statvfs(tmp_path), f_bfree=10, f_bavail=4)  # a disk that stays put while read twice
    assert free_bytes(tmp_path) == shutil.disk_usage(tmp_path).free


@pytest.mark.parametrize(("euid", "blocks"), [(0, 10), (1000, 4)])
def test_this_process_counts_roots_blocks_when_it_is_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, euid: int, blocks: int
) -> None:
    real = os.statvfs(tmp_path)
    a_disk(monkeypatch, real, f_bfree=10, f_bavail=4)
    monkeypatch.setattr(disk_space_module.os, "geteuid", lambda: euid)
    assert free_bytes_for_this_process(tmp_path) == blocks * real.f_frsize
    assert free_bytes(tmp_path) == 4 * real.f_frsize


@pytest.mark.parametrize(("files", "favail", "out"), [(100, 0, True), (100, 3, False), (0, 0, False)])
def test_out_of_inodes_only_where_inodes_are_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: int, favail: int, out: bool
) -> None:
    a_disk(monkeypatch, os.statvfs(tmp_path), f_files=files, f_favail=favail)
    assert out_of_inodes(tmp_path) is out
    assert free_inodes(tmp_path) == favail


def test_a_folder_that_is_not_there_raises(tmp_path: Path) -> None:
    for count in (free_bytes, free_bytes_for_this_process, free_inodes, out_of_inodes):
        with pytest.raises(OSError):
            count(tmp_path / "missing")
