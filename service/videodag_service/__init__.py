"""The videodag server: named DAG pipelines of vision plugins run over every frame of an
uploaded video, served over gRPC (`videodag.v1`).

`server` starts it (`videodag-server`); `servicer` and `job_servicer` speak the contract;
`video` stores uploads and decodes them, in a decoder process per run; `dag` loads the
pipeline files and runs them frame by frame; `plugins` holds the built-in vision plugins;
`jobs` keeps asynchronous runs; `errors` is the error tree every layer raises.

`from videodag_service import VideoFilePipelineService` gives the video layer (run a pipeline
over a file, no gRPC), loaded on first use: the client imports this package for its `media`,
and must not load the decoding engine with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from videodag_service.grpc_verbosity import keep_grpc_to_its_errors

if TYPE_CHECKING:
    from videodag_service.video import VideoFilePipelineService

__all__ = ["VideoFilePipelineService"]

keep_grpc_to_its_errors()  # before anything imports grpc


def __getattr__(name: str) -> object:
    if name == "VideoFilePipelineService":
        from videodag_service.video import VideoFilePipelineService

        return VideoFilePipelineService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
