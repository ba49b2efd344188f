"""Free space on a folder's disk, in the counts the server needs, and `MIB`, the unit its sizes are set in.

A file system keeps some blocks for root (ext4 keeps 5%): root may write into them, others may
not. So "free bytes" has two answers, and each caller must pick the one that fits it. The
reserve SubmitJob keeps, the free space reported to operators and the room for frame rings
count what any writer may use (`free_bytes`); the check that a job database can still be
opened counts what this process may use (`free_bytes_for_this_process`), else a server run as
root that had been writing into root's blocks is refused at its next start as on a full disk.
A disk may also have bytes free and no inode left, and then no file can be made at all
(`free_inodes`, `out_of_inodes`).

Apart because the upload code (video/) and the job code (jobs/) both read it. Each function
reads the file system once (statvfs, cheap) and raises OSError when it cannot.
"""

from __future__ import annotations

import os

MIB = 1024 * 1024


def free_bytes(folder: str | os.PathLike[str]) -> int:
    """Bytes a process without root's privileges may still write on `folder`'s file system (as
    `shutil.disk_usage(folder).free`): the blocks kept for root do not count."""
    usage = os.statvfs(folder)
    return usage.f_bavail * usage.f_frsize


def free_bytes_for_this_process(folder: str | os.PathLike[str]) -> int:
    """Bytes this process may still write on `folder`'s file system: run as root, the blocks the
    file system keeps for root count too."""
    usage = os.statvfs(folder)
    blocks = usage.f_bfree if os.geteuid() == 0 else usage.f_bavail
    return blocks * usage.f_frsize


def free_inodes(folder: str | os.PathLike[str]) -> int:
    """Files a process without root's privileges may still make on `folder`'s file system; 0 also
    on a file system that does not count its inodes (see `out_of_inodes`)."""
    return os.statvfs(folder).f_favail


def out_of_inodes(folder: str | os.PathLike[str]) -> bool:
    """Whether not one more file can be made on `folder`'s file system for want of an inode,
    whatever its free bytes. A file system that does not count inodes (btrfs reports none at
    all) never runs out of them."""
    usage = os.statvfs(folder)
    return usage.f_files > 0 and usage.f_favail == 0
