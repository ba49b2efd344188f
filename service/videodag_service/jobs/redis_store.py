"""The scale-out `JobStore`: job records and results in Redis, shared by every replica and worker.

Keys, under a prefix (default "videodag"):

    <p>:job:<id>             hash    the job record (fields as the SQLite columns)
    <p>:job:<id>:frames      stream  its results; entry id "<frame_index>-1", so a resume point
                                     is a stream id and a re-run cannot append out of order
    <p>:jobs                 zset    every job id, all scores 0: lexical order = creation order
    <p>:leases               zset    RUNNING job ids by lease end (epoch seconds)
    <p>:expiry               zset    finished job ids by retention end
    <p>:undispatched         zset    QUEUED job ids not yet handed to RQ, by creation time
    <p>:handed_over          zset    QUEUED job ids handed to RQ and claimed by no worker since,
                                     by hand-over time
    <p>:idempotency:<key>    string  the job id a key was first used for

Every transition is one Lua script, so it is atomic across replicas and workers. A worker
holds a lease on its job and renews it while it runs; a job whose lease ran out (its worker
died) is put back to QUEUED in a new attempt by whichever replica's maintenance sees it first.
Before its claim a job has no lease: a worker that took it from RQ and died, or met an outage,
before claiming it leaves it QUEUED with nobody to run it. Maintenance finds such a job among
the unclaimed hand-overs, once RQ says it no longer holds its task, and queues it in a new
attempt as well.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from typing import Any, cast

import redis
from redis.typing import EncodableT, FieldT

from videodag_service.errors import JobNotFound
from videodag_service.jobs import records
from videodag_service.jobs.data_dir_lock import SharedDataDirectoryHold
from videodag_service.jobs.defaults import DEFAULT_KEY_PREFIX, DEFAULT_LEASE_SECONDS
from videodag_service.jobs.ids import page_token_after
from videodag_service.jobs.model import HandOver, Job, JobError, JobFrame, JobPage, JobState, JobSummary, RunClaim
from videodag_service.jobs.shared_clock import RedisClock
from videodag_service.jobs.store import (
    MAX_ATTEMPTS_ERROR,
    JobStore,
    LostHandOvers,
    StoredResultsLost,
    check_cancellable,
    check_deletable,
)
from videodag_service.video import VideoInfo

# For every connection to the store: a Redis that stops answering (a partition, a paused host)
# fails a command in seconds, as an outage, instead of holding it until TCP gives up (older
# redis-py versions wait forever by default, RQ's connections 415 s). The slowest command sent
# is a watcher's XREAD, which blocks for `_STATE_POLL_SECONDS`.
CONNECTION_TIMEOUTS = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}
# How long a watcher blocks on the results stream before it looks at the job record again:
# state changes are not stream entries, so this bounds how late a watcher sees one.
_STATE_POLL_SECONDS = 0.25
_LIST_SCAN_BATCH = 200

# A run's writes hold while the job runs under the run's claim (`RunClaim`): its attempt and
# its claim's time, as the claim stored it.
_CURRENT_RUN = """
local function is_current_run(job_key, attempt, started_at)
  return redis.call('HGET', job_key, 'state') == 'RUNNING' and redis.call('HGET', job_key, 'attempt') == attempt
    and redis.call('HGET', job_key, 'started_at') == started_at
end
"""

# KEYS: job, frames, leases, undispatched, handed_over. ARGV: attempt, now, lease_until, id.
_CLAIM = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'RUNNING' and redis.call('HGET', KEYS[1], 'started_at') == ARGV[2] then
  -- claimed already by this claim, repeated because an outage lost its reply
  return 1
end
if state ~= 'QUEUED' then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'state', 'RUNNING', 'started_at', ARGV[2], 'frames_done', 0, 'frames_total', 0)
redis.call('HDEL', KEYS[1], 'video_info')
redis.call('HINCRBY', KEYS[1], 'revision', 1)
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('ZREM', KEYS[4], ARGV[4])
redis.call('ZREM', KEYS[5], ARGV[4])
return 1
"""

