"""Remove stored videos no job will read again: their job finished, or was never recorded.

A video is kept only while its job is QUEUED or RUNNING. Two things leave one behind: a job
that ended while its video could not be deleted (its worker killed first, a folder refusing
the delete), and a video stored for a job the store never confirmed: SubmitJob keeps the
video when an outage leaves the job's creation unknown, since the record may reach the store
after all, and a job without its video would fail. Apart from the service and the backends
because both remove them: the embedded backend once at start, with its folder to itself, and
maintenance on any backend, after a grace that covers a job being recorded right now by this
server or another one sharing the folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

from videodag_service.errors import JobNotFound
from videodag_service.jobs.ids import created_at_of, is_job_id
from videodag_service.jobs.store import JobStore
from videodag_service.jobs.uploads import UploadStorage

logger = logging.getLogger(__name__)

STRAY_VIDEO_GRACE_SECONDS = 3600.0
"""How old a video must be before maintenance removes it for want of a running job: far longer
than a job's record takes to reach the store, even one held back by a Redis stall."""


def remove_stray_videos(store: JobStore, uploads: UploadStorage, *, stored_before: float | None = None) -> int:
    """Delete the videos whose job is finished or unknown to `store`; how many were deleted.

    `stored_before`: only videos stored before then (the job id they are named after says when),
    so a job still being recorded keeps its video; None for all (nothing is being recorded).
    The store's errors are raised; a video that cannot be deleted is left for the next pass.
    """
    removed = 0
    for ref in list(uploads.refs()):
        job_id = Path(ref).stem
        if not is_job_id(job_id):  # not a video of ours (a `.keep`, an operator's note): left alone
            continue
        if stored_before is not None and created_at_of(job_id) >= stored_before:
            continue
        try:
            if not store.get(job_id).state.is_finished:
                continue
        except JobNotFound:
            pass
        try:
            uploads.delete(ref)
        except OSError as error:
            logger.warning("could not remove the video %s of a finished or unknown job: %s", ref, error)
            continue
        logger.debug("removed the video %s: its job is finished or was never recorded", ref)
        removed += 1
    return removed
