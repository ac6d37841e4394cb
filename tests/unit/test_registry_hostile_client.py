"""The registry client's stop and pace rules, and the seek-point build's stop, on real
sockets and real gzip data.

`client.stop()` must end whatever a request waits for: a connect nobody answers
(a listener whose accept queue is full drops the SYN) and an answer that never
comes. Before, both held their thread for the whole timeout, and the daemon's exit
(trio.run waits for its worker threads) with it.
"""

from __future__ import annotations

import gzip
import os
import socket
import threading
import time
from pathlib import Path

import httpcore
import pytest

from ocifs.cache import DiskCache
from ocifs.codec import seekable
from ocifs.codec.blobio import BytesReader
from ocifs.errors import RegistryError, Unmounting
from ocifs.registry import sockets
from ocifs.registry.client import ClientOptions, RegistryClient
from ocifs.registry.pace import MIN_RATE, Pace, TooSlow
from ocifs.registry.reference import Reference
from ocifs.registry.sockets import StoppableBackend

#: only catches a hang: the connects and reads here have a 600 s timeout
BOUND = 60.0


def _full_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listener that never accepts, its queue filled: a further connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(2):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(listener.getsockname())
        fillers.append(s)
    time.sleep(0.2)  # the handshakes that can complete have completed
    return listener, fillers


def test_interrupt_ends_a_connect_nobody_answers() -> None:
    backend = StoppableBackend()
    listener, fillers = _full_listener()
    host, port = listener.getsockname()
    outcome: list[BaseException | object] = []

    def connect() -> None:
        try:
            outcome.append(backend.connect_tcp(host, port, timeout=600))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + BOUND
        while not backend._connecting:
            assert time.monotonic() < deadline, "the connect never started"
            time.sleep(0.01)
        time.sleep(0.2)  # inside connect() now
        assert thread.is_alive(), f"the connect did not hang: {outcome}"
        backend.interrupt()
        thread.join(BOUND)
        assert not thread.is_alive(), "the interrupted connect goes on"
        assert isinstance(outcome[0], httpcore.ConnectError), outcome
        with pytest.raises(httpcore.ConnectError, match="unmounting"):
            backend.connect_tcp(host, port, timeout=600)  # none after the stop
    finally:
        listener.close()
        for s in fillers:
            s.close()


def test_a_connect_that_times_out_tries_the_next_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As `socket.create_connection`: a host's first address not answering (a
    blackhole: a listener whose queue is full) is no reason to give up on the next."""
    listener, fillers = _full_listener()
    good = socket.create_server(("127.0.0.1", 0))
    tcp = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
    addresses = [(*tcp, listener.getsockname()), (*tcp, good.getsockname())]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: addresses)
    backend = StoppableBackend()
    try:
        stream = backend.connect_tcp("two-addresses.invalid", 1, timeout=0.5)
        peer, _ = good.accept()
        stream.write(b"ping")
        assert peer.recv(4) == b"ping"
        peer.close()
        stream.close()
        addresses.pop()  # only the blackhole left: the timeout is the error
        with pytest.raises(httpcore.ConnectTimeout):
            backend.connect_tcp("two-addresses.invalid", 1, timeout=0.5)
    finally:
        good.close()
        listener.close()
        for s in fillers:
            s.close()


def test_stop_ends_a_request_whose_answer_never_comes() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    accepted = threading.Event()

    def accept() -> None:
        conn, _ = listener.accept()
        held.append(conn)  # read nothing, answer nothing
        accepted.set()

    threading.Thread(target=accept, daemon=True).start()
    host, port = listener.getsockname()
    client = RegistryClient(
        Reference(registry=f"{host}:{port}", repository="x"),
        ClientOptions(tls_verify=False, timeout=600, retries=3),
    )
    client.scheme = "http"
    pools = [client.http()._transport._pool]  # type: ignore[attr-defined]
    assert pools[0]._network_backend is client._backend  # httpx's insides as expected
    outcome: list[BaseException | object] = []

    def request() -> None:
        try:
            outcome.append(client.send("GET", client.repo_url("tags/list")))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    try:
        assert accepted.wait(BOUND)
        time.sleep(0.2)  # waiting for the headers now
        client.stop()
        thread.join(BOUND)
        assert not thread.is_alive(), "the request outlived stop()"
        assert isinstance(outcome[0], Unmounting), outcome
    finally:
        client.close()
        listener.close()
        for s in held:
            s.close()


def test_every_pool_uses_the_stoppable_backend_proxies_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`_use_backend` reaches into httpx's private pools (the versions are pinned in
    pyproject.toml): its own transport's and those of *_PROXY's mounts."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    client = RegistryClient(Reference(registry="registry.invalid", repository="x"),
                            ClientOptions())
    try:
        http = client.http()
        mounted = [t for t in http._mounts.values() if t is not None]  # type: ignore[attr-defined]
        assert mounted, "httpx made no proxy transport for *_PROXY"
        for transport in [http._transport, *mounted]:  # type: ignore[attr-defined]
            assert transport._pool._network_backend is client._backend
    finally:
        client.close()


def test_without_httpcores_sync_stream_the_client_uses_the_plain_backend(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A newer httpcore that moved the private class ocifs builds on: one warning,
    and requests still work (on httpcore's own backend)."""
    monkeypatch.setattr(sockets, "AVAILABLE", False)
    server = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    host, port = server.getsockname()
    client = RegistryClient(Reference(registry=f"{host}:{port}", repository="x"),
                            ClientOptions(tls_verify=False, timeout=5.0, retries=0))
    client.scheme = "http"
    try:
        assert client.send("GET", client.repo_url("tags/list")).content == b"{}"
        pool = client.http()._transport._pool  # type: ignore[attr-defined]
        assert pool._network_backend is not client._backend
        assert "not where ocifs looks" in caplog.text
    finally:
        client.close()
        server.close()
        thread.join(BOUND)


