"""Reading a config-then-chunks client stream (UploadAndRun and SubmitJob share its shape).

Both request messages carry a `oneof` of `config` and `chunk` (typed loosely here, as the
two generated classes share no base): the config first, exactly once, then the video's
bytes in order. Order mistakes are INVALID_ARGUMENT. A chunk-only message may also arrive
as a memoryview of its chunk (`chunk_views`, which the server installs).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from videodag_service.errors import BadRequestStream


def first_config(requests: Iterator[Any]) -> Any:
    """The config of the stream's first message; BadRequestStream when it is missing."""
    first = next(requests, None)
    if first is None:
        raise BadRequestStream("the stream was empty; send a config message first, then the video's chunks")
    if isinstance(first, memoryview) or not first.HasField("config"):
        raise BadRequestStream("the first message must be the config; a chunk arrived first")
    return first.config


def chunks(requests: Iterator[Any]) -> Iterator[bytes | memoryview]:
    """The video's bytes from the rest of the stream; BadRequestStream for a second config."""
    for request in requests:
        if isinstance(request, memoryview):
            yield request
        elif request.HasField("config"):
            raise BadRequestStream("the config was sent twice; send it once, as the first message")
        else:
            yield request.chunk
