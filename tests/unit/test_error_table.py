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
from videodag_service.errors import LimitExceeded, VideodagError
from videodag_service.jobs.model import RecordedJobError

PROTO = Path(__file__).resolve().parents[2] / "protos" / "videodag" / "v1" / "video_pipeline_service.proto"

# Not reasons a caller meets: a base class only ever raised as one of its subclasses, and a
# job's recorded error, which carries the reason of the error it recorded.
_NOT_RAISED_AS_THEMSELVES = {LimitExceeded, RecordedJobError}


def _every_subclass(base: type[VideodagError]) -> Iterator[type[VideodagError]]:
    for subclass in base.__subclasses__():
        yield subclass
        yield from _every_subclass(subclass)


def _server_errors() -> set[type[VideodagError]]:
    """Every error class of the server's, wherever it is defined."""
    for module in pkgutil.walk_packages(videodag_service.__path__, "videodag_service."):
        importlib.import_module(module.name)
    return set(_every_subclass(VideodagError)) - _NOT_RAISED_AS_THEMSELVES


def _table() -> str:
    """The file's leading comment, where the table is."""
    header = PROTO.read_text().split("\nservice ", 1)[0]
    return "\n".join(line for line in header.splitlines() if line.startswith("//"))


def test_every_reason_the_server_raises_has_a_row_in_the_contracts_error_table() -> None:
    table = _table()
    missing = sorted({error.reason for error in _server_errors()
                      if not re.search(rf"\b{re.escape(error.reason)}\b", table)})
    assert missing == []


def test_every_status_code_the_server_raises_is_in_the_code_column() -> None:
    codes = set(re.findall(r"\|\s*([A-Z_]+)\s*\|\s*$", _table(), flags=re.MULTILINE))
    assert sorted({error.status_code for error in _server_errors()} - codes) == []
