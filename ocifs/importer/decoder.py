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

    `complete` says whether the compressed stream ended cleanly: for gzip after
    the last member's trailer, for zstd at the end of a frame (`ZstdFrames`
    follows the frame structure, since the stream writer does not say where
    frames end). A stream cut anywhere else fails the import, even when the
    tar it carries looks complete.
    """

    def __init__(self, sink: PlainSink) -> None:
        self._sink = sink
        self.format: str | None = None  # "tar", "gzip" or "zstd" once the head is seen
        self._z: Any = None
        self._zstd: Any = None
        self._frames: ZstdFrames | None = None
        self._head = b""

    @property
    def complete(self) -> bool:
        if self.format == "zstd":
            return self._frames is not None and self._frames.at_boundary
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
                self._frames = ZstdFrames()
            else:
                self.format = "tar"
            data, self._head = self._head, b""
        if self.format == "tar":
            self._sink.feed(data)
        elif self.format == "gzip":
            self._gunzip(data)
        else:
            assert self._frames is not None
            self._frames.feed(data)
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


_ZSTD_SKIPPABLE = range(0x184D2A50, 0x184D2A60)
_ZSTD_FRAME = 0xFD2FB528


class ZstdFrames:
    """Follows zstd frame boundaries (RFC 8878 section 3.1) without decompressing.

    Block headers give every block's stored size, so the walk only reads
    headers and skips the rest. `at_boundary`: at least one frame, and the
    input ends exactly after a frame (including its checksum).
    """

    def __init__(self) -> None:
        self.frames = 0
        self._buf = b""
        self._need = 4
        self._state = "magic"
        self._skip = 0
        self._last_block = False
        self._checksum = False

    @property
    def at_boundary(self) -> bool:
        return self.frames > 0 and self._state == "magic" and not self._buf and not self._skip

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self._skip:
                step = min(self._skip, len(view) - pos)
                self._skip -= step
                pos += step
                if not self._skip:
                    self._after_skip()
                continue
            take = min(self._need - len(self._buf), len(view) - pos)
            self._buf += bytes(view[pos : pos + take])
            pos += take
            if len(self._buf) == self._need:
                buf, self._buf = self._buf, b""
                self._parse(buf)

    def _expect(self, state: str, need: int) -> None:
        self._state, self._need = state, need
        if need == 0:
            self._parse(b"")

    def _parse(self, buf: bytes) -> None:
        state = self._state
        if state == "magic":
            magic = int.from_bytes(buf, "little")
            if magic == _ZSTD_FRAME:
                self._expect("descriptor", 1)
            elif magic in _ZSTD_SKIPPABLE:
                self._expect("skippable", 4)
            else:
                raise InvalidInput("zstd: garbage after the compressed stream")
        elif state == "skippable":
            self._skip_then(int.from_bytes(buf, "little"))
        elif state == "descriptor":
            fhd = buf[0]
            single = bool(fhd & 0x20)
            self._checksum = bool(fhd & 0x04)
            fcs = (0, 2, 4, 8)[fhd >> 6] or (1 if single else 0)
            dict_id = (0, 1, 2, 4)[fhd & 0x03]
            self._expect("header", (0 if single else 1) + dict_id + fcs)
        elif state == "header":
            self._expect("block", 3)
        elif state == "block":
            header = int.from_bytes(buf, "little")
            self._last_block = bool(header & 1)
            kind = (header >> 1) & 3
            if kind == 3:
                raise InvalidInput("zstd: corrupt compressed data (reserved block type)")
            self._skip_then(1 if kind == 1 else header >> 3)

    def _skip_then(self, size: int) -> None:
        self._state = "skipping-skippable" if self._state == "skippable" else self._state
        self._skip = size
        if not size:
            self._after_skip()

    def _after_skip(self) -> None:
        if self._state == "skipping-skippable":
            self._expect("magic", 4)
        elif self._state == "block":
            if not self._last_block:
                self._expect("block", 3)
            elif self._checksum:
                self._checksum = False
                self._state = "checksum"
                self._skip = 4
            else:
                self.frames += 1
                self._expect("magic", 4)
        elif self._state == "checksum":
            self.frames += 1
            self._expect("magic", 4)
