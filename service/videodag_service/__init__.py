"""The videodag server: named DAG pipelines of vision plugins run over every frame of an
uploaded video, served over gRPC (`videodag.v1`).

`server` starts it (`videodag-server`); `servicer` and `job_servicer` speak the contract;
`video` stores uploads and decodes them, in a decoder process per run; `dag` loads the
pipeline files and runs them frame by frame; `plugins` holds the built-in vision plugins;
`jobs` keeps asynchronous runs; `errors` is the error tree every layer raises.
"""

from videodag_service.grpc_verbosity import keep_grpc_to_its_errors

keep_grpc_to_its_errors()  # before anything imports grpc