# KEYS: job, frames, leases, undispatched. ARGV: attempt, started_at, now, id. Queued again in
# the same attempt, and due for a hand-over to RQ (maintenance does it, as for a lost one).
_RELEASE = _CURRENT_RUN + """
if not is_current_run(KEYS[1], ARGV[1], ARGV[2]) then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'state', 'QUEUED', 'frames_done', 0, 'frames_total', 0)
redis.call('HDEL', KEYS[1], 'video_info')
redis.call('HINCRBY', KEYS[1], 'revision', 1)
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
return 1
"""

# KEYS: job, frames, leases, undispatched. ARGV: attempt, started_at, now, id. Queued again in the
# next attempt, and due for a hand-over to RQ as a released job is.
_QUEUE_NEXT_ATTEMPT = _CURRENT_RUN + """
if not is_current_run(KEYS[1], ARGV[1], ARGV[2]) then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'state', 'QUEUED', 'attempt', tonumber(ARGV[1]) + 1, 'frames_done', 0, 'frames_total', 0)
redis.call('HDEL', KEYS[1], 'video_info')
redis.call('HINCRBY', KEYS[1], 'revision', 1)
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
return 1
"""

# KEYS: job, frames, leases. ARGV: attempt, started_at, frame_index, timestamp, result, lease_until, id.
_APPEND = _CURRENT_RUN + """
if not is_current_run(KEYS[1], ARGV[1], ARGV[2]) then return 0 end
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if top[1] and top[1][1] == ARGV[3] .. '-1' then
  -- stored already: a write repeated because an outage lost its reply
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[7])
  return 1
end
redis.call('XADD', KEYS[2], ARGV[3] .. '-1', 't', ARGV[4], 'r', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'frames_done', 1)
redis.call('HINCRBY', KEYS[1], 'revision', 1)
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[7])
return 1
"""

# KEYS: job. ARGV: attempt, started_at, video_info, frames_total.
_RECORD_VIDEO = _CURRENT_RUN + """
if not is_current_run(KEYS[1], ARGV[1], ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'video_info', ARGV[3], 'frames_total', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'revision', 1)
return 1
"""

# KEYS: job, leases. ARGV: attempt, started_at, lease_until, id.
_RENEW = _CURRENT_RUN + """
if not is_current_run(KEYS[1], ARGV[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
"""

# KEYS: job, leases, expiry. ARGV: attempt, started_at, state, now, expire_at, outcome field, outcome, id,
# frames processed (a success's, "" for a failure). Returns -1, changing nothing, for a success
# with fewer results stored than it processed: Redis lost some it had taken.
_FINISH = _CURRENT_RUN + """
if not is_current_run(KEYS[1], ARGV[1], ARGV[2]) then return 0 end
if ARGV[9] ~= '' and redis.call('HGET', KEYS[1], 'frames_done') ~= ARGV[9] then return -1 end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'finished_at', ARGV[4], 'expire_at', ARGV[5], ARGV[6], ARGV[7])
if ARGV[3] == 'SUCCEEDED' then
  -- a success knows its frames: the estimate made as the video opened gives way to them
  redis.call('HSET', KEYS[1], 'frames_total', redis.call('HGET', KEYS[1], 'frames_done'))
end
redis.call('HINCRBY', KEYS[1], 'revision', 1)
redis.call('ZREM', KEYS[2], ARGV[8])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[8])
return 1
"""

