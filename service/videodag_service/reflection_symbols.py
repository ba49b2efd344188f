"""Which file declares a symbol, for reflection's FileContainingSymbol: the pool's answer, and
the names it misses.

protobuf's pool (upb, the default implementation) finds the file of a service, message,
field, oneof, enum or enum value, but not of a method: on the pool alone, `grpcurl describe
videodag.v1.VideoPipelineService.UploadAndRun` (or `grpc.health.v1.Health.Check`) fails with
"Symbol not found". Enum values have two names. protobuf scopes a value beside its enum
(`videodag.v1.JOB_STATE_QUEUED`), and the pool finds that one; grpcurl and grpcui, built on
jhump/protoreflect, name it inside its enum (`videodag.v1.JobState.JOB_STATE_QUEUED`) and
look the answer up under that name, so it is the one they can describe. Both are answered.

grpcio-reflection's servicer takes the pool to search as an argument; `SymbolLookupPool` is
that pool, with the two lookups added.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor, descriptor_pool


class SymbolLookupPool:
    """`pool`, whose FindFileContainingSymbol also finds methods, and enum values named inside
    their enum; everything else is `pool`'s own."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str) -> descriptor.FileDescriptor:
        """The file declaring `symbol`; KeyError when none does, as the pool's."""
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            pass
        try:
            return self._pool.FindMethodByName(symbol).containing_service.file
        except KeyError:
            pass
        if "\x00" in symbol:  # protobuf's lookup by value name stops at a NUL: no name of ours has one
            raise KeyError(f"Couldn't find symbol {symbol!r}")
        enum_name, _, value = symbol.rpartition(".")
        try:
            enum = self._pool.FindEnumTypeByName(enum_name)
        except KeyError:
            enum = None
        if enum is not None and value in enum.values_by_name:
            return enum.file
        raise KeyError(f"Couldn't find symbol {symbol}")
