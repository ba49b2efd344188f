"""The error table at the top of `video_pipeline_service.proto`, which grpcurl's `describe`
and the README point callers to as the one with every reason, against the errors the server
can raise: a reason added without a row (TOO_MANY_HEALTH_WATCHES was) is one no caller can
look up."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import videodag_service
from videodag_service.errors import FailedPrecondition, InvalidArgument, LimitExceeded, VideodagError
from videodag_service.jobs.model import RecordedJobError

PROTO = Path(__file__).resolve().parents[2] / "protos" / "videodag" / "v1" / "video_pipeline_service.proto"

# Not reasons a caller meets: base classes only ever raised as one of their subclasses, and a
# job's recorded error, which carries the reason of the error it recorded.
_NOT_RAISED_AS_THEMSELVES = {LimitExceeded, InvalidArgument, FailedPrecondition, RecordedJobError}


def _every_subclass(base: type[VideodagError]) -> Iterator[type[VideodagError]]:
    for subclass in base.__subclasses__():
        yield subclass
        yield from _every_subclass(subclass)


def _server_errors() -> set[type[VideodagError]]:
    """Every error class of the server's, wherever it is defined."""
    for module in pkgutil.walk_packages(videodag_service.__path__, "videodag_service."):
        importlib.import_module(module.name)
    return set(_every_subclass(VideodagError)) - _NOT_RAISED_AS_THEMSELVES


_ROW = re.compile(r"^// \|(?P<condition>.*)\|\s*(?P<code>[A-Z_]*)\s*\|\s*$", flags=re.MULTILINE)


def _rows() -> list[re.Match[str]]:
    """The table's lines, from the file's leading comment."""
    return list(_ROW.finditer(PROTO.read_text().split("\nservice ", 1)[0]))


def test_every_reason_the_server_raises_is_named_in_the_contracts_error_table() -> None:
    """In the condition column: the code column would pass a reason spelled as its code (CANCELLED)."""
    conditions = "\n".join(row["condition"] for row in _rows())
    missing = sorted({error.reason for error in _server_errors()
                      if not re.search(rf"\b{re.escape(error.reason)}\b", conditions)})
    assert missing == []


def test_every_status_code_the_server_raises_is_in_the_code_column() -> None:
    codes = {row["code"] for row in _rows()}
    assert sorted({error.status_code for error in _server_errors()} - codes) == []
