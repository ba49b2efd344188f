"""ONNX Runtime's own log: errors only.

ONNX Runtime writes its warnings (an exported model's unused initializers, a node it cannot
place) to stderr itself, in colour, past the server's log and its JSON lines; they concern the
model's author, not a run. Its errors still reach the run as exceptions, in their own words.
"""

from __future__ import annotations

_ERRORS_ONLY = 3  # ONNX Runtime's severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal


def onnx_runtime_logs_errors_only() -> None:
    """For the sessions made after it, in this process (each plugin calls it before its first)."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(_ERRORS_ONLY)
