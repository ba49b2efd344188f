"""An upload's request stream (UploadAndRun, SubmitJob): the config, then the video's bytes
in chunks read on demand.

gRPC pulls requests from its own thread, one message at a time, and only after the previous
one was sent, so the file is read as fast as the network takes it and never whole. The
requests are wire bytes (`_wire`), sent as they are.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import IO, Protocol, TypeAlias, cast

from videodag.v1 import run_pb2
from videodag_client._arguments import run_options_argument, text_argument
from videodag_client._errors import Cancelled
from videodag_client._options import RunOptions


class BinaryFile(Protocol):
    """A binary file object to upload from: anything whose `read(size)` returns bytes (a file
    opened "rb", a pipe, `io.BytesIO`, a subprocess's stdout, a zip member, a socket's
    `makefile("rb")`). One that is also seekable (`seekable()`, `tell()`, `seek()`) is read
    from where it stands, and its size and checksum are declared."""

    def read(self, size: int, /) -> bytes: ...


class _SeekableFile(BinaryFile, Protocol):
    def tell(self) -> int: ...

    def seek(self, offset: int, whence: int = ..., /) -> int: ...


class StoppableChunks(ABC, Iterator[bytes]):
    """Chunks whose `next()` may wait on something that is not a read of the caller's own (the
    async client's event loop running the next step of an async iterable): `stop()` makes a
    waiting `next()` give up, so that a cancelled upload leaves no thread waiting for good."""

    @abstractmethod
    def stop(self) -> None: ...


PathOrFile: TypeAlias = str | os.PathLike[str] | BinaryFile | bytes | bytearray | memoryview | Iterable[bytes]
"""A path; a binary file object; the video's bytes; or an iterable of its chunks (a generator,
an HTTP body's iterator), of any sizes, which are sent as `chunk_size` pieces."""
UploadProgress: TypeAlias = Callable[[int, int | None], None]
"""Called as `(bytes_sent, total_bytes_or_None)` from gRPC's request thread."""


class DeferredProgress(ABC):
    """A progress callback that runs its reports elsewhere, later (the async client's, in its
    event loop). The upload waits for them once, before it ends: an exception from any report
    then stops the call before the server has the whole upload, as a callback run in place would.
    A base class, not a protocol: a caller's own callback is never taken for one."""

    @abstractmethod
    def __call__(self, sent: int, total: int | None) -> None: ...

    @abstractmethod
    def wait_until_run(self, abandoned: Callable[[], bool]) -> None:
        """Returns once the reports handed over so far have run (or will not run, or
        `abandoned()` turns true); raises what one of them raised."""

DEFAULT_CHUNK_SIZE = 256 * 1024
# Measured on loopback: 64 KiB 280 MB/s, 256 KiB 680 MB/s, 1 MiB 950 MB/s. The ceiling leaves
# room for message framing under gRPC's default 4 MiB receive limit on the server.
MAX_CHUNK_SIZE = 4 * 1024 * 1024 - 16 * 1024
_HASH_BLOCK_SIZE = 1024 * 1024


@dataclass(frozen=True)
class UploadFile:
    """An open video to upload, with what can be declared about it up front."""

    stream: BinaryFile
    owned: bool
    """Whether the stream was opened here (from a path) and so must be closed here."""
    file_name: str
    size_bytes: int | None
    sha256: str | None
    stop_reading: Callable[[], None] = lambda: None
    """Makes a read waiting on another thread's work give up (`StoppableChunks.stop`)."""

    def close(self) -> None:
        """Close the stream if it was opened here; a caller's file object stays open."""
        if self.owned:
            cast(IO[bytes], self.stream).close()  # opened here, from a path or bytes


def open_upload(path_or_file: PathOrFile, *, declare_size: bool, checksum: bool) -> UploadFile:
    """Opens a path (or adopts a binary file object at its current position) and measures it.

    Size and checksum are known only for seekable input: the checksum costs a first read
    pass, after which the stream is rewound to where it was.
    """
    stop_reading: Callable[[], None] = UploadFile.stop_reading
    if isinstance(path_or_file, str | os.PathLike):
        stream: BinaryFile = open(path_or_file, "rb")  # noqa: SIM115 - closed by ChunkedRequests
        owned = True
    elif isinstance(path_or_file, bytes | bytearray | memoryview):
        stream, owned = io.BytesIO(path_or_file), True
    elif _is_chunks(path_or_file):
        chunks = cast(Iterable[bytes], path_or_file)
        stream, owned = _ChunksFile(chunks), False
        if isinstance(chunks, StoppableChunks):
            stop_reading = chunks.stop
    else:
        _require_binary(path_or_file)
        stream, owned = cast(BinaryFile, path_or_file), False
    try:
        name = getattr(stream, "name", "")
        if isinstance(name, bytes):  # opened by a bytes path: `open(b"clip.mp4", "rb")`
            name = os.fsdecode(name)
        file_name = os.path.basename(name) if isinstance(name, str) else ""
        # A file-like object without `seekable` (only `read`) is read as a stream.
        is_seekable = getattr(stream, "seekable", None)
        seekable = bool(is_seekable()) if callable(is_seekable) else False
        size = _remaining_size(cast(_SeekableFile, stream)) if seekable and declare_size else None
        sha256 = _sha256_and_rewind(cast(_SeekableFile, stream)) if seekable and checksum else None
    except BaseException:
        if owned:
            cast(IO[bytes], stream).close()
        raise
    return UploadFile(stream, owned, file_name, size, sha256, stop_reading)


