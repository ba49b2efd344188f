"""The contract's .proto files as reflection serves them: with their comments.

The descriptors protobuf's pool holds, which grpcio-reflection serves, carry no comments:
protoc's Python output leaves source info out, and upb's `FileDescriptor` drops it even from
a file added with it. Served as the pool holds them, they give `grpcurl describe` bare
signatures, while the .proto files explain how to call each method, what each field means,
which error comes when.
`scripts/generate_protos.py` writes the contract's files with their comments beside the
generated code (`descriptor_set.binpb`), and reflection's answers carry the pool's files with
those comments added.

Only the comments are taken from there. protoc also writes each field's JSON name, which the
pool's copy leaves out, and grpcurl prints a field under its JSON name when it has one:
`uploadReceived` where grpcurl users (and their scripts) expect `upload_received`.
Comments are added only where the file describes exactly what the server runs: one out of
step with the generated code (a hand-edited install) would point them at other elements.
Such a file is served as the pool holds it, without comments, and the server says so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib import resources

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import DecodeError
from grpc_reflection.v1alpha import reflection_pb2

logger = logging.getLogger(__name__)

DESCRIPTOR_SET_PACKAGE = "videodag.v1"
DESCRIPTOR_SET_NAME = "descriptor_set.binpb"


class CommentedFiles:
    """Serialized FileDescriptorProtos with source info, by file name, to serve in place of the pool's."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self._files = dict(files)

    @classmethod
    def of_the_contract(cls, pool: descriptor_pool.DescriptorPool) -> CommentedFiles:
        """The contract's files from the generated package, those that match `pool`'s; none
        (with a warning) when the package has no descriptor set: reflection still works without."""
        try:
            data = resources.files(DESCRIPTOR_SET_PACKAGE).joinpath(DESCRIPTOR_SET_NAME).read_bytes()
            described = descriptor_pb2.FileDescriptorSet.FromString(data)
        except (OSError, ModuleNotFoundError, DecodeError) as error:  # missing, unreadable, cut short
            logger.warning("%s's %s cannot be read (%s: %s): reflection serves the contract without its comments "
                           "(regenerate it with scripts/generate_protos.py)", DESCRIPTOR_SET_PACKAGE,
                           DESCRIPTOR_SET_NAME, type(error).__name__, error)
            return cls({})
        return cls.matching(described, pool)

    @classmethod
    def matching(
        cls, commented: descriptor_pb2.FileDescriptorSet, pool: descriptor_pool.DescriptorPool
    ) -> CommentedFiles:
        """`pool`'s copies of the files in `commented`, with their comments, where they match."""
        files: dict[str, bytes] = {}
        for file in commented.file:
            try:
                served = descriptor_pb2.FileDescriptorProto()
                pool.FindFileByName(file.name).CopyToProto(served)
            except KeyError:
                continue  # not loaded: reflection does not serve it either
            if _without_source_details(file) == _without_source_details(served):
                served.source_code_info.CopyFrom(file.source_code_info)
                files[file.name] = served.SerializeToString()
            else:
                logger.warning("%s in %s differs from the generated code the server runs: reflection serves it "
                               "without its comments (regenerate with scripts/generate_protos.py)",
                               file.name, DESCRIPTOR_SET_NAME)
        return cls(files)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._files)

    def into(self, response: reflection_pb2.ServerReflectionResponse) -> reflection_pb2.ServerReflectionResponse:
        """`response`, with any of these files it carries swapped for its commented copy."""
        if not self._files or not response.HasField("file_descriptor_response"):
            return response
        served = response.file_descriptor_response.file_descriptor_proto
        for index, data in enumerate(served):
            commented = self._files.get(descriptor_pb2.FileDescriptorProto.FromString(data).name)
            if commented is not None:
                served[index] = commented
        return response


def _without_source_details(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """`file` without its comments and its fields' JSON names: what the two copies may differ by."""
    bare = descriptor_pb2.FileDescriptorProto()
    bare.CopyFrom(file)
    bare.ClearField("source_code_info")
    messages = list(bare.message_type)
    for field in bare.extension:
        field.ClearField("json_name")
    while messages:
        message = messages.pop()
        messages.extend(message.nested_type)
        for field in (*message.field, *message.extension):
            field.ClearField("json_name")
    return bare
