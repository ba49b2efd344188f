"""Generated code for the videodag contract; do not edit.

The messages are imported here, once protobuf 6.30's and 6.31's warning that this code, made
for protobuf 5, is a major version older is silenced: see scripts/generate_protos.py.
"""

import warnings as _warnings

_warnings.filterwarnings(
    "ignore",
    message=r"Protobuf gencode version 5\.\S+ is exactly one major version older than the runtime "
    r"version 6\.\S+ at videodag/v1/",
    category=UserWarning,
)
from videodag.v1 import job_pb2, pipeline_pb2, run_pb2, video_pipeline_service_pb2  # noqa: E402, F401
