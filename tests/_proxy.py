"""A TCP forwarder between a daemon and PostgreSQL, to take the database away and give it back.

Tests must not stop the machine's PostgreSQL server (others use it); an outage as the daemon sees
it is the same thing from the client's side: every open connection drops, and new ones fail.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Proxy"]

_CHUNK = 65536


class Proxy:
    """Listens on 127.0.0.1 (a free port) and forwards each connection to `target`, both ways, on its own threads.

    `cut()` closes every open connection (with a reset, as a crashed server's host would) and makes
    the proxy close each new one at once, so clients fail fast instead of hanging; `restore()`
    forwards new connections again. `close()` (or leaving the `with` block) stops everything.
    """

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._up = True
        self._closing = False
        self._accepter = threading.Thread(target=self._accept, name="test-proxy", daemon=True)
        self._accepter.start()

    def url(self, database_url: str) -> str:
        """`database_url` with its host and port replaced by the proxy's."""
        parts = urlsplit(database_url)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{self.port}" if user else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def cut(self) -> None:
        """The outage: every open connection is reset, and new ones are closed as soon as they are accepted."""
        with self._lock:
            self._up = False
            doomed, self._open = self._open, set()
        for sock in doomed:
            _reset(sock)

    def restore(self) -> None:
        """The server is back: new connections are forwarded again (those cut stay cut)."""
        with self._lock:
            self._up = True

    def close(self) -> None:
        """Cuts everything, stops accepting and joins every thread the proxy started."""
        self._closing = True
        self.cut()
        with socket.create_connection(("127.0.0.1", self.port)):  # wakes the accept loop, which sees _closing
            pass
        self._accepter.join()
        self._listener.close()
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            if self._closing:
                client.close()
                return
            self._connect(client)

    def _connect(self, client: socket.socket) -> None:
        """Forwards `client` to the target, unless the proxy is cut (or the target refuses): then resets it."""
        with self._lock:
            up = self._up
        server = None
        if up:
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                server = None
        if server is None:
            _reset(client)
            return
        with self._lock:
            if not self._up:  # cut while connecting
                _reset(client)
                _reset(server)
                return
            self._open |= {client, server}
        for source, sink in ((client, server), (server, client)):
            thread = threading.Thread(target=self._pump, args=(source, sink), name="test-proxy-pump", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copies bytes from `source` to `sink` until either side ends; then ends the other direction too (its
        pump wakes) and closes `source`, which only this thread reads."""
        try:
            while data := source.recv(_CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._open.discard(source)
        source.close()


def _reset(sock: socket.socket) -> None:
    """Closes `sock` with a TCP reset (SO_LINGER 0), so the peer fails at once rather than waiting."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
