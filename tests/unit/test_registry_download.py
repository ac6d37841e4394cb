"""registry/download.py against a real HTTP server on loopback: the socket path and
httpx's own path write the right bytes, stop where the answer stops, refuse excess."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ocifs.registry import download

SIZE = 3 * 1024 * 1024 + 12345
BODY = os.urandom(SIZE)


class OneAnswer:
    """Answers each connection with `head` + `body`, then closes it."""

    def __init__(self, head: bytes, body: bytes) -> None:
        self.head, self.body = head, body
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/blob"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                try:
                    conn.sendall(self.head + self.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a client that stops reading early (what some tests do)

    def close(self) -> None:
        self.server.close()


def _fixed(length: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length


def _chunked(body: bytes) -> tuple[bytes, bytes]:
    pieces = [body[i : i + 100_000] for i in range(0, len(body), 100_000)]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", encoded


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def _receive(client: httpx.Client, server: OneAnswer, out: Path) -> tuple[int, int, str]:
    """(end reached, bytes queued, sha256 of what was written) for one answer."""
    written: list[int] = []
    fd = os.open(out, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        sink = download.BodySink(fd, hashlib.sha256(), written.append)
        try:
            with client.stream("GET", server.url) as response:
                end = download.receive(response, sink, 0, SIZE, 0, 10, lambda: False)
            digest = sink.finish()
        finally:
            sink.close()
    finally:
        os.close(fd)
    assert written == sorted(written) and (not written or written[-1] == end)
    return end, sink.queued, digest


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_the_whole_body_is_written_and_hashed(client, tmp_path, framing) -> None:
    head, body = (_fixed(SIZE), BODY) if framing == "length" else _chunked(BODY)
    server = OneAnswer(head, body)
    try:
        end, queued, digest = _receive(client, server, tmp_path / "blob")
    finally:
        server.close()
    assert end == queued == SIZE
    assert digest == hashlib.sha256(BODY).hexdigest()
    assert (tmp_path / "blob").read_bytes() == BODY


def test_an_answer_cut_short_stops_where_its_bytes_stop(client, tmp_path) -> None:
    half = SIZE // 2
    server = OneAnswer(_fixed(SIZE), BODY[:half])  # then the connection closes
    try:
        end, queued, _ = _receive(client, server, tmp_path / "blob")
    finally:
        server.close()
    assert end == queued == half  # the caller resumes from here with a range
    assert (tmp_path / "blob").read_bytes() == BODY[:half]


def test_more_bytes_than_the_descriptor_says_are_refused(client, tmp_path) -> None:
    server = OneAnswer(_fixed(SIZE + 1), BODY + b"x")
    try:
        with pytest.raises(download.TooLarge):
            _receive(client, server, tmp_path / "blob")
    finally:
        server.close()
