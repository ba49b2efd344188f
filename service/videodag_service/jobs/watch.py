"""Follow a job: its state and progress changes and its stored results, resumable by frame index.

The stream is built only from what the store holds, so it is the same on any replica and
after any reconnect. Exactly-once delivery rests on one fact: within a run, results are
stored in increasing frame order. The watcher remembers the last frame index it sent and only
ever sends larger ones, so a client resuming "after frame N" misses nothing and sees nothing
twice, even when an interrupted job is re-run from the start while it watches (the re-run
produces the same frames again, and those up to N are simply not sent twice; the same results
too, but for frames just after damage in a file, which FFmpeg's threads may conceal otherwise:
see the README's damaged files).

A finished job is read as: job state first, then frames. Its final state is written after its
last result, so frames read after seeing a final state are complete; the final `Job` is
therefore always the last event, after every frame, read again once the frames are sent
(a job deleted during its replay raises JobNotFound instead of ending as if complete).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from videodag_service.jobs.model import Job, WatchEvent
from videodag_service.jobs.store import JobStore

_FRAMES_PER_READ = 256


def _never() -> bool:
    return False


def watch_job(
    store: JobStore,
    job_id: str,
    after_frame_index: int | None = None,
    *,
    stop_requested: Callable[[], bool] = _never,
    poll_seconds: float = 0.5,
    progress_interval_seconds: float = 0.25,
) -> Iterator[WatchEvent]:
    """Yield the job (when its state or progress changed) and its frames until it is finished.

    `stop_requested` is checked at least every `poll_seconds`; when it turns true the
    generator ends (the caller went away, or the server's shutdown grace is over), but for a job
    that has finished meanwhile: its last frames and its final state go first, so a watch of a
    job that ended just as the grace did ends with that state, not with a resume that finds the
    job nowhere else. JobNotFound is raised if the job is deleted. Progress-only changes are
    sent at most once per `progress_interval_seconds`.
    """
    last_index = after_frame_index
    last_sent: Job | None = None
    last_progress_sent_at = 0.0
    while True:
        stopping = stop_requested()
        job = store.get(job_id)
        frames = store.frames_after(job_id, last_index, _FRAMES_PER_READ)
        if job.state.is_finished:
            while frames:
                yield from frames
                last_index = frames[-1].frame_index
                frames = store.frames_after(job_id, last_index, _FRAMES_PER_READ)
            # Read again: a job deleted (or expired) during the replay has lost its later
            # frames, and must end the stream as NOT_FOUND, not as a complete success.
            yield store.get(job_id)
            return
        if stopping:
            return
        now = time.monotonic()
        if _state_changed(last_sent, job) or (
            _progressed(last_sent, job) and now - last_progress_sent_at >= progress_interval_seconds
        ):
            yield job
            last_sent, last_progress_sent_at = job, now
        if frames:
            yield from frames
            last_index = frames[-1].frame_index
        if len(frames) < _FRAMES_PER_READ:
            store.wait_for_change(job_id, job.revision, last_index, poll_seconds)


def _state_changed(sent: Job | None, job: Job) -> bool:
    return (
        sent is None
        or sent.state != job.state
        or sent.attempt != job.attempt
        or (sent.video_info is None) != (job.video_info is None)
    )


def _progressed(sent: Job | None, job: Job) -> bool:
    return sent is not None and (sent.frames_done, sent.frames_total) != (job.frames_done, job.frames_total)

