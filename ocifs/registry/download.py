"""Receiving a blob's body into the cache file with the fewest copies per byte.

Why: a cold read of a big blob is bound by CPU on two shared cores. httpx's
streaming path (httpcore + h11) reads 64 KiB at a time, copies each piece four
times (socket read, h11's receive buffer, its slice, httpcore's `bytes()`) and
runs h11's state machine per piece. For an identity-encoded HTTP/1.1 answer
with a Content-Length, `receive` takes the first piece from httpx (every body
byte h11 had already buffered with the headers) and then reads the rest
straight from the connection's socket (httpcore's `network_stream` response
extension) with `recv_into` into reused 1 MiB buffers. The connection is then
closed rather than reused (h11 never saw the end of the body). Any other
answer goes through httpx's own iterators.

`BodySink` writes the buffers into the cache file and hashes them, in order,
in a helper thread (both release the GIL), so receiving the next buffer
overlaps with them; it reports each written end so readers can go on.
"""

from __future__ import annotations

import hashlib
import os
import queue
import socket
import ssl
import threading
from collections.abc import Callable

import httpx

from ocifs.registry.client import describe
from ocifs.registry.pace import Pace, TooSlow
from ocifs.threadname import name_os_thread

#: bytes per receive buffer, and how many buffers a download uses at most
BUFFER_SIZE = 1 << 20
BUFFERS = 8


class Transient(Exception):
    """The answer broke off (connection error, timeout, end before the length): resume."""


class Stopped(Exception):
    """`stopped()` said so (unmounting)."""


class TooLarge(Exception):
    """The answer holds more bytes than the descriptor says: the blob can never be right."""


class WriteFailed(Exception):
    """The cache file could not be written (disk full...)."""


_Item = tuple[bytes | bytearray, int, int, bool]