def _is_chunks(source: object) -> bool:
    """An iterable of chunks, not a file object (files iterate over lines) nor text."""
    return (hasattr(source, "__iter__") and not callable(getattr(source, "read", None))
            and not isinstance(source, str | io.TextIOBase))


class _ChunksFile:
    """An iterable of chunks read as a stream (no `seekable`: neither size nor checksum is
    declared). Reads gather chunks up to the size asked for, so a source of small pieces (an
    HTTP body's, a few KiB each) goes out in `chunk_size` messages, not thousands of tiny ones."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._chunk = b""
        self._offset = 0
        self._ended = False

    def read(self, size: int, /) -> bytes:
        pieces: list[bytes] = []
        wanted = size
        while wanted > 0 and self._has_more():
            if self._offset == 0 and len(self._chunk) <= wanted:
                piece = self._chunk  # whole, not copied
            else:
                piece = self._chunk[self._offset:self._offset + wanted]
            self._offset += len(piece)
            wanted -= len(piece)
            pieces.append(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _has_more(self) -> bool:
        while self._offset >= len(self._chunk):
            if self._ended:
                return False
            chunk = next(self._chunks, None)
            if chunk is None:
                self._ended = True
                return False
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise TypeError(f"the video's chunks must be bytes, got {type(chunk).__name__}")
            self._chunk, self._offset = bytes(chunk), 0
        return True


def _require_binary(stream: object) -> None:
    """A text-mode file would fail later, deep in hashing or in gRPC's thread: say what is needed now."""
    if hasattr(stream, "__aiter__"):
        raise TypeError(f"the video is an async iterable ({type(stream).__name__}): give it to AsyncVideodagClient, "
                        "which reads it in its event loop")
    if isinstance(stream, io.TextIOBase) or not callable(getattr(stream, "read", None)):
        name = getattr(stream, "name", None)
        what = f"{type(stream).__name__} {name!r}" if name is not None else type(stream).__name__
        raise TypeError("the video must be a path, a binary file object (open it with 'rb'), bytes or an iterable of "
                        f"bytes, got {what}")


def _remaining_size(stream: _SeekableFile) -> int:
    start = stream.tell()
    stream.seek(0, io.SEEK_END)  # what it returns varies (codecs' streams return None): tell() says
    end = stream.tell()
    stream.seek(start)
    return end - start


def _never() -> bool:
    return False


upload_abandoned: ContextVar[Callable[[], bool]] = ContextVar("upload_abandoned", default=_never)
"""Set by the asyncio client around the start of a call on its thread: true once the task that
awaits the call was cancelled or the client closed. The checksum pass, a whole read of the
file before any byte is sent, then stops, and leaves the caller's file where it was: a retry
with the same file object must not race a pass nobody waits for any more."""


class UploadAbandoned(Cancelled):
    """Raised by the checksum pass of a call its caller abandoned (`upload_abandoned`); a stream
    the client's close cut short raises the client's error from it, as for any other."""


def _sha256_and_rewind(stream: _SeekableFile) -> str:
    abandoned = upload_abandoned.get()
    start = stream.tell()
    digest = hashlib.sha256()
    try:
        while block := read_bytes(stream, _HASH_BLOCK_SIZE):
            if abandoned():
                raise UploadAbandoned("the call was abandoned before its upload began")
            digest.update(block)
    finally:
        stream.seek(start)
    return digest.hexdigest()


def read_bytes(stream: BinaryFile, size: int) -> bytes:
    """`stream.read(size)`, which must be bytes: a file object that decodes text (codecs.open, a
    SpooledTemporaryFile in "w+" mode) passes for binary until it is read."""
    block = stream.read(size)
    if block is None:  # io's answer of a non-blocking stream with nothing ready
        raise TypeError(f"{type(stream).__name__}.read() returned None, as a non-blocking stream with no data ready "
                        "does: give a blocking one")
    if not isinstance(block, bytes | bytearray | memoryview):
        raise TypeError(f"the video must be a binary file object (open it with 'rb'): {type(stream).__name__}.read() "
                        f"returned {type(block).__name__}")
    return bytes(block) if isinstance(block, memoryview) else block