def test_a_trickled_header_is_a_stall() -> None:
    """httpcore's read timeout is per recv: one header byte every 0.2 s never trips
    it. The connection's pace (sockets.py) counts the status line and headers too,
    so the request fails as stalled after its window (1 s here), not when the
    registry is done trickling."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(40):  # 8 s of header if nobody hangs up
                    if done.is_set():
                        return
                    conn.sendall(b"a")
                    time.sleep(0.2)
                conn.sendall(b"\r\nContent-Length: 2\r\n\r\n{}")
                conn.recv(1)
            except OSError:
                return  # the client hung up: what the test wants

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    host, port = listener.getsockname()
    client = RegistryClient(
        Reference(registry=f"{host}:{port}", repository="x"),
        ClientOptions(tls_verify=False, timeout=1.0, retries=0),
    )
    client.scheme = "http"
    try:
        with pytest.raises(RegistryError, match="stalled"):
            client.send("GET", client.repo_url("tags/list"))
    finally:
        done.set()
        client.close()
        listener.close()
        server.join(BOUND)


def test_pace_counts_a_trickle_as_a_stall() -> None:
    pace = Pace(0.2)
    pace.add(10)
    time.sleep(0.25)
    with pytest.raises(TooSlow, match="stalled: 11 bytes"):
        pace.add(1)
    fast = Pace(0.2)
    time.sleep(0.25)
    fast.add(MIN_RATE)  # enough for the window: a new one starts
    fast.add(1)


class _StopsAfter:
    """A blob reader that sets `stop` after `n` reads (the unmount, mid-build)."""

    def __init__(self, data: bytes, stop: threading.Event, n: int) -> None:
        self._inner = BytesReader(data)
        self._stop = stop
        self._left = n
        self.reads = 0

    @property
    def size(self) -> int:
        return self._inner.size

    def pread(self, offset: int, size: int) -> bytes:
        self.reads += 1
        self._left -= 1
        if self._left <= 0:
            self._stop.set()
        return self._inner.pread(offset, size)

    def close(self) -> None:
        pass


def test_a_seek_point_build_ends_at_the_stop_and_caches_nothing(tmp_path: Path) -> None:
    data = gzip.compress(os.urandom(4 << 20), compresslevel=1)
    cache = DiskCache(tmp_path / "cache")
    stop = threading.Event()
    reader = _StopsAfter(data, stop, 3)
    with pytest.raises(Unmounting, match="unmounting"):
        seekable.open_gzip(reader, cache, "layer-key", stop)
    assert reader.reads <= 4  # ended at the next read, not at the end of the blob
    assert cache.get(seekable.CACHE_KIND, "layer-key", version=1) is None
    # without a stop the same build completes
    built = seekable.open_gzip(BytesReader(data), cache, "layer-key", threading.Event())
    assert built.pread(0, 16) == gzip.decompress(data)[:16]
