"""One sequential pass over a layer blob: hash, decompress, tee, bound.

The pass reads the compressed blob once, hashes it (the digest is checked at
the end, so only a verified layer is ever cached; a compressed archive being
mounted has no digest of its own and passes None; a registry download
verifies its own digest, and a pass reading it only asks for the verdict:
`blobio.SelfVerifying`), decompresses it — a blob of
CHILD_MIN_SIZE or more on the other core, by isal / python-zstandard on a
thread ahead of the tar walk (they release the GIL), or by `igzip`/`zstd` in a
child process when `OCIFS_DECODER=child` (child.py); a small one inline —
checks the limits (decompressed bytes, time), and optionally writes the
decompressed bytes to a file (the unpacked copy reads are served from) with a
CRC per `CRC_BLOCK` so that copy can be validated lazily. Decoder errors become
`StreamDamaged` at the output offset where the damage starts.

Memory is bounded by design, whatever the compression ratio: every decoder
call hands out at most OUT_SIZE bytes (gzip through `max_length`, zstd through
a `stream_reader` read; a child's output through a 1 MiB pipe, read 1 MiB at a
time), at most `_Sidecar` / `_Ahead` depth chunks are in flight, and
all-zero chunks become holes in the unpacked copy (no disk, no write time).
What a bomb still costs is decoding time, bounded by `Limits`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, BinaryIO, cast

import zstandard
from isal import isal_zlib

from ocifs.codec import child
from ocifs.codec.blobio import BlobReader, self_verifying
from ocifs.codec.damage import StreamDamaged
from ocifs.codec.limits import Limits
from ocifs.errors import BlobUnavailable, LimitExceeded, Unmounting
from ocifs.model.digest import Digest
from ocifs.model.mediatypes import Compression

log = logging.getLogger(__name__)

READ_SIZE = 1 << 20  # compressed bytes per pread
OUT_SIZE = 1 << 20  # most decompressed bytes per gzip decoder call
CRC_BLOCK = 1 << 20  # unpacked-copy validation granularity
#: compressed blobs at least this big are decoded on another core: by a thread,
#: or a child process (child.py, opt-in). Below it, starting either costs more
#: than the second core gives.
CHILD_MIN_SIZE = 1 << 20

_ZERO_CHUNK = bytes(OUT_SIZE)

crc32 = isal_zlib.crc32
_GzipError: type[Exception] = isal_zlib.error  # type: ignore[assignment]


class _Sidecar:
    """A helper thread for the GIL-releasing side work (hashing, copy writes, CRCs).

    Overlaps with decompression on the pass's own thread; the bounded queue
    keeps at most `depth` chunks (1 MiB each) in flight.
    """

    def __init__(self, depth: int = 8) -> None:
        self._queue: queue.Queue[tuple[Callable[[bytes], object], bytes] | None] = queue.Queue(
            depth
        )
        self._error: BaseException | None = None
        self._joined = False
        self._thread = threading.Thread(target=self._run, name="ocifs-layer-pass", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    item[0](item[1])
                except BaseException as exc:  # re-raised on the pass's thread by join()
                    self._error = exc

    def submit(self, fn: Callable[[bytes], object], data: bytes) -> None:
        """Queue work; dropped once `join` has run (an abandoned pass's decoder
        thread may still be producing: it must not wait on a queue nobody drains)."""
        while not self._joined:
            try:
                self._queue.put((fn, data), timeout=0.1)
                return
            except queue.Full:
                continue

    def join(self) -> None:
        """Wait for the queued work; re-raise its first error."""
        self._queue.put(None)
        self._thread.join()
        self._joined = True
        if self._error is not None:
            raise self._error


class _Ahead:
    """Runs an iterator on its own thread, up to `depth` items ahead of the consumer.

    The decoders release the GIL while they inflate, so decoding the next chunk
    overlaps with the tar walk of this one. Errors reach the consumer in order.
    """

    _END = object()

    def __init__(self, source: Iterator[bytes], depth: int = 4) -> None:
        self._queue: queue.Queue[object] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(source,), name="ocifs-decode", daemon=True
        )
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Iterator[bytes]) -> None:
        try:
            for item in source:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
            return
        self._put(self._END)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(bytes, item)

    def close(self, wait: bool = True) -> None:
        """Stop the producer at its next chunk; `wait` for it (not when abandoning
        a pass: its read may be waiting for a download)."""
        self._stop.set()
        if wait:
            self._thread.join()


class _IterReader:
    """A file-like `read(n)` over an iterator of chunks (for zstd's stream_reader)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def read(self, n: int = -1) -> bytes:
        data = self._rest or next(self._chunks, b"")
        if 0 <= n < len(data):
            self._rest = data[n:]
            return data[:n]
        self._rest = b""
        return data


class LayerPass:
    """See the module docstring. Use `chunks()` once, then `finish()`."""

    def __init__(
        self,
        reader: BlobReader,
        digest: Digest | None,
        compression: Compression,
        where: str,
        limits: Limits,
        sink: BinaryIO | None = None,
        sink_limit: int = 0,
        *,
        want_diff_id: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        self.reader = reader
        #: set when the daemon unmounts: the pass then ends at its next chunk
        #: (`Unmounting`), since the worker thread running it cannot be cancelled
        self.stop = stop
        self.digest = digest
        self.compression = compression
        self.where = where
        self._named = where if digest is None else f"layer {where}"  # for messages
        self.limits = limits
        self.sink = sink
        self.sink_limit = sink_limit
        self.consumed = 0  # compressed bytes read and hashed
        self.produced = 0  # decompressed bytes
        self.crcs: list[int] = []
        self._crc = 0
        self._crc_fill = 0
        self._decoded = 0  # bytes out of the decoder (ahead of `produced` while queued)
        self._thread: _Ahead | None = None
        # A reader that checks the digest itself (a registry download hashing what it
        # receives: ~0.7 CPU-s per GiB saved) is not hashed again; its read that
        # reaches the end fails unless the blob matched, and `finish` asks it again.
        # The token names the download claimed: bytes of a later one (it failed and
        # was started again under this pass) are not covered by its verdict.
        trusted = self_verifying(reader) if digest is not None else None
        self._token = trusted.claim_verification() if trusted is not None else None
        self._trusted = trusted if self._token is not None else None
        self._hasher = digest.hasher() if digest is not None and self._trusted is None else None
        # sha256 of the decompressed stream, only for the callers that check it (the
        # index pass, against the config's diff_ids); an uncompressed sha256 layer is its own.
        self._own_diff_id = (
            compression is Compression.NONE and digest is not None and digest.algorithm == "sha256"
        )
        self._diff_hasher = hashlib.sha256() if want_diff_id and not self._own_diff_id else None
        self._child: child.ChildDecoder | None = None
        self._comp = self._compressed()
        self._deadline = time.monotonic() + limits.max_index_seconds
        self._side = _Sidecar()
        # The diff_id hash gets its own thread: on the shared sidecar it made the
        # pass ~45% slower (sha256 of every decompressed byte on top of the rest).
        self._diff_side = _Sidecar() if self._diff_hasher is not None else None
        self._closed = False

    def _compressed(self, hash_here: bool = False) -> Iterator[bytes]:
        """The blob in READ_SIZE chunks, hashed on the sidecar (or on this thread:
        the child decoder's feeder thread has nothing else to do)."""
        size = self.reader.size
        hasher = self._hasher
        while self.consumed < size:
            if self._closed:  # abandoned (close() without finish()): stop reading
                raise BlobUnavailable(f"{self._named}: pass abandoned")
            self._check_stop()
            data = self.reader.pread(self.consumed, min(READ_SIZE, size - self.consumed))
            if not data:
                raise BlobUnavailable(f"{self._named}: blob ends early at {self.consumed}")
            if hasher is not None:
                if hash_here:
                    hasher.update(data)
                else:
                    self._side.submit(hasher.update, data)
            self.consumed += len(data)
            yield data

    def _on_another_core(self) -> bool:
        return self.compression is not Compression.NONE and self.reader.size >= CHILD_MIN_SIZE

    def chunks(self) -> Iterator[bytes]:
        """Decompressed bytes in order. Raises StreamDamaged, LimitExceeded, BlobUnavailable."""
        decoder = self._start_child() if self._on_another_core() and child.enabled() else None
        if decoder is not None:
            source: Iterator[bytes] = self._from_child(decoder)
        else:
            if self.compression is Compression.GZIP:
                decoded = self._gunzip()
            elif self.compression is Compression.ZSTD:
                decoded = self._unzstd()
            else:
                decoded = self._comp
            source = self._joined(decoded)
            if self._on_another_core():
                self._thread = _Ahead(source)
                source = iter(self._thread)
        for out in source:
            self._account(out)
            yield out

    def _joined(self, decoded: Iterator[bytes]) -> Iterator[bytes]:
        # The zstd decoder hands out ~40 KiB at a time; each chunk costs queue hops
        # to the sidecar and a buffer switch in the tar walker, so small pieces are
        # joined into chunks of at least OUT_SIZE (zst layer: ~5,000 chunks -> ~200).
        held: list[bytes] = []
        size = 0
        try:
            for out in decoded:
                if not held and len(out) >= OUT_SIZE:
                    yield out
                    continue
                held.append(out)
                size += len(out)
                if size >= OUT_SIZE:
                    yield b"".join(held)
                    held.clear()
                    size = 0
        except StreamDamaged:
            if held:  # what came before the damage is still listed and served
                yield b"".join(held)
            raise
        if held:
            yield b"".join(held)

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Unmounting(f"{self._named}: pass stopped (unmounting)")

    def _account(self, out: bytes) -> None:
        self._check_stop()
        self.produced += len(out)
        lim = self.limits
        if self.produced > lim.max_uncompressed:
            raise LimitExceeded(
                f"{self._named}: decompresses to more than {lim.max_uncompressed} bytes"
            )
        if time.monotonic() > self._deadline:
            raise LimitExceeded(
                f"{self._named}: decompressing took longer than {lim.max_index_seconds} s "
                f"({self.produced} bytes so far)"
            )
        if self.sink is not None:
            if self.produced > self.sink_limit:
                self.sink = None  # too big for an unpacked copy; the caller discards it
            elif len(out) == OUT_SIZE and out == _ZERO_CHUNK:
                # a hole in the copy: a layer of zeros costs neither disk nor write time
                sink = self.sink
                self._side.submit(lambda data: sink.seek(len(data), os.SEEK_CUR), out)
            else:
                self._side.submit(self.sink.write, out)
        self._side.submit(self._update_crcs, out)
        if self._diff_side is not None and self._diff_hasher is not None:
            self._diff_side.submit(self._diff_hasher.update, out)

    @property
    def has_diff_id(self) -> bool:
        """Whether `diff_id` is known (wanted, or the digest itself)."""
        return self._own_diff_id or self._diff_hasher is not None

    @property
    def diff_id(self) -> str:
        """`sha256:<hex>` of the decompressed bytes produced (valid after `finish`)."""
        if self._own_diff_id:
            return str(self.digest)
        if self._diff_hasher is None:
            raise RuntimeError("LayerPass made without want_diff_id=True")
        return f"sha256:{self._diff_hasher.hexdigest()}"

    def _update_crcs(self, out: bytes) -> None:
        pos = 0
        while pos < len(out):
            take = min(CRC_BLOCK - self._crc_fill, len(out) - pos)
            self._crc = crc32(out[pos : pos + take] if take != len(out) else out, self._crc)
            self._crc_fill += take
            pos += take
            if self._crc_fill == CRC_BLOCK:
                self.crcs.append(self._crc)
                self._crc, self._crc_fill = 0, 0

    def _damaged(self, what: str) -> StreamDamaged:
        # a decoder whose input was cut short by the stop is not damage
        self._check_stop()
        return StreamDamaged(f"{what} (compressed offset {self.consumed})", self._decoded)

    def _gunzip(self) -> Iterator[bytes]:
        d = None
        for data in self._comp:
            buf = data
            while buf:
                if d is None:
                    if not buf.startswith(b"\x1f\x8b"[: len(buf)]):
                        if buf.count(0) == len(buf):
                            break  # zero padding after the last member
                        raise self._damaged("garbage after the gzip stream")
                    d = isal_zlib.decompressobj(31)
                try:
                    out = d.decompress(buf, OUT_SIZE)
                except _GzipError as exc:
                    raise self._damaged(f"gzip data corrupt: {exc}") from None
                if out:
                    self._decoded += len(out)
                    yield out
                if d.eof:
                    buf, d = d.unused_data, None
                else:
                    buf = d.unconsumed_tail
        if d is not None:
            raise self._damaged("gzip stream ends early")

    def _start_child(self) -> child.ChildDecoder | None:
        """The child decoder, or None (no tool, or it cannot start: a thread decodes)."""
        argv = child.command(self.compression)
        if argv is None:
            return None
        try:
            self._child = child.ChildDecoder(argv, self._compressed(hash_here=True), OUT_SIZE)
        except OSError as exc:
            log.warning("%s: cannot start %s (%s); decoding in the daemon", self._named,
                        argv[-2], exc)
            return None
        return self._child

    def _from_child(self, decoder: child.ChildDecoder) -> Iterator[bytes]:
        name = "gzip" if self.compression is Compression.GZIP else "zstd"
        for out in decoder.chunks(lambda msg: self._damaged(f"{name} data corrupt: {msg}")):
            self._decoded += len(out)
            yield out

    def _unzstd(self) -> Iterator[bytes]:
        # decompressobj() returns a whole call's output at once: 16 KiB of RLE
        # blocks is ~512 MiB. A stream_reader read returns at most what is asked.
        # (It reports no error for a stream cut short; the tar walker then finds
        # the tar cut short, and a blob cut short already fails its size check.)
        source = _IterReader(self._comp)
        reader = zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], source), read_size=READ_SIZE, read_across_frames=True
        )
        while True:
            try:
                out = reader.read(OUT_SIZE)
            except zstandard.ZstdError as exc:
                raise self._damaged(f"zstd data corrupt: {exc}") from None
            if not out:
                return
            self._decoded += len(out)
            yield out

    def close(self) -> None:
        """Stop the helper thread (idempotent); re-raises a write error it met."""
        if not self._closed:
            self._closed = True
            if self._child is not None:
                self._child.close()
            if self._thread is not None:
                self._thread.close(wait=False)
            try:
                self._side.join()
            finally:
                if self._diff_side is not None:
                    self._diff_side.join()

    def finish(self) -> None:
        """Hash the rest of the blob and check the digest (raises BlobUnavailable)."""
        if self._child is not None:
            self._child.stop_child()  # decoded bytes left unread are not wanted
            self._child.join_feeder()  # it hashes to the end of the blob
        else:
            if self._thread is not None:
                self._thread.close()  # the decoder stops; the rest is only hashed
            for _ in self._comp:
                pass
        self.close()
        if self.sink is not None:
            self.sink.truncate(self.produced)  # trailing holes
        if self._crc_fill:
            self.crcs.append(self._crc)
            self._crc, self._crc_fill = 0, 0
        if self._hasher is not None and self.digest is not None and (
            self._hasher.hexdigest() != self.digest.hex
        ):
            raise BlobUnavailable(
                f"{self._named}: content does not match its digest (blob corrupt)"
            )
        if self._trusted is not None and not self._trusted.verified(self._token):
            raise BlobUnavailable(f"{self._named}: content not verified against its digest")
