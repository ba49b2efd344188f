"""A frame's result: the outputs the pipeline sends, converted as their nodes produce them, and
the result put together from them within the bytes a frame's result may take.

Apart from the run's scheduling and from the calls of the nodes: what goes out, and what a node
whose output cannot go out fails, is the same whichever thread ran the node and when.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from videodag_service.dag.json_like import NotJsonLike, encoded_size, entry_bound, to_json_like_sized
from videodag_service.dag.node_timings import RunTimings
from videodag_service.dag.plugin_calls import described
from videodag_service.dag.spec import ErrorPolicy, NodeSpec, PipelineSpec, SourceRef
from videodag_service.errors import NodeFailed

# How much of each error's message a result too large to send keeps.
_CUT_ERROR_MESSAGE_CHARS = 200


@dataclass
class FrameWork:
    """One frame on its way through the nodes: what they produced and what failed so far."""

    payload: Mapping[str, Any]
    values: dict[SourceRef, Any] = field(default_factory=dict)
    sent: dict[str, tuple[Any, int]] = field(default_factory=dict)
    """The pipeline's outputs so far, as they go out: JSON-like, with a bound of their bytes."""
    failed: set[str] = field(default_factory=set)
    errors: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    ran_inline: bool = False
    """Its lane ran in the caller's thread (`PipelineRun._start`): done already, nothing to wait for."""
    inline_error: Exception | None = None
    """What that call raised, raised again when the frame's turn comes, as a thread's would be."""


class NotSendable(Exception):
    """An output of the node's cannot be converted to what a frame's result holds."""


class FrameResults:
    """What a run's frames send: the outputs of each node the pipeline sends, converted
    (`sendable`), and each frame's result put together from them (`assemble`), within
    `max_result_bytes` when given."""

    def __init__(self, spec: PipelineSpec, timings: RunTimings, max_result_bytes: int | None) -> None:
        self._spec = spec
        self._timings = timings
        self._max_result_bytes = max_result_bytes
        self._nodes_by_id = {node.id: node for node in spec.nodes}
        self._sent_by_node: dict[str, list[tuple[str, SourceRef]]] = {}
        for name, source in spec.outputs:
            self._sent_by_node.setdefault(source.node, []).append((name, source))

    def sendable(self, node: NodeSpec, outputs: Mapping[str, Any]) -> dict[str, tuple[Any, int]]:
        """The node's outputs the pipeline sends, as JSON-like values with an upper bound of the
        bytes each takes as sent (a value's own to_json() is plugin code too)."""
        sent: dict[str, tuple[Any, int]] = {}
        for name, source in self._sent_by_node.get(node.id, ()):
            try:
                value, value_bound = to_json_like_sized(outputs[source.output])
            except Exception as error:  # RecursionError included: a value that holds itself
                raise NotSendable(
                    f"output {source.output!r} is not JSON-like: {described(error, typed=False)}"
                    if isinstance(error, NotJsonLike)
                    else f"converting output {source.output!r} failed: {described(error)}"
                ) from error
            sent[name] = (value, entry_bound(name, value_bound))
        return sent

    def assemble(self, work: FrameWork, frame_index: Any) -> None:
        """The frame's result, with its node errors under "errors", made to fit `max_result_bytes`."""
        work.result, bounds = self._result(work)
        if work.errors:
            work.result["errors"] = work.errors
        if self._max_result_bytes is not None:
            self._fit(work, bounds, self._max_result_bytes, frame_index)

    def _result(self, work: FrameWork) -> tuple[dict[str, Any], dict[str, int]]:
        """The frame's outputs as sent, with an upper bound of the bytes each takes; those of
        failed nodes are left out (the reason is in "errors")."""
        result: dict[str, Any] = {}
        bounds: dict[str, int] = {}
        for name, source in self._spec.outputs:
            if name in work.sent and source.node not in work.failed:
                result[name], bounds[name] = work.sent[name]
        return result, bounds

    def _output_failed(
        self, node: NodeSpec, cause: str, code: str, work: FrameWork, result: dict[str, Any],
        bounds: dict[str, int], frame_index: Any,
    ) -> None:
        """A node's output cannot go out: the run fails, or under `on_error: skip` every output of
        the node is left out and the error reported in-band."""
        self._timings.count_error(node)
        if node.on_error is ErrorPolicy.FAIL:
            raise NodeFailed(self._spec.id, node.id, node.plugin_ref, frame_index, cause)
        work.failed.add(node.id)
        for name, source in self._spec.outputs:
            if source.node == node.id:
                result.pop(name, None)
                bounds.pop(name, None)
        work.errors.append(node_error_entry(node, code, cause))

    def _fit(self, work: FrameWork, bounds: dict[str, int], limit: int, frame_index: Any) -> None:
        """A result over `limit` bytes could never be sent (nor a job's stored one watched). Most are
        told to fit by their bound; one that may not is measured, and then its largest output is
        its node's failure (under its `on_error` policy) until the rest fits. Errors reported
        in-band that take the most are cut short first, and fail the run if that is not enough."""
        result = work.result
        assert result is not None
        errors_bound = entry_bound("errors", to_json_like_sized(work.errors)[1]) if work.errors else 0
        if sum(bounds.values()) + errors_bound <= limit:
            return
        sources = dict(self._spec.outputs)
        errors_cut = False
        while (size := encoded_size(result)) > limit:
            sizes = {name: encoded_size({name: value}) for name, value in result.items()}
            name = max(sizes, key=lambda entry: sizes[entry])
            if name == "errors":
                if errors_cut:
                    node = self._nodes_by_id[work.errors[0]["node_id"]]
                    raise NodeFailed(self._spec.id, node.id, node.plugin_ref, frame_index,
                                     f"the frame's {len(work.errors)} node errors take {sizes[name]} bytes as sent, "
                                     f"over the {limit} bytes a frame's result may take")
                for error in work.errors:
                    error["message"] = error["message"][:_CUT_ERROR_MESSAGE_CHARS]
                errors_cut = True
                continue
            node = self._nodes_by_id[sources[name].node]
            cause = (f"output {sources[name].output!r} is {sizes[name]} bytes as sent (the frame's whole result "
                     f"{size}), over the {limit} bytes a frame's result may take (one message every gRPC client "
                     f"receives: 4 MiB by default, or the server's --max-message-bytes if lower, less 1 KiB)")
            self._output_failed(node, cause, "RESOURCE_EXHAUSTED", work, result, bounds, frame_index)
            if work.errors:
                result["errors"] = work.errors


def node_error_entry(node: NodeSpec, code: str, message: str) -> dict[str, Any]:
    """A node's failure as the frame's result lists it under "errors"."""
    return {"node_id": node.id, "plugin": node.plugin_ref, "code": code, "message": message}
