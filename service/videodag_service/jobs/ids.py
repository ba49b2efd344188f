"""Job ids, idempotency keys and page tokens: how they look and how they are checked.

Job ids sort in creation order (milliseconds since the epoch, then random bits counted up
within a millisecond of one process), so a listing "newest first" is a descending scan of
ids and a page token is simply the last id returned. Ids and keys become parts of file
names and Redis keys, so anything that does not match their pattern is refused before it
reaches a store.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import string
import threading
import time

from videodag_service.errors import FieldViolation, InvalidOptions, JobNotFound
from videodag_service.wording import first_fault

_JOB_ID = re.compile(r"[0-9a-f]{24}")
_IDEMPOTENCY_KEY_CHARACTERS = frozenset(string.ascii_letters + string.digits + "._:-")
_IDEMPOTENCY_KEY_MAX_CHARS = 128
_IDEMPOTENCY_KEY = re.compile(rf"[A-Za-z0-9._:-]{{1,{_IDEMPOTENCY_KEY_MAX_CHARS}}}")
_PAGE_TOKEN_PREFIX = "after:"


_RANDOM_BITS = 48
_last_issued = (0, 0)  # (milliseconds, random part) of the last id this process made
_issuing = threading.Lock()


def new_job_id(now: float | None = None) -> str:
    """12 hex digits of epoch milliseconds, then 12 hex digits (48 bits) random, or, for a
    second id in the same millisecond of this process, the previous id's plus one: random
    bits alone sorted jobs submitted together in any order."""
    global _last_issued
    milliseconds = int((time.time() if now is None else now) * 1000)
    with _issuing:
        last_milliseconds, last_random = _last_issued
        if milliseconds == last_milliseconds and last_random + 1 < 2**_RANDOM_BITS:
            random_part = last_random + 1
        else:
            random_part = secrets.randbits(_RANDOM_BITS - 1)  # half the range: room to count up from it
        _last_issued = (milliseconds, random_part)
    return f"{milliseconds:012x}{random_part:012x}"


def created_at_of(job_id: str) -> float:
    """When the job was created, to the millisecond, as its id says (seconds since the epoch)."""
    return int(job_id[:12], 16) / 1000


def is_job_id(text: str) -> bool:
    """Whether `text` has the form of an id this server issues."""
    return _JOB_ID.fullmatch(text) is not None


def checked_job_id(job_id: str) -> str:
    """The id itself; NOT_FOUND for anything the server could not have issued."""
    if not is_job_id(job_id):
        raise JobNotFound(job_id)
    return job_id


def checked_idempotency_key(key: str | None, field: str = "config.idempotency_key") -> str | None:
    """None for no key; INVALID_ARGUMENT for a key outside [A-Za-z0-9._:-]{1,128}."""
    if not key:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        fault = first_fault(key, _IDEMPOTENCY_KEY_CHARACTERS, _IDEMPOTENCY_KEY_MAX_CHARS)
        raise InvalidOptions([FieldViolation(field, f"must be 1 to 128 characters of A-Z a-z 0-9 . _ : -, {fault}")])
    return key


def page_token_after(job_id: str) -> str:
    """The opaque token that continues a listing after `job_id`."""
    return base64.urlsafe_b64encode((_PAGE_TOKEN_PREFIX + job_id).encode()).decode().rstrip("=")


def job_id_from_page_token(token: str) -> str | None:
    """The id a page token continues after; None for the first page; INVALID_ARGUMENT if forged."""
    if not token:
        return None
    try:
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    job_id = decoded.removeprefix(_PAGE_TOKEN_PREFIX)
    if not decoded.startswith(_PAGE_TOKEN_PREFIX) or not _JOB_ID.fullmatch(job_id):
        raise InvalidOptions([FieldViolation("page_token", "is not a token this server issued")])
    return job_id
