"""Calling plugin code so that whatever it raises stays its node's failure, told in a message that can be sent.

A plugin is code the service does not control: it may call `sys.exit()`, or raise an exception
whose text is megabytes long, holds half a character, or cannot even be read. Every call into a
plugin (open, process, close, a value's `to_json`) goes through here. Apart from the run, which
decides when and in which thread to call, and what a node's failure does to the frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from videodag_service.dag.plugin import ToolInstance

T = TypeVar("T")
logger = logging.getLogger(__name__)

MAX_ERROR_MESSAGE_CHARS = 2000
"""How much of a plugin exception's text a failure reports."""


class _PluginExit(Exception):
    """A plugin raised a BaseException that is no Exception: SystemExit or KeyboardInterrupt (a
    library's `sys.exit()`, argparse), asyncio's CancelledError (a library running its own
    event loop). Escaping, it would end the thread it ran in, leaving a call without its status,
    or a job worker gone; it fails its node instead, as any other error does."""


def call_plugin_containing_exits(step: Callable[..., T], *args: Any) -> T:
    """`step(*args)`, whose SystemExit, KeyboardInterrupt or any other BaseException ends nothing
    but the node calling it."""
    try:
        return step(*args)
    except Exception:
        raise
    except BaseException as error:
        raise _PluginExit(described(error)) from error


def described(error: BaseException, typed: bool = True) -> str:
    """A plugin's exception as its failure's message says it, cut to `MAX_ERROR_MESSAGE_CHARS`: the
    message goes out with the frame's result or in the call's status, and its text can be any size."""
    if isinstance(error, _PluginExit):
        return str(error)  # described as what the plugin raised
    try:
        text = str(error)
    except Exception as failure:  # an exception's class is plugin code too
        text = f"(its message could not be read: {type(failure).__name__})"
    if not text.isascii():  # a lone surrogate (from bytes decoded with surrogateescape) cannot be sent
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > MAX_ERROR_MESSAGE_CHARS:
        text = f"{text[:MAX_ERROR_MESSAGE_CHARS]}… ({len(text)} characters in all)"
    return f"{type(error).__name__}: {text}" if typed else text


def close_quietly(instance: ToolInstance | None, node_id: str, pipeline_id: str) -> None:
    """Close a node's instance, if there is one; a close that fails is logged, not raised."""
    if instance is None:
        return
    try:
        call_plugin_containing_exits(instance.close)
    except Exception:
        logger.exception("closing node %r of pipeline %r failed", node_id, pipeline_id)
