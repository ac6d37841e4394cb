"""Connections the unmount can end at once, whatever they are waiting for.

Why: a worker thread inside an HTTP request cannot be cancelled, and trio.run
(hence the daemon's exit) waits for every worker thread. A registry that
accepts a connection and then sends nothing (no headers, or a body that stops
half-way), or a connect that is never answered, held the thread for the whole
timeout, and a retrying request for several. `StoppableBackend` is httpcore's
sync network backend, except that it remembers every socket it opened and
`interrupt()` shuts them all down (the connect, and every read or write in
progress on them, end at once with an error) and refuses new connects. The
client then sees its `stopping` flag and raises Unmounting.

`socket.socket.shutdown` is used even for TLS sockets, as `download.interrupt`
explains; on Linux it also aborts a connect in progress (SYN_SENT).

The same streams hold every answer to its pace (`pace.py`): httpcore's read
timeout is per `recv`, so a registry sending one header byte a second would
hold a request for ever. Each stream counts the bytes it reads since its last
write (a request's start), so the status line, the headers and any body httpx
reads are bounded in one place. (A TLS handshake needs no pace: CPython's
`do_handshake` holds the whole handshake to the socket timeout.) The one read
that bypasses these streams, a blob body read straight from the socket
(`download._from_socket`), keeps its own Pace.
"""

from __future__ import annotations

import socket
import ssl
import threading
import typing
import weakref

import httpcore

from ocifs.registry.pace import Pace

# httpcore's own stream over a socket (plain or TLS); the backend below differs
# from httpcore.SyncBackend only in how the socket is made and remembered. A
# private class: if a newer httpcore moved it, the client keeps httpcore's plain
# backend (`AVAILABLE` False, one warning), without stop or pace on connections.
try:
    from httpcore._backends.sync import SyncStream
except ImportError:  # pragma: no cover - only with an httpcore outside the pinned range
    SyncStream = None  # type: ignore[assignment,misc]

#: whether StoppableBackend can be used with the installed httpcore
AVAILABLE = SyncStream is not None


class _Tracked(httpcore.NetworkStream):
    """A stream whose current socket (TLS after `start_tls`) the backend can reach."""

    def __init__(self, inner: httpcore.NetworkStream, owner: StoppableBackend) -> None:
        self._inner = inner
        self._owner = owner
        self._pace: Pace | None = None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._inner.read(max_bytes, timeout)
        if self._pace is not None:
            self._pace.add(len(data))  # TooSlow: httpx passes it up, the pool drops us
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        window = self._owner.window
        if window is not None:  # a request starts: its answer gets a pace of its own
            self._pace = Pace(window)
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._owner._forget(self)
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        self._inner = self._inner.start_tls(ssl_context, server_hostname, timeout)
        if self._owner.stopped:  # stopped during the handshake: the TLS socket is new
            self._owner.interrupt()
        return self

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)

    def socket(self) -> socket.socket | None:
        sock = self._inner.get_extra_info("socket")
        return sock if isinstance(sock, socket.socket) else None


class StoppableBackend(httpcore.NetworkBackend):
    """See the module docstring. Thread-safe. `window`: the pace window (the client's
    timeout); None: no pace."""

    def __init__(self, window: float | None = None) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._streams: weakref.WeakSet[_Tracked] = weakref.WeakSet()
        self._connecting: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self.stopped = False

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        """`socket.create_connection`, with each socket known before its connect starts."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        # as `socket.create_connection`: an address that fails or times out is
        # remembered and the next one tried; the last error is raised at the end
        error: OSError | None = None
        for family, kind, proto, _name, address in infos:
            sock = socket.socket(family, kind, proto)
            with self._lock:
                if self.stopped:
                    sock.close()
                    raise httpcore.ConnectError("not connecting: unmounting")
                self._connecting.add(sock)
            try:
                sock.settimeout(timeout)
                if local_address is not None:
                    sock.bind((local_address, 0))
                sock.connect(address)
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            finally:
                with self._lock:
                    self._connecting.discard(sock)
            stream = _Tracked(SyncStream(sock), self)
            with self._lock:
                self._streams.add(stream)
                stopped = self.stopped
            if stopped:
                stream.close()
                raise httpcore.ConnectError("not connecting: unmounting")
            return stream
        if isinstance(error, TimeoutError):
            raise httpcore.ConnectTimeout(str(error) or "connect timed out") from error
        raise httpcore.ConnectError(str(error) if error else f"{host}: no address")

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError(f"{path}: unix sockets are not used for registries")

    def interrupt(self) -> None:
        """End every connect, read and write in progress now, and every later connect."""
        with self._lock:
            self.stopped = True
            sockets = [s.socket() for s in self._streams] + list(self._connecting)
        for sock in sockets:
            if sock is None:
                continue
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass  # not connected yet, or closed meanwhile

    def _forget(self, stream: _Tracked) -> None:
        with self._lock:
            self._streams.discard(stream)