class ChunkedRequests:
    """Iterator of encoded requests: `first_request` once, then `encode_chunk(chunk)` until end of file.

    gRPC iterates it on its own thread; `close()` comes from the caller's thread and must
    return at once even while a read is blocked (a pipe that never delivers), so the lock
    guards only the flags, never the read. After `close()` iteration stops, and an owned
    file is closed by whichever side finishes last. An exception raised while reading or
    in the progress callback is kept in `error`, so the caller can raise it instead of the
    UNKNOWN status gRPC turns it into.
    """

    def __init__(
        self,
        first_request: bytes,
        encode_chunk: Callable[[bytes], bytes],
        upload: UploadFile,
        chunk_size: int,
        on_progress: UploadProgress | None,
    ) -> None:
        self._first_request: bytes | None = first_request
        self._encode_chunk = encode_chunk
        self._upload = upload
        self._chunk_size = chunk_size
        self._on_progress = on_progress
        self._lock = threading.Lock()
        self._closed = False
        self._reading = False
        self._bytes_sent = 0
        self._bytes_in_flight = 0
        self.error: BaseException | None = None

    def __iter__(self) -> ChunkedRequests:
        return self

    def __next__(self) -> bytes:
        with self._lock:
            if self._closed:
                raise StopIteration
            self._reading = True
        try:
            return self._next_request()
        except StopIteration:
            self.close()
            raise
        except Exception as error:
            with self._lock:
                # A read that failed because close() stopped it (an async body's pull, cut as the
                # call ended) is no error of the upload's: the call's own (a server's refusal) is.
                if not self._closed:
                    self.error = error
            self.close()
            raise
        except BaseException as error:
            self.error = error  # raised again in the caller's thread, in place of the call's error
            self.close()
            # gRPC's request thread handles Exception only: SystemExit or KeyboardInterrupt from a
            # callback would end that thread and leave the call waiting for the rest of the upload.
            raise RuntimeError(f"the upload stopped: {type(error).__name__} while reading it") from error
        finally:
            with self._lock:
                self._reading = False
                if self._closed:
                    self._release_file()

    def _next_request(self) -> bytes:
        if self._first_request is not None:
            first, self._first_request = self._first_request, None
            return first
        # gRPC asks for the next message only once the previous one was sent.
        self._report_progress()
        chunk = read_bytes(self._upload.stream, self._chunk_size)
        if not chunk:
            if isinstance(self._on_progress, DeferredProgress):
                self._on_progress.wait_until_run(lambda: self._closed)
            raise StopIteration
        self._bytes_in_flight = len(chunk)
        return self._encode_chunk(chunk)

    def _report_progress(self) -> None:
        if self._bytes_in_flight:
            self._bytes_sent += self._bytes_in_flight
            self._bytes_in_flight = 0
            if self._on_progress is not None:
                self._on_progress(self._bytes_sent, self._upload.size_bytes)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if not self._reading:
                self._release_file()
        self._upload.stop_reading()

    def _release_file(self) -> None:
        self._upload.close()


def run_config(pipeline_id: str, options: RunOptions | None, config_path: str) -> run_pb2.RunConfig:
    """A call's RunConfig but for its upload's fields, built before the file is opened and read
    for its checksum: options that cannot be sent fail at once, and leave no file open."""
    config = run_pb2.RunConfig(pipeline_id=text_argument("pipeline_id", pipeline_id))
    options = run_options_argument(options)
    if options is not None:
        config.options.CopyFrom(options.to_proto(config_path))
    return config


def describe_upload(config: run_pb2.RunConfig, upload: UploadFile) -> None:
    """Fills in what the call says of its video, once the upload is open (and checksummed)."""
    config.file_name = _sendable_name(upload.file_name)
    config.declared_size_bytes = upload.size_bytes or 0
    config.sha256 = upload.sha256 or ""


def _sendable_name(file_name: str) -> str:
    """The file name as text protobuf can send. A name whose bytes are not in the file system's
    encoding reaches Python with lone surrogates, which protobuf cannot encode; the name only
    labels the run, so its bytes are read as UTF-8, each one that is not sent as U+FFFD, instead
    of failing the upload. A name Python decoded (in a Latin-1 locale, `café.mp4` from Latin-1
    bytes) is the user's own text, and is sent as it is."""
    try:
        file_name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(file_name).decode("utf-8", "replace")
    return file_name
