"""The free space SubmitJob keeps on the data directory's disk for the jobs: `DiskReserve`.

Job uploads arrive at once (up to --max-job-uploads). Checked one by one against the free
space when each began, they all passed together, then filled the disk between them: the
reserve was eaten and every upload failed, though some would have fit. So each upload in
progress holds a claim on the disk: the size it declared, or, without one, the next
`GROWTH_CLAIM_BYTES` at a time. A claim is granted only while the free space, less what every
claim has still to write, leaves the reserve: first come, first served, and the reserve holds.

What a claim has still to write is its size less its file's size on disk, read when a claim
is checked: bytes an upload has taken but not yet written (its writer thread queues a few
MiB) still count as to come, and the free space is read once (statvfs, cheap) per check.

The claims are this process's: servers sharing an uploads folder (the Redis backend) each
count their own; the others' uploads count as they land on the disk.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from videodag_service import disk_space
from videodag_service.disk_space import MIB
from videodag_service.errors import DiskFull, ErrorDetails

GROWTH_CLAIM_BYTES = 4 * MIB
"""How far ahead of what it has sent an upload without a declared size claims room, counted by
the other uploads as to come; the upload itself is checked at every chunk (a statvfs, nothing
beside writing the chunk)."""
# Reads of the files' sizes and the free space until the sizes stand still around the latter.
_CONSISTENT_READ_TRIES = 5


class UploadClaim:
    """One upload's room on the disk; made by `DiskReserve.claim`."""

    def __init__(self, reserve: DiskReserve, declared_bytes: int, most_bytes: int | None = None) -> None:
        self._reserve = reserve
        self.declared_bytes = declared_bytes
        self.most_bytes = most_bytes
        """The most the upload may hold (the upload limit): no claim reaches past it."""
        self.claimed_bytes = declared_bytes
        """The upload's size as far as it is claimed: declared, or grown in steps."""
        self.taken_bytes = 0
        """Bytes the upload has taken so far (some may still be on their way to the file)."""
        self.path: Path | None = None

    def track(self, path: Path) -> None:
        """The file the upload is written to, whose size says how much of the claim is used."""
        self.path = path

    def before_writing(self, size: int) -> None:
        """Check there is room for `size` more bytes; raises DiskFull.

        An upload that declared its size claimed it at its start and is not checked again. One
        that did not is checked at every chunk, for the bytes it is about to write only: it is
        taken as long as it leaves the reserve free. Its claim grows ahead of it by a step
        (`GROWTH_CLAIM_BYTES`), which the other uploads count as to come."""
        needed = self.taken_bytes + size
        if self.declared_bytes and needed <= self.claimed_bytes:
            self.taken_bytes = needed
            return
        claimed = self.claimed_bytes
        if needed > claimed:
            claimed = self.taken_bytes + max(size, GROWTH_CLAIM_BYTES)
            if self.most_bytes is not None:
                claimed = min(claimed, self.most_bytes)
        self._reserve.grow(self, needed, claimed)
        self.taken_bytes = needed

    def bytes_to_come(self, claimed_bytes: int | None = None) -> int:
        """What the claim (or `claimed_bytes`, if given) holds that is not on the disk yet."""
        claimed = self.claimed_bytes if claimed_bytes is None else claimed_bytes
        if self.path is None:
            return claimed
        try:
            written = os.stat(self.path).st_size
        except OSError:  # moved to its place (its bytes now count as used), or removed: none to come
            return 0
        return max(claimed - written, 0)


class DiskReserve:
    """Keeps `min_free_bytes` free on `folder`'s disk against the uploads in progress; 0: no check.

    `free_bytes` reads the disk's free space (statvfs by default); tests give a disk of their own.
    """

    def __init__(
        self, folder: Path, min_free_bytes: int, free_bytes: Callable[[Path], int] = disk_space.free_bytes
    ) -> None:
        self.folder = folder
        self.min_free_bytes = min_free_bytes
        self._free_bytes = free_bytes
        self._lock = threading.Lock()
        self._claims: list[UploadClaim] = []

    @contextlib.contextmanager
    def claim(self, declared_bytes: int, most_bytes: int | None = None) -> Iterator[UploadClaim]:
        """Room for an upload of `declared_bytes` (0: unknown, claimed as it grows, never past
        `most_bytes`) while the block runs; raises DiskFull when granting it would leave less
        than the reserve free."""
        claim = UploadClaim(self, declared_bytes, most_bytes)
        with self._lock:
            self._check(claim, declared_bytes, growing=False)
            self._claims.append(claim)
        try:
            yield claim
        finally:
            with self._lock:
                self._claims.remove(claim)

    def grow(self, claim: UploadClaim, needed_bytes: int, claimed_bytes: int) -> None:
        """Extend `claim` to `claimed_bytes`, once `needed_bytes` of it fit; raises DiskFull, the
        claim unchanged, if they do not."""
        with self._lock:
            self._check(claim, needed_bytes, growing=claim.taken_bytes > 0)
            claim.claimed_bytes = max(claimed_bytes, needed_bytes)

    def _check(self, claim: UploadClaim, claimed_bytes: int, *, growing: bool) -> None:
        if not self.min_free_bytes:
            return
        # The files' sizes are read before the free space: a chunk written in between then counts
        # twice (used, and still to come), never not at all, which would let an upload into the
        # reserve. Read again after it until they did not change, so that no chunk counts twice
        # either: a writer thread busy between the reads (a loaded machine) stopped an upload
        # megabytes short of the reserve.
        to_come = self._bytes_to_come(claim, claimed_bytes)
        for _ in range(_CONSISTENT_READ_TRIES):
            free = self._free_bytes(self.folder)
            again = self._bytes_to_come(claim, claimed_bytes)
            if again == to_come:
                break
            to_come = again
        promised, own = to_come
        if free - promised - own >= self.min_free_bytes:
            return
        raise _disk_full(claim, free, promised, self.min_free_bytes, growing=growing)

    def _bytes_to_come(self, claim: UploadClaim, claimed_bytes: int) -> tuple[int, int]:
        """What the other claims, and `claim` at `claimed_bytes`, have still to write."""
        promised = sum(other.bytes_to_come() for other in self._claims if other is not claim)
        return promised, claim.bytes_to_come(claimed_bytes)


def _disk_full(claim: UploadClaim, free: int, promised: int, min_free: int, *, growing: bool) -> DiskFull:
    """The refusal, with the numbers an operator needs: free, promised to others, to stay free."""
    if growing:
        what = f"to go on with the upload after {claim.taken_bytes} bytes"
    elif claim.declared_bytes:
        what = f"for the upload of {claim.declared_bytes} bytes"
    else:
        what = "for the upload"
    promised_text = f", {promised} of them still to come for uploads in progress" if promised else ""
    metadata = {
        "free_bytes": str(free),
        "min_free_bytes": str(min_free),
        "declared_size_bytes": str(claim.declared_bytes),
        "promised_bytes": str(promised),
    }
    if growing:
        metadata["received_bytes"] = str(claim.taken_bytes)
    return DiskFull(
        f"not enough free disk space {what}: {free} bytes free{promised_text}, {min_free} must stay free "
        "(--job-min-free-bytes)",
        ErrorDetails(metadata=metadata),
    )
