"""A stand-in for a reverse proxy that refuses calls with a plain HTTP status (nginx's 413 for
a body past `client_max_body_size`, its 502 while the server is down), on a real socket.

It speaks just enough HTTP/2 for gRPC's client: it takes the connection preface, exchanges
SETTINGS, answers PINGs, and answers every request stream with a response that carries an
HTTP status and an HTML body but no gRPC status, as nginx does. Request bodies are read and
dropped.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _SETTINGS, _PING, _GOAWAY = 0x0, 0x1, 0x4, 0x6, 0x7
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4
# HPACK: literal fields without indexing, named by the static table (8 ":status", 31 "content-type").
_STATUS_NAME = b"\x08"
_CONTENT_TYPE_NAME = b"\x0f\x10"


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream_id) + payload


def _literal(name: bytes, value: bytes) -> bytes:
    return name + bytes([len(value)]) + value


class HttpAnsweringProxy:
    """Listens on 127.0.0.1 (`port`) until closed; each request gets `http_status`."""

    def __init__(self, http_status: int) -> None:
        self.http_status = http_status
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._connections: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def __enter__(self) -> HttpAnsweringProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Shut down first: a socket closed in another thread does not wake a thread blocked on it."""
        for open_socket in [self._listener, *self._connections]:
            with contextlib.suppress(OSError):  # not connected, or closed by its client
                open_socket.shutdown(socket.SHUT_RDWR)
            open_socket.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed
                return
            self._connections.append(connection)
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            if self._read_exactly(connection, len(_PREFACE)) != _PREFACE:
                return
            connection.sendall(_frame(_SETTINGS, 0, 0))
            while True:
                header = self._read_exactly(connection, 9)
                length = int.from_bytes(header[:3], "big")
                kind, flags, stream_id = header[3], header[4], int.from_bytes(header[5:], "big") & 0x7FFFFFFF
                payload = self._read_exactly(connection, length)
                if kind == _SETTINGS and not flags & _ACK:
                    connection.sendall(_frame(_SETTINGS, _ACK, 0))
                elif kind == _PING and not flags & _ACK:
                    connection.sendall(_frame(_PING, _ACK, 0, payload))
                elif kind == _HEADERS:
                    self.requests += 1
                    connection.sendall(self._answer(stream_id))
                elif kind == _GOAWAY:
                    return
        except OSError:  # the client hung up, or close()
            return
        finally:
            connection.close()

    def _answer(self, stream_id: int) -> bytes:
        body = f"<html><body><h1>{self.http_status}</h1><hr>nginx</body></html>".encode()
        fields = (_literal(_STATUS_NAME, str(self.http_status).encode())
                  + _literal(_CONTENT_TYPE_NAME, b"text/html"))
        return _frame(_HEADERS, _END_HEADERS, stream_id, fields) + _frame(_DATA, _END_STREAM, stream_id, body)

    @staticmethod
    def _read_exactly(connection: socket.socket, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            piece = connection.recv(size - len(data))
            if not piece:
                raise ConnectionResetError("the client closed the connection")
            data += piece
        return bytes(data)
