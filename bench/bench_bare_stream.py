"""A bare gRPC byte-stream server: the upload ceiling UploadAndRun is compared with.

One client-streaming method whose messages are raw bytes (no protobuf around them), each
written to a temp file as it arrives, as a server storing an upload must at least do.
With `--sha256` it also hashes every byte, as the contract makes videodag do
(`UploadReceived.sha256`): the reference that tells the hash's cost from the service's own.
Run as a script; prints 'listening on 127.0.0.1:PORT' once serving.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
from bench_serving import serve_on_loopback

METHOD = "/bench.ByteStream/Upload"


def _store(chunks: Iterator[bytes], context: grpc.ServicerContext, temp_dir: Path, sha256: bool) -> bytes:
    received = 0
    digest = hashlib.sha256() if sha256 else None
    descriptor, name = tempfile.mkstemp(dir=temp_dir, prefix="bare-")
    try:
        with os.fdopen(descriptor, "wb") as file:
            for chunk in chunks:
                file.write(chunk)
                if digest is not None:
                    digest.update(chunk)
                received += len(chunk)
    finally:
        os.unlink(name)
    return str(received).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--temp-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--max-message-bytes", type=int, default=8 * 1024 * 1024)
    parser.add_argument("--sha256", action="store_true", help="also hash every byte received")
    args = parser.parse_args()
    args.temp_dir.mkdir(parents=True, exist_ok=True)
    options = [("grpc.max_receive_message_length", args.max_message_bytes),
               ("grpc.max_send_message_length", args.max_message_bytes)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
    handler = grpc.stream_unary_rpc_method_handler(
        lambda chunks, context: _store(chunks, context, args.temp_dir, args.sha256))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.ByteStream", {"Upload": handler}),))
    serve_on_loopback(server, "bare byte-stream server" + (" (SHA-256)" if args.sha256 else ""))


if __name__ == "__main__":
    main()