# KEYS: job, leases, expiry, undispatched, handed_over. ARGV: now, expire_at, id. Returns the previous state.
_CANCEL = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if state == 'QUEUED' or state == 'RUNNING' then
  redis.call('HSET', KEYS[1], 'state', 'CANCELLED', 'finished_at', ARGV[1], 'expire_at', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'revision', 1)
  -- A running job keeps its lease, no longer renewed: its end tells recovery the run is over.
  if state == 'QUEUED' then redis.call('ZREM', KEYS[2], ARGV[3]) end
  redis.call('ZREM', KEYS[4], ARGV[3])
  redis.call('ZREM', KEYS[5], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
end
return state
"""

# KEYS: job, frames, jobs, expiry, leases, undispatched, idempotency key (or a dummy), handed_over. ARGV: id.
# Returns the state; a job still QUEUED or RUNNING is left alone.
_DELETE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if state == 'QUEUED' or state == 'RUNNING' then return state end
if redis.call('GET', KEYS[7]) == ARGV[1] then redis.call('DEL', KEYS[7]) end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('ZREM', KEYS[8], ARGV[1])
return state
"""

# KEYS: job, frames, leases, expiry, undispatched. ARGV: now, max_attempts, expire_at, error, id.
# Returns the new attempt (QUEUED again), 0 when given up (FAILED), -2 for a job cancelled while
# it ran (its video may be left to delete), -1 when nothing was due.
_REQUEUE_EXPIRED = """
local lease = redis.call('ZSCORE', KEYS[3], ARGV[5])
if not lease or tonumber(lease) > tonumber(ARGV[1]) then return -1 end
redis.call('ZREM', KEYS[3], ARGV[5])
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'CANCELLED' then return -2 end
if state ~= 'RUNNING' then return -1 end
redis.call('DEL', KEYS[2])
redis.call('HINCRBY', KEYS[1], 'revision', 1)
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt'))
if attempt >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'state', 'FAILED', 'finished_at', ARGV[1], 'expire_at', ARGV[3],
             'error', ARGV[4], 'frames_done', 0)
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[5])
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'QUEUED', 'attempt', attempt + 1, 'frames_done', 0, 'frames_total', 0)
redis.call('HDEL', KEYS[1], 'video_info')
redis.call('ZADD', KEYS[5], ARGV[1], ARGV[5])
return attempt + 1
"""


# KEYS: job, handed_over, undispatched, expiry. ARGV: attempt, handed_over_at, now, max_attempts, expire_at,
# error, id. A hand-over RQ lost, counted as a run that vanished. Returns the new attempt (QUEUED again, due
# for a hand-over), 0 when given up (FAILED), -1 when the job moved on since it was looked at (claimed,
# cancelled, handed over anew).
_REQUEUE_LOST_HAND_OVER = """
local handed_over_at = redis.call('ZSCORE', KEYS[2], ARGV[7])
if not handed_over_at or tonumber(handed_over_at) ~= tonumber(ARGV[2]) then return -1 end
if redis.call('HGET', KEYS[1], 'state') ~= 'QUEUED' or redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1]
    or redis.call('ZSCORE', KEYS[3], ARGV[7]) then
  return -1
end
redis.call('ZREM', KEYS[2], ARGV[7])
redis.call('HINCRBY', KEYS[1], 'revision', 1)
local attempt = tonumber(ARGV[1])
if attempt >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'state', 'FAILED', 'finished_at', ARGV[3], 'expire_at', ARGV[5], 'error', ARGV[6])
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[7])
  return 0
end
redis.call('HSET', KEYS[1], 'attempt', attempt + 1)
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[7])
return attempt + 1
"""


class RedisJobStore(JobStore):
    """Jobs in one Redis database; any number of processes may share it.

    `connection` must decode responses to str (`decode_responses=True`). A Redis that cannot
    be reached raises redis-py's connection and timeout errors (`outage_errors`).
    `lease_seconds`: how long a worker's claim lasts without renewal; a worker that is gone
    longer than this has its job run again. `dispatch_grace_seconds`: how long a QUEUED job
    may wait for its hand-over to RQ (normally immediate) before maintenance does it, and how
    long after a hand-over maintenance first asks RQ whether it still holds the job's task.
    """

    # A failover's replica refuses writes (READONLY) until it is promoted: an outage as well.
    outage_errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ReadOnlyError)

    def __init__(
        self,
        connection: redis.Redis,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        dispatch_grace_seconds: float = 30.0,
        data_dir_hold: SharedDataDirectoryHold | None = None,
    ) -> None:
        """`data_dir_hold`: a replica's hold on the deployment's data directory, released at `close`."""
        self._redis = connection
        self._clock = RedisClock(connection)
        self._data_dir_hold = data_dir_hold
        self._prefix = key_prefix
        self.lease_seconds = lease_seconds
        self._dispatch_grace_seconds = dispatch_grace_seconds
        self._jobs_key = f"{key_prefix}:jobs"
        self._leases_key = f"{key_prefix}:leases"
        self._expiry_key = f"{key_prefix}:expiry"
        self._watched_key = f"{key_prefix}:watched"  # job id -> until when a replica watches it
        self._writable_key = f"{key_prefix}:writable"  # written to check that Redis takes writes
        self.undispatched_key = f"{key_prefix}:undispatched"
        self.handed_over_key = f"{key_prefix}:handed_over"
        self._claim = connection.register_script(_CLAIM)
        self._append = connection.register_script(_APPEND)
        self._record_video = connection.register_script(_RECORD_VIDEO)
        self._renew = connection.register_script(_RENEW)
        self._release = connection.register_script(_RELEASE)
        self._queue_next_attempt = connection.register_script(_QUEUE_NEXT_ATTEMPT)
        self._finish = connection.register_script(_FINISH)
        self._cancel = connection.register_script(_CANCEL)
        self._delete = connection.register_script(_DELETE)
        self._requeue_expired = connection.register_script(_REQUEUE_EXPIRED)
        self._requeue_lost_hand_over = connection.register_script(_REQUEUE_LOST_HAND_OVER)

    def clock(self) -> float:
        return self._clock()

    @property
    def outage_patience_seconds(self) -> float:
        # Renewed every third of a lease, a lease outlasts an outage of two thirds of one.
        return self.lease_seconds / 2

    def close(self) -> None:
        self._redis.close()
        if self._data_dir_hold is not None:
            self._data_dir_hold.release()

    def _job_key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{job_id}"

    def _frames_key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{job_id}:frames"

    def _idempotency_key(self, key: str) -> str:
        return f"{self._prefix}:idempotency:{key}"

    # --- service side ---------------------------------------------------------------------

    def create(self, job: Job) -> Job:
        fields = _fields_of_new_job(job)
        if job.idempotency_key is None:
            with self._redis.pipeline() as pipe:
                self._queue_new_job(pipe, job, fields)
                pipe.execute()
            return job
        key = self._idempotency_key(job.idempotency_key)
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]  # redis-py leaves watch unannotated
                    existing_id = cast(str | None, pipe.get(key))
                    if existing_id is not None and pipe.exists(self._job_key(existing_id)):
                        pipe.reset()
                        return self.get(existing_id)
                    pipe.multi()
                    pipe.set(key, job.id)
                    self._queue_new_job(pipe, job, fields)
                    pipe.execute()
                    return job
                except redis.WatchError:
                    continue

    def _queue_new_job(self, pipe: redis.client.Pipeline, job: Job, fields: dict[FieldT, EncodableT]) -> None:
        pipe.hset(self._job_key(job.id), mapping=fields)
        pipe.zadd(self._jobs_key, {job.id: 0})
        pipe.zadd(self.undispatched_key, {job.id: job.created_at})

    def check_writable(self) -> None:
        # A write, not a PING: a replica not yet promoted answers reads and refuses writes.
        self._redis.set(self._writable_key, "1", px=1000)

    def find_by_idempotency_key(self, key: str) -> Job | None:
        job_id = cast(str | None, self._redis.get(self._idempotency_key(key)))
        if job_id is None:
            return None
        try:
            return self.get(job_id)
        except JobNotFound:
            return None

    def get(self, job_id: str) -> Job:
        fields = _fields(self._redis.hgetall(self._job_key(job_id)))
        if not fields:
            raise JobNotFound(job_id)
        return records.job_from_mapping(fields)

    def list_jobs(self, page_size: int, after_job_id: str | None, states: Sequence[JobState]) -> JobPage:
        wanted = {state.value for state in states}
        upper = f"({after_job_id}" if after_job_id else "+"
        found: list[Job] = []
        while len(found) <= page_size:
            ids = _texts(self._redis.zrevrangebylex(self._jobs_key, upper, "-", start=0, num=_LIST_SCAN_BATCH))
            if not ids:
                break
            with self._redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(self._job_key(job_id))
                rows = [_fields(row) for row in pipe.execute()]
            # A job deleted between the scan and the read has no fields: skipped.
            found.extend(
                records.job_from_mapping(row) for row in rows if row and (not wanted or row["state"] in wanted)
            )
            upper = f"({ids[-1]}"
        jobs = tuple(found[:page_size])
        token = page_token_after(jobs[-1].id) if len(found) > page_size else ""
        return JobPage(jobs, token)

    def cancel(self, job_id: str, now: float, expire_at: float) -> tuple[Job, JobState]:
        previous = self._cancel(
            keys=[self._job_key(job_id), self._leases_key, self._expiry_key, self.undispatched_key,
                  self.handed_over_key],
            args=[_number(now), _number(expire_at), job_id],
        )
        if previous is None:
            raise JobNotFound(job_id)
        state = JobState(previous)
        check_cancellable(job_id, state)
        return self.get(job_id), state

    def delete(self, job_id: str) -> Job:
        job = self.get(job_id)
        # Without a key, the empty key name stands in: no key is ever stored under it.
        idempotency_key = self._idempotency_key(job.idempotency_key or "")
        state = self._delete(
            keys=[
                self._job_key(job_id), self._frames_key(job_id), self._jobs_key, self._expiry_key,
                self._leases_key, self.undispatched_key, idempotency_key, self.handed_over_key,
            ],
            args=[job_id],
        )
        if state is None:
            raise JobNotFound(job_id)
        check_deletable(job_id, JobState(state))
        return job

    def frames_after(self, job_id: str, after_frame_index: int | None, limit: int) -> list[JobFrame]:
        entries = cast(
            list[tuple[str, dict[str, str]]],
            self._redis.xrange(
                self._frames_key(job_id), min=f"({_entry_id_before(after_frame_index)}", max="+", count=limit
            ),
        )
        return [
            JobFrame(int(entry_id.split("-", 1)[0]), float(values["t"]), records.result_from_text(values["r"]))
            for entry_id, values in entries
        ]

    def wait_for_change(self, job_id: str, revision: int, after_frame_index: int | None, timeout: float) -> None:
        current = self._redis.hget(self._job_key(job_id), "revision")
        if current is None or int(current) != revision:
            return
        last_id = _entry_id_before(after_frame_index)
        block_ms = max(1, int(min(timeout, _STATE_POLL_SECONDS) * 1000))
        try:
            self._redis.xread({self._frames_key(job_id): last_id}, count=1, block=block_ms)
        except redis.exceptions.ResponseError as error:
            # A failover turned this Redis into a replica and ended the wait ("UNBLOCKED ... master ->
            # replica?"): the watcher looks at the job again, as after any other change.
            if not str(error).startswith("UNBLOCKED"):
                raise
            # Redis closes the connection right after that reply, but redis-py has put it back in
            # its pool: the next command on it would fail with a reset. Idle connections are
            # dropped (only this one is doomed; the others reconnect when next used).
            self._redis.connection_pool.disconnect(inuse_connections=False)
        except redis.exceptions.ConnectionError:
            # The same close, when it comes before the reply is read (redis-py drops that
            # connection). The watcher looks again, on a new connection: if Redis is really out
            # of reach, that look says so.
            pass

    # --- worker side ----------------------------------------------------------------------

    def claim(self, job_id: str, attempt: int, now: float) -> Job | None:
        claimed = self._claim(
            keys=[
                self._job_key(job_id), self._frames_key(job_id), self._leases_key, self.undispatched_key,
                self.handed_over_key,
            ],
            args=[attempt, _number(now), _number(now + self.lease_seconds), job_id],
        )
        return self.get(job_id) if claimed else None

    def release(self, run: RunClaim, now: float) -> bool:
        released = self._release(
            keys=[self._job_key(run.job_id), self._frames_key(run.job_id), self._leases_key, self.undispatched_key],
            args=[*_claim_args(run), _number(now), run.job_id],
        )
        return bool(released)

    def queue_next_attempt(self, run: RunClaim, now: float) -> bool:
        queued = self._queue_next_attempt(
            keys=[self._job_key(run.job_id), self._frames_key(run.job_id), self._leases_key, self.undispatched_key],
            args=[*_claim_args(run), _number(now), run.job_id],
        )
        return bool(queued)

    def awaits_hand_over(self, job_id: str) -> bool:
        """Whether the QUEUED job waits for a hand-over to RQ (created, released or queued again,
        and handed over by nobody since)."""
        return self._redis.zscore(self.undispatched_key, job_id) is not None

    def renew_lease(self, run: RunClaim) -> bool:
        """Extend the worker's claim; False when the job no longer runs under it."""
        renewed = self._renew(
            keys=[self._job_key(run.job_id), self._leases_key],
            args=[*_claim_args(run), _number(self.clock() + self.lease_seconds), run.job_id],
        )
        return bool(renewed)

    def record_video(self, run: RunClaim, info: VideoInfo, frames_total: int) -> bool:
        recorded = self._record_video(
            keys=[self._job_key(run.job_id)],
            args=[*_claim_args(run), records.video_info_to_text(info) or "", frames_total],
        )
        return bool(recorded)

    def append_frame(self, run: RunClaim, frame: JobFrame) -> bool:
        appended = self._append(
            keys=[self._job_key(run.job_id), self._frames_key(run.job_id), self._leases_key],
            args=[
                *_claim_args(run), frame.frame_index, repr(frame.timestamp_seconds),
                records.result_to_text(frame.result), _number(self.clock() + self.lease_seconds), run.job_id,
            ],
        )
        return bool(appended)

    def finish(
        self,
        run: RunClaim,
        now: float,
        expire_at: float,
        summary: JobSummary | None = None,
        error: JobError | None = None,
    ) -> bool:
        if error is not None:
            state, outcome_field, outcome = JobState.FAILED, "error", records.error_to_text(error)
        else:
            state, outcome_field, outcome = JobState.SUCCEEDED, "summary", records.summary_to_text(summary)
        finished = self._finish(
            keys=[self._job_key(run.job_id), self._leases_key, self._expiry_key],
            args=[*_claim_args(run), state.value, _number(now), _number(expire_at), outcome_field, outcome or "",
                  run.job_id, "" if summary is None or error is not None else summary.frames_processed],
        )
        if finished == -1:
            raise StoredResultsLost(f"job {run.job_id}: fewer results stored than the "
                                    f"{summary.frames_processed if summary else 0} its run processed")
        return bool(finished)

    # --- maintenance ----------------------------------------------------------------------

    def recover(
        self, now: float, max_attempts: int, expire_at: float, lost_hand_overs: LostHandOvers | None = None
    ) -> list[Job]:
        given_up = records.error_to_text(
            JobError("INTERNAL", "JOB_INTERRUPTED", MAX_ATTEMPTS_ERROR.format(attempts=max_attempts))
        )
        due: set[str] = set()
        failed_ids: list[str] = []
        # Cancelled while they ran: a run that stops deletes its video, but a worker that
        # vanished first cannot, and its lease is the last sign of it.
        cancelled_ids: list[str] = []
        for job_id in _texts(self._redis.zrangebyscore(self._leases_key, "-inf", _number(now))):
            new_attempt = self._requeue_expired(
                keys=[
                    self._job_key(job_id), self._frames_key(job_id), self._leases_key, self._expiry_key,
                    self.undispatched_key,
                ],
                args=[_number(now), max_attempts, _number(expire_at), given_up or "", job_id],
            )
            if new_attempt > 0:
                due.add(job_id)
            elif new_attempt == 0:
                failed_ids.append(job_id)
            elif new_attempt == -2:
                cancelled_ids.append(job_id)
        # Queued jobs whose hand-over to RQ did not follow their creation (the replica died in
        # between). Several replicas may hand over the same one: only one claim can succeed.
        stranded_before = _number(now - self._dispatch_grace_seconds)
        due.update(_texts(self._redis.zrangebyscore(self.undispatched_key, "-inf", stranded_before)))
        if lost_hand_overs is not None:
            for job_id, new_attempt in self._requeue_lost_hand_overs(now, max_attempts, expire_at, given_up,
                                                                     lost_hand_overs):
                if new_attempt > 0:
                    due.add(job_id)
                elif new_attempt == 0:
                    failed_ids.append(job_id)
        jobs = []
        for job_id in sorted(due):
            try:
                job = self.get(job_id)
            except JobNotFound:
                job = None
            if job is not None and job.state is JobState.QUEUED:
                jobs.append(job)
            else:
                self._redis.zrem(self.undispatched_key, job_id)
        for job_id in failed_ids + cancelled_ids:
            with contextlib.suppress(JobNotFound):
                jobs.append(self.get(job_id))
        return jobs

    def _requeue_lost_hand_overs(
        self, now: float, max_attempts: int, expire_at: float, given_up: str | None, lost_hand_overs: LostHandOvers
    ) -> list[tuple[str, int]]:
        """Queue again, each in a new attempt, the jobs handed to RQ a grace ago that no worker
        has claimed and whose task RQ no longer holds; (job id, new attempt or 0 if given up)."""
        handed_over = cast(
            list[tuple[str, float]],
            self._redis.zrangebyscore(
                self.handed_over_key, "-inf", _number(now - self._dispatch_grace_seconds), withscores=True
            ),
        )
        if not handed_over:
            return []
        with self._redis.pipeline(transaction=False) as pipe:
            for job_id, _ in handed_over:
                pipe.hmget(self._job_key(job_id), ["state", "attempt"])
            states = cast(list[list[str | None]], pipe.execute())
        unclaimed: dict[HandOver, float] = {}
        for (job_id, handed_over_at), (state, attempt) in zip(handed_over, states, strict=True):
            if state is None or JobState(state).is_finished:  # left by a hand-over made twice, one claimed
                self._redis.zrem(self.handed_over_key, job_id)
            elif state == JobState.QUEUED.value and attempt is not None:
                unclaimed[HandOver(job_id, int(attempt))] = handed_over_at
        lost = set(lost_hand_overs(list(unclaimed))) if unclaimed else set()
        requeued = []
        for hand_over, handed_over_at in unclaimed.items():
            if hand_over not in lost:
                continue
            new_attempt = self._requeue_lost_hand_over(
                keys=[self._job_key(hand_over.job_id), self.handed_over_key, self.undispatched_key, self._expiry_key],
                args=[
                    hand_over.attempt, _number(handed_over_at), _number(now), max_attempts, _number(expire_at),
                    given_up or "", hand_over.job_id,
                ],
            )
            if new_attempt >= 0:
                requeued.append((hand_over.job_id, int(new_attempt)))
        return requeued

    def mark_watched(self, job_ids: Collection[str], until: float) -> None:
        if job_ids:
            self._redis.zadd(self._watched_key, dict.fromkeys(job_ids, until), gt=True)

    def purge_expired(self, now: float, keep: Collection[str] = ()) -> list[Job]:
        purged = []
        self._redis.zremrangebyscore(self._watched_key, "-inf", f"({_number(now)}")
        watched_by_replicas = set(_texts(self._redis.zrangebyscore(self._watched_key, _number(now), "+inf")))
        for job_id in _texts(self._redis.zrangebyscore(self._expiry_key, "-inf", _number(now))):
            if job_id in keep or job_id in watched_by_replicas:
                continue
            try:
                purged.append(self.delete(job_id))
            except JobNotFound:
                self._redis.zrem(self._expiry_key, job_id)
        return purged


