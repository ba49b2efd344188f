"""Removes, while the server runs, the uploads killed servers left in its upload folder.

A server killed mid-upload (SIGKILL, an out-of-memory kill, a crash) leaves its temp file.
The next start removes the orphans it finds, but only those older than
`ORPHAN_MIN_AGE_SECONDS` (a younger unlocked file may be another server's, created an
instant before its lock). A supervisor restarts a killed server within seconds, so its
predecessor's files are younger than that at the start; and a server sharing the folder
may be killed and never restarted. Sweeping again every `ORPHAN_MIN_AGE_SECONDS` removes
each orphan within two of those periods of its server's death, and costs a directory listing.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from videodag_service.video.upload import ORPHAN_MIN_AGE_SECONDS, remove_orphaned_uploads

logger = logging.getLogger(__name__)

SWEEP_INTERVAL_SECONDS = ORPHAN_MIN_AGE_SECONDS


class OrphanSweeper:
    """Sweeps `temp_dir` at once, then every `interval_seconds` (SWEEP_INTERVAL_SECONDS) until `stop`."""

    def __init__(self, temp_dir: str | os.PathLike[str], interval_seconds: float | None = None) -> None:
        self._temp_dir = Path(temp_dir)
        self._interval_seconds = SWEEP_INTERVAL_SECONDS if interval_seconds is None else interval_seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._sweep_until_stopped, name="videodag-orphan-sweeper", daemon=True)

    def start(self) -> None:
        self.sweep()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def sweep(self) -> list[Path]:
        """One sweep; what it removed (logged too)."""
        try:
            removed = remove_orphaned_uploads(self._temp_dir)
        except OSError as error:  # the folder unreadable for a moment: the next sweep tries again
            logger.warning("could not look for orphaned uploads in %s: %s", self._temp_dir, error)
            return []
        if removed:
            logger.info("removed %d upload(s) left in %s by a server that was stopped without its cleanup",
                        len(removed), self._temp_dir)
        return removed

    def _sweep_until_stopped(self) -> None:
        while not self._stopped.wait(self._interval_seconds):
            self.sweep()
