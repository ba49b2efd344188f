"""How far the embedded store's results may fill their disk: `check_room_for_results`.

A running job's next result is refused (DiskFull, its job fails) once the data directory's
disk is down to the room kept for ending jobs: recording a job's end, cancelling and deleting
jobs write too. The uploads' reserve (`DiskReserve`) alone lets results fill the disk to its
last byte, where no job's end can be recorded nor any job deleted. Apart from the store, which
asks before every result, because the policy is about the disk, not about SQL.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from videodag_service import disk_space
from videodag_service.errors import DiskFull, ErrorDetails

logger = logging.getLogger(__name__)

# Room the log needs on the disk between two checkpoints (SQLite's 1,000 pages), and a margin.
LOG_GROWTH_ROOM_BYTES = 8 * 1024 * 1024


def check_room_for_results(db: sqlite3.Connection, data_dir: Path, keep_free_bytes: int) -> None:
    """DiskFull once the room for results is down to `keep_free_bytes` (0: no check).

    Cheap enough for every result (a statvfs and a page count, microseconds: a result's
    transaction writes pages of its own, far more than its text). The pages deleted jobs left
    in the database count as room, as results reuse them while the file keeps its size."""
    if not keep_free_bytes:
        return
    free = disk_space.free_bytes(data_dir)
    if free >= keep_free_bytes:
        return
    # Results written into free pages still go through the log first, which grows on the
    # disk itself: the pages count only while the disk keeps room for the log's growth.
    if free >= LOG_GROWTH_ROOM_BYTES:
        page_size, free_pages = (db.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "freelist_count"))
        if free + page_size * free_pages >= keep_free_bytes:
            return
    logger.warning("job results refused: the data directory's disk is down to %d bytes free, under the %d kept "
                   "for ending and deleting jobs", free, keep_free_bytes)
    raise DiskFull(
        f"the data directory's disk is down to {free} bytes free; results stop there, keeping "
        f"{keep_free_bytes} for ending and deleting jobs (half of --job-min-free-bytes): make room on that disk",
        ErrorDetails(metadata={"store": "sqlite", "free_bytes": str(free),
                               "results_keep_free_bytes": str(keep_free_bytes)}),
    )