# The connection decodes replies to str; redis-py's types say `bytes | str` whatever the setting.
def _texts(reply: Any) -> list[str]:
    return cast(list[str], reply)


def _fields(reply: Any) -> dict[str, str]:
    return cast(dict[str, str], reply)


def _number(value: float) -> str:
    return repr(float(value))


def _claim_args(run: RunClaim) -> tuple[int, str]:
    """A run's claim as its scripts compare it: the attempt, and the claim's time as the claim
    stored it (`_number` of the same float, so equal to the character)."""
    return run.attempt, _number(run.started_at)


def _stream_id(frame_index: int) -> str:
    return f"{frame_index}-1"


def _entry_id_before(after_frame_index: int | None) -> str:
    """The stream id the entries wanted come after: the frame's, or, with none given or -1 (the
    contract's "from the first"), one before every frame's ("-1-1" is no stream id at all)."""
    if after_frame_index is None or after_frame_index < 0:
        return "0-0"
    return _stream_id(after_frame_index)


def _fields_of_new_job(job: Job) -> dict[FieldT, EncodableT]:
    fields: dict[FieldT, EncodableT] = {
        "id": job.id,
        "state": job.state.value,
        "attempt": job.attempt,
        "pipeline_id": job.pipeline_id,
        "sampling": records.sampling_to_text(job.sampling),
        "file_name": job.file_name,
        "video_ref": job.video.ref,
        "video_size_bytes": job.video.size_bytes,
        "video_sha256": job.video.sha256,
        "created_at": _number(job.created_at),
        "frames_done": 0,
        "frames_total": 0,
        "revision": 0,
    }
    if job.idempotency_key is not None:
        fields["idempotency_key"] = job.idempotency_key
    return fields
