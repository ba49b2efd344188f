"""A balancer in front of replicas behind one address, as a Kubernetes Service or an L4 load
balancer is: each new TCP connection goes to the replica chosen at the time; a connection
made stays with its replica until one side closes it. `route_to` changes the choice, as the
Service does when a replica starts terminating and leaves its endpoints."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class OneAddressBalancer:
    def __init__(self, backend_port: int) -> None:
        self._backend_port = backend_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self.connections_by_backend: dict[int, int] = {}
        threading.Thread(target=self._accept, name="balancer-accept", daemon=True).start()

    def route_to(self, backend_port: int) -> None:
        self._backend_port = backend_port

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            backend_port = self._backend_port
            try:
                backend = socket.create_connection(("127.0.0.1", backend_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    backend.close()
                    return
                self._sockets += [client, backend]
                self.connections_by_backend[backend_port] = self.connections_by_backend.get(backend_port, 0) + 1
            for source, sink in ((client, backend), (backend, client)):
                threading.Thread(target=_copy, args=(source, sink), name="balancer-copy", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        self._listener.close()
        for connection in sockets:
            connection.close()

    def __enter__(self) -> OneAddressBalancer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def _copy(source: socket.socket, sink: socket.socket) -> None:
    """Bytes one way until the source ends; then the sink hears the end too."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