class BodySink:
    """Write, then hash, the received bytes in order, in two helper threads (module
    docstring): readers wait only for the write; the digest check at the end waits for
    the hash, which is at most BUFFERS buffers behind."""

    def __init__(
        self, fd: int, hasher: hashlib._Hash, on_written: Callable[[int], None]
    ) -> None:
        self._fd = fd
        self._hash = hasher
        self._on_written = on_written
        self._to_write: queue.Queue[_Item | None] = queue.Queue(BUFFERS)
        self._to_hash: queue.Queue[_Item | None] = queue.Queue(4 * BUFFERS)
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._made = 0
        self.error: OSError | None = None
        #: end of the bytes queued so far: where a resumed request starts
        self.queued = 0
        self._threads = [
            threading.Thread(target=self._write_all, name="ocifs-blob-wr", daemon=True),
            threading.Thread(target=self._hash_all, name="ocifs-blob-sha", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def buffer(self) -> bytearray:
        """A free receive buffer (waits for the writer when all are in flight)."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            if self._made < BUFFERS:
                self._made += 1
                return bytearray(BUFFER_SIZE)
            return self._free.get()

    def put(self, data: bytes | bytearray, n: int, offset: int, *, reused: bool) -> None:
        """Queue `data[:n]` for bytes `offset`..; `reused`: `data` is one of `buffer()`'s."""
        if self.error is not None:
            raise WriteFailed(f"cannot write the cache file: {self.error}")
        if offset != self.queued:  # the hash needs every byte once, in order
            raise AssertionError(f"bytes queued at {offset}, expected {self.queued}")
        self._to_write.put((data, n, offset, reused))
        self.queued = offset + n

    def _write_all(self) -> None:
        name_os_thread()
        while (item := self._to_write.get()) is not None:
            data, n, offset, _reused = item
            if self.error is None:
                try:
                    self._write(memoryview(data)[:n], offset)
                    self._on_written(offset + n)
                except OSError as exc:
                    self.error = exc
            self._to_hash.put(item)
        self._to_hash.put(None)

    def _hash_all(self) -> None:
        name_os_thread()
        while (item := self._to_hash.get()) is not None:
            data, n, _offset, reused = item
            if self.error is None:
                self._hash.update(memoryview(data)[:n])
            if reused:
                self._free.put(data)  # type: ignore[arg-type]

    def _write(self, view: memoryview, offset: int) -> None:
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written

    def finish(self) -> str:
        """Wait for every queued byte; the hex digest of all of them."""
        self.close()
        if self.error is not None:
            raise WriteFailed(f"cannot write the cache file: {self.error}")
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._threads[0].is_alive():
            self._to_write.put(None)
        for thread in self._threads:
            thread.join()


def connection_socket(response: httpx.Response) -> socket.socket | None:
    """The socket under the answer (TLS or not), for `interrupt` from another thread."""
    stream = response.extensions.get("network_stream")
    sock = None if stream is None else stream.get_extra_info("socket")
    return sock if isinstance(sock, socket.socket) else None


def interrupt(sock: socket.socket) -> None:
    """End a receive blocked on `sock` in another thread now (unmounting): it sees the
    end of the stream instead of waiting up to the read timeout for the next byte.

    The base class's `shutdown` even for a TLS socket: `SSLSocket.shutdown` also
    drops its SSL object, and the reading thread then fails with ValueError ("Read
    on closed or unwrapped SSL socket") instead of seeing the connection end."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _raw_socket(response: httpx.Response) -> socket.socket | None:
    """The connection's socket when the rest of the body can be read from it directly."""
    headers = response.headers
    if (
        response.http_version != "HTTP/1.1"
        or headers.get("Content-Encoding", "identity") != "identity"
        or "Transfer-Encoding" in headers
        or not headers.get("Content-Length", "").isdigit()
    ):
        return None
    stream = response.extensions.get("network_stream")
    if stream is None or isinstance(stream.get_extra_info("ssl_object"), ssl.SSLObject):
        return None  # TLS inside a TLS proxy tunnel: the socket carries the outer layer
    sock = stream.get_extra_info("socket")
    return sock if isinstance(sock, socket.socket) else None


def receive(
    response: httpx.Response,
    sink: BodySink,
    start: int,
    size: int,
    skip: int,
    timeout: float,
    stopped: Callable[[], bool],
) -> int:
    """Queue the answer's body (after `skip` bytes) into `sink` as bytes `start`.. of a
    blob of `size` bytes; returns the end offset reached (Transient if the body ends
    early, TooLarge if it goes past `size`)."""
    have = start
    sock = None if skip else _raw_socket(response)
    left = int(response.headers.get("Content-Length", "0")) if sock is not None else 0
    # raw: a coded answer was refused (`client._check_coding`). Kept referenced until
    # the socket is read: closing the generator closes the connection
    chunks = response.iter_raw()
    try:
        for chunk in chunks:  # paced by the connection (sockets.py)
            if stopped():
                raise Stopped("unmounting")
            if skip:
                if len(chunk) <= skip:
                    skip -= len(chunk)
                    continue
                chunk, skip = chunk[skip:], 0
            if len(chunk) > size - have:
                raise TooLarge(f"larger than the {size} bytes its descriptor says")
            sink.put(chunk, len(chunk), have, reused=False)
            have += len(chunk)
            if sock is not None:
                # h11 handed out every body byte it had buffered: the rest is unread
                left -= len(chunk)
                break
        if sock is not None and left > 0:
            if left > size - have:
                raise TooLarge(f"larger than the {size} bytes its descriptor says")
            # read past the connection's stream: a pace of its own (pace.py)
            have = _from_socket(sock, sink, have, left, timeout, stopped, Pace(timeout))
    except (httpx.TransportError, TooSlow) as exc:
        raise Transient(describe(exc)) from None
    except ValueError:
        if stopped():  # a TLS socket unwrapped under the read by the stop (belt and braces)
            raise Stopped("unmounting") from None
        raise
    finally:
        chunks.close()  # type: ignore[attr-defined]
    return have


def _from_socket(
    sock: socket.socket,
    sink: BodySink,
    have: int,
    left: int,
    timeout: float,
    stopped: Callable[[], bool],
    pace: Pace,
) -> int:
    sock.settimeout(timeout)
    while left > 0:
        if stopped():
            raise Stopped("unmounting")
        buf = sink.buffer()
        view = memoryview(buf)
        want = min(len(buf), left)
        got = 0
        try:
            while got < want:
                n = sock.recv_into(view[got:want])
                if n == 0:
                    break
                got += n
                pace.add(n)
        except (OSError, TooSlow) as exc:  # timeout, reset, TLS error, trickle: resumed
            sink.put(buf, got, have, reused=True)
            raise Transient(describe(exc)) from None
        sink.put(buf, got, have, reused=True)
        have += got
        left -= got
        if got < want:
            break  # the server closed the connection early
    return have

