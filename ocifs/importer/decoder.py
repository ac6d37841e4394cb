"""Transparent decompression in front of the archive importer's tar parser.

An archive written into `.import/` may be a plain tar, a gzip'd tar (any number
of members) or a zstd-compressed tar (any number of frames, as `zstd` and
`docker save | zstd` write them); the first bytes decide. Output reaches the
consumer in chunks of at most `OUT_CHUNK`, so a decompression bomb never sits in
memory: isal is asked for at most that much per call, and python-zstandard's
stream writer hands it out in pieces of that size.
"""

from __future__ import annotations

from typing import IO, Any, Protocol, cast

import zstandard
from isal import isal_zlib

from ocifs.errors import InvalidInput

OUT_CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZLIB_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]


class PlainSink(Protocol):
    def feed(self, data: bytes | memoryview) -> None: ...


class Decoder:
    """Feed raw archive bytes; the sink gets the decompressed tar stream.

    `complete` says whether the compressed stream ended cleanly. For gzip that
    includes the last member's trailer; a zstd stream is judged by the tar it
    carries (its end-of-archive marker, checked by the caller), since the
    stream writer does not say where frames end. Every blob it delivers is
    checked against its digest either way.
    """

    def __init__(self, sink: PlainSink) -> None:
        self._sink = sink
        self.format: str | None = None  # "tar", "gzip" or "zstd" once the head is seen
        self._z: Any = None
        self._zstd: Any = None
        self._head = b""

    @property
    def complete(self) -> bool:
        return self.format != "gzip" or (self._z is None and not self._head)

    def feed(self, data: bytes | memoryview) -> None:
        if self.format is None:
            head = self._head = self._head + bytes(data)
            if any(len(head) < len(m) and m.startswith(head) for m in (GZIP_MAGIC, ZSTD_MAGIC)):
                return  # too short to tell yet
            if head.startswith(GZIP_MAGIC):
                self.format = "gzip"
            elif head.startswith(ZSTD_MAGIC):
                self.format = "zstd"
                target = cast(IO[bytes], _Emit(self._sink))  # only its write() is called
                self._zstd = zstandard.ZstdDecompressor().stream_writer(
                    target, write_size=OUT_CHUNK
                )
            else:
                self.format = "tar"
            data, self._head = self._head, b""
        if self.format == "tar":
            self._sink.feed(data)
        elif self.format == "gzip":
            self._gunzip(data)
        else:
            try:
                self._zstd.write(data)
            except zstandard.ZstdError as exc:
                raise InvalidInput(f"zstd: corrupt compressed data ({exc})") from None

    def _gunzip(self, data: bytes | memoryview) -> None:
        pending = self._head + bytes(data)
        self._head = b""
        while True:  # past the tar end marker too: the gzip trailer must check out
            if self._z is None:
                if pending.strip(b"\0") == b"":
                    return  # nothing more, or zero padding after the last gzip member
                if len(pending) < 2:
                    self._head = pending
                    return
                if pending[:2] != GZIP_MAGIC:
                    raise InvalidInput("gzip: garbage after the compressed stream")
                self._z = isal_zlib.decompressobj(31)
            try:
                out = self._z.decompress(pending, OUT_CHUNK)
            except (_ZLIB_ERROR, ValueError) as exc:
                raise InvalidInput(f"gzip: corrupt compressed data ({exc})") from None
            self._sink.feed(out)
            if self._z.eof:
                pending = self._z.unused_data
                self._z = None
                continue
            pending = self._z.unconsumed_tail
            if not pending and len(out) < OUT_CHUNK:
                return


class _Emit:
    """The file-like target python-zstandard's stream writer pushes output into."""

    def __init__(self, sink: PlainSink) -> None:
        self._sink = sink

    def write(self, data: bytes) -> int:
        self._sink.feed(data)
        return len(data)
