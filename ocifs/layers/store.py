"""LayerStore: lazy, single-flight, persistent layer indexes and file reads.

The trio-facing API of the layer engine. Indexing runs in worker threads under
a CapacityLimiter so the trio loop stays responsive; concurrent callers for one
layer wait for one indexing. Records are cached in the DiskCache under the
layer digest (kind `layer-index`), so any later mount of any image sharing the
layer lists it without touching the blob.

Reads of compressed layers are served from an unpacked copy kept in the cache
(kind `layer-data`, written during the indexing pass, CRC-checked per MiB on
first use) when the layer's decompressed size fits `unpack_limit`; bigger gzip
layers use seek points (`seekable.open_gzip`), bigger zstd layers a sequential
cursor. docs/layers.md has the measurements behind this choice.

A layer's diff_id (what `rootfs/` checks against the image config) is hashed
in the pass only where it must be, else on first need, and kept under kind
`layer-diff-id` (`diffid.py`).

While a layer's pass runs, `live()` gives its tree as built so far
(`layers.live`): the tree answers lookups of names already seen from it,
provisionally; `settled()` says whether an entry belongs to a final index.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

from ocifs import durable
from ocifs import log as log_mod
from ocifs.cache import DiskCache
from ocifs.codec.blobio import BlobReader, FileRegionReader
from ocifs.codec.limits import DEFAULT, Limits
from ocifs.codec.readers import CopyCorrupt, UnpackedReader, ZstdCursorReader
from ocifs.codec.seekable import open_gzip
from ocifs.errors import BlobUnavailable, IsADirectory, LayerCorrupt, OcifsError, Unmounting
from ocifs.layers import diffid, indexer, serial
from ocifs.layers.entry import Entry, Kind, LayerIndex, sparse_pieces
from ocifs.layers.inplace import BlobChanged, InPlaceVerifier
from ocifs.layers.live import LiveIndex
from ocifs.layers.merge import MergedTree, merge
from ocifs.layers.progress import IndexProgress
from ocifs.layers.serial import LayerRecord
from ocifs.layers.tarindex import IndexBuilder
from ocifs.layers.testgate import gated_builder
from ocifs.model.descriptor import Descriptor
from ocifs.model.digest import Digest
from ocifs.model.mediatypes import Compression
from ocifs.sources.base import Source

log = logging.getLogger(__name__)

INDEX_KIND = "layer-index"
DATA_KIND = "layer-data"

K = TypeVar("K")
V = TypeVar("V")


class _SingleFlight(Generic[K, V]):
    """Memoised async computations; concurrent callers share one run."""

    def __init__(self) -> None:
        self.done: dict[K, V] = {}
        self._running: dict[K, trio.Event] = {}
        self._failed: dict[K, BaseException] = {}

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        while True:
            if key in self.done:
                return self.done[key]
            event = self._running.get(key)
            if event is None:
                break
            await event.wait()
            error = self._failed.get(key)
            if error is not None and not isinstance(error, trio.Cancelled):
                raise error
        event = self._running[key] = trio.Event()
        self._failed.pop(key, None)
        try:
            value = await compute()
        except BaseException as exc:
            self._failed[key] = exc  # seen by the current waiters; a later call retries
            raise
        else:
            self.done[key] = value
            return value
        finally:
            del self._running[key]
            event.set()


async def _unless_known_bad(
    flight: _SingleFlight[Digest, V],
    bad: dict[Digest, OcifsError],
    digest: Digest,
    compute: Callable[[], Awaitable[V]],
    *,
    retry_disk_errors: bool = False,
) -> V:
    """`flight.get(digest, compute)`, with a failure kept in `bad` and raised again
    instead of being redone. An unmount's stop is no verdict on the layer, and
    with `retry_disk_errors` neither is an error caused by an OSError."""
    known = bad.get(digest)
    if known is not None:
        raise type(known)(str(known))
    try:
        return await flight.get(digest, compute)
    except Unmounting:
        raise
    except OcifsError as exc:
        if not (retry_disk_errors and isinstance(exc.__cause__, OSError)):
            bad[digest] = exc
        raise


class _Layer:
    """A loaded record plus its (lazily opened) data reader."""

    __slots__ = ("inline", "reader", "record")

    def __init__(self, record: LayerRecord) -> None:
        self.record = record
        self.reader: BlobReader | None = None
        self.inline = False


class LayerStore:
    """See the module docstring. Call its async methods from the trio thread."""

    def __init__(
        self,
        source: Source,
        cache: DiskCache,
        *,
        limits: Limits = DEFAULT,
        limiter: trio.CapacityLimiter | None = None,
        unpack_limit: int | None = None,
    ) -> None:
        self.source = source
        self.cache = cache
        self.limits = limits
        self.limiter = limiter or trio.CapacityLimiter(2)
        #: largest decompressed layer kept as an unpacked copy in the cache.
        self.unpack_limit = cache.limit_bytes // 4 if unpack_limit is None else unpack_limit
        self._layers: _SingleFlight[Digest, _Layer] = _SingleFlight()
        self._readers: _SingleFlight[Digest, None] = _SingleFlight()
        self._merged: _SingleFlight[tuple[Digest, ...], MergedTree] = _SingleFlight()
        self._diff_ids: _SingleFlight[Digest, str] = _SingleFlight()
        #: layers a rootfs is about to need whole: their pass hashes the diff_id too
        self._diff_id_in_pass: set[Digest] = set()
        self._diff_broken: dict[Digest, OcifsError] = {}
        #: passes running in this process, readable before they end
        self._live: dict[Digest, LiveIndex] = {}
        #: layers whose indexing failed: the error is repeated, not the work, until
        #: `forget_failures` (index.json changed: an import may have fixed the blob)
        self._broken: dict[Digest, OcifsError] = {}
        #: set by `stop()` (unmounting): passes in worker threads end at their next chunk
        self.stopping = threading.Event()
        self.in_place = InPlaceVerifier(source, cache, self.stopping)
        self._retired: list[BlobReader] = []
        #: what each layer's indexing is doing (ocifs status)
        self.progress = IndexProgress()

    def stop(self) -> None:
        """Unmounting: end the passes under way now, leaving nothing behind.

        `trio.to_thread` calls cannot be cancelled, so trio.run (and the daemon's
        exit) would otherwise wait for every pass to reach the end of its layer.
        A stopped pass raises `Unmounting`: no cache entry, its temp file removed.
        Does not wait; callable from any thread.
        """
        self.stopping.set()

    # -- indexes -----------------------------------------------------------------

    async def index(self, desc: Descriptor) -> LayerIndex:
        """The layer's index, from memory, the disk cache, or one indexing pass."""
        return (await self._layer(desc)).record.index

    async def _layer(self, desc: Descriptor) -> _Layer:
        async def compute() -> _Layer:
            digest = desc.digest
            live = self._live.get(digest)
            if live is None:
                live = self._live[digest] = LiveIndex()
            try:
                record = await trio.to_thread.run_sync(
                    self._load_or_build, desc, live, limiter=self.limiter
                )
            finally:
                # no checkpoint from here until the single flight records the
                # outcome: a woken waiter finds the layer done or broken
                live.end()
                del self._live[digest]
            return _Layer(record)

        return await _unless_known_bad(self._layers, self._broken, desc.digest, compute)

    def start(self, desc: Descriptor) -> None:
        """Start indexing `desc` in the background unless it is indexed, failed or
        under way; `live()` then has the pass. Errors reach whoever awaits `index()`."""
        digest = desc.digest
        if digest in self._layers.done or digest in self._broken or digest in self._live:
            return
        self._live[digest] = LiveIndex()
        trio.lowlevel.spawn_system_task(self._index_quietly, desc, name=f"index {digest}")

    async def _index_quietly(self, desc: Descriptor) -> None:
        try:
            await self._layer(desc)
        except Exception:  # reported to the requests that await index()
            pass

    def live(self, desc: Descriptor) -> LiveIndex | None:
        """The pass indexing `desc` in this process right now, if any."""
        return self._live.get(desc.digest)

    def settled(self, desc: Descriptor, entry: Entry) -> bool:
        """Whether `entry` belongs to the final index of `desc` (not to a running
        pass, nor to a pass that failed)."""
        layer = self._layers.done.get(desc.digest)
        if layer is None:
            return False
        entries = layer.record.index.entries
        number = entry.identity
        return number < len(entries) and entries[number] is entry

    def forget_failures(self) -> None:
        """Try failed layers again on next use (called when index.json changes)."""
        self._broken.clear()
        self._diff_broken.clear()

    def cached(self, desc: Descriptor) -> bool:
        """Whether an index exists in memory or in the disk cache."""
        return (
            desc.digest in self._layers.done
            or self.cache.path_for(INDEX_KIND, str(desc.digest)).exists()
        )

    def _load_or_build(self, desc: Descriptor, live: LiveIndex | None = None) -> LayerRecord:
        """The cached record, or one indexing pass; one indexer per layer across processes.

        Another daemon indexing the same layer holds the entry's lock: this one
        waits for it (in this worker thread) and then loads what it wrote.
        """
        record = self._load(desc)
        if record is not None:
            return record
        with self.cache.building(INDEX_KIND, str(desc.digest), stop=self.stopping):
            if self.stopping.is_set():  # gave up waiting for the other daemon
                raise Unmounting(f"layer {desc.digest}: not indexed (unmounting)")
            return self._load(desc) or self._build_tracked(desc, live)

    def _load(self, desc: Descriptor) -> LayerRecord | None:
        key = str(desc.digest)
        payload = self.cache.get(INDEX_KIND, key, version=serial.FORMAT)
        if payload is None:
            return None
        record = serial.loads(payload)
        if record is None:
            log.warning("cached index of layer %s has an old or bad format; rebuilding", key)
            self.cache.discard(INDEX_KIND, key)
            return None
        self.progress.loaded(desc, len(record.index.entries))
        return record

    def _open_blob(self, desc: Descriptor) -> BlobReader:
        """The layer blob, opened the way that cannot block (BlobUnavailable says why not)."""
        reader = self.source.open_blob(desc.digest)
        if reader.size != desc.size:
            reader.close()
            raise BlobUnavailable(
                f"layer {desc.digest}: blob has {reader.size} bytes, its descriptor says "
                f"{desc.size}"
            )
        return reader

    def _build_tracked(self, desc: Descriptor, live: LiveIndex | None) -> LayerRecord:
        """`_build`, its state and duration recorded for `ocifs status`."""
        progress = self.progress.start(desc)
        started = time.monotonic()
        try:
            record = self._build(desc, live)
        except Exception as exc:
            stopped = isinstance(exc, Unmounting)
            progress.state = "stopped" if stopped else "failed"
            progress.error = None if stopped else str(exc)
            progress.seconds = time.monotonic() - started
            how = "stopped (unmounting)" if stopped else "failed"
            log.info("indexing layer %s %s after %.3f s", desc.digest, how, progress.seconds)
            raise
        progress.seconds = time.monotonic() - started
        progress.entries = len(record.index.entries)
        progress.state = "indexed"
        return record

    def _build(self, desc: Descriptor, live: LiveIndex | None = None) -> LayerRecord:
        key = str(desc.digest)
        started = time.monotonic()
        log.info("indexing layer %s (%d bytes)", key, desc.size)
        blob = self._open_blob(desc)
        try:
            builder = gated_builder(key, self.limits, self.stopping) or IndexBuilder(
                key, self.limits
            )
            if live is not None:
                live.attach(builder)
            record = self._index_blob(desc, self.progress.counting(desc, blob), builder)
            self.in_place.verified(desc.digest, blob)  # the pass hashed these very bytes
        finally:
            blob.close()
        self.cache.put(INDEX_KIND, key, serial.dumps(record), version=serial.FORMAT)
        log.info(
            "indexed layer %s: %d entries in %.3f s",
            key,
            len(record.index.entries),
            time.monotonic() - started,
        )
        return record

    async def check_diff_ids(
        self, descs: list[Descriptor], diff_ids: list[str], where: str
    ) -> None:
        """Raise BlobUnavailable unless each layer decompresses to its config diff_id.

        Each layer's diff_id is hashed as soon as its index is there, all layers
        at once on the worker threads (`diff_id`); the first problem in layer
        order is raised (a layer that failed to index raises its own error).
        """
        if len(diff_ids) != len(descs):
            raise BlobUnavailable(
                f"{where}: the config lists {len(diff_ids)} diff_ids for {len(descs)} layers"
            )
        outcomes: list[str | OcifsError | OSError] = [""] * len(descs)

        async def one(n: int) -> None:
            try:
                outcomes[n] = await self.diff_id(descs[n])
            except (OcifsError, OSError) as exc:  # raised bare below, not as a nursery's group
                outcomes[n] = exc

        async with trio.open_nursery() as nursery:
            for n in range(len(descs)):
                nursery.start_soon(one, n)
        for n, (desc, expected) in enumerate(zip(descs, diff_ids, strict=True)):
            actual = outcomes[n]
            if isinstance(actual, (OcifsError, OSError)):
                raise actual
            if actual != expected:
                raise BlobUnavailable(
                    f"{where}: layer {n} ({desc.digest}) decompresses to {actual}, "
                    f"the config's rootfs.diff_ids[{n}] says {expected}"
                )

    def need_diff_ids(self, descs: list[Descriptor]) -> None:
        """A rootfs of these layers is coming: a pass that starts from now on hashes
        the decompressed stream as it goes (on its own thread, in parallel with
        the walk), which costs less than reading the copy back afterwards."""
        self._diff_id_in_pass.update(d.digest for d in descs)

    async def diff_id(self, desc: Descriptor) -> str:
        """`sha256:<hex>` of the layer's decompressed stream: from its record (the
        pass hashed it), the cache, or hashed now from the unpacked copy (or the
        blob) on a worker thread and kept in the cache (diffid.py)."""
        layer = await self._layer(desc)
        if layer.record.diff_id:
            return layer.record.diff_id

        async def compute() -> str:
            value = await trio.to_thread.run_sync(
                self._load_or_hash_diff_id, desc, layer.record, limiter=self.limiter
            )
            layer.record.diff_id = value
            return value

        # repeated, not redone, like a failed index, unless the disk failed
        return await _unless_known_bad(
            self._diff_ids, self._diff_broken, desc.digest, compute, retry_disk_errors=True
        )

    def _load_or_hash_diff_id(self, desc: Descriptor, record: LayerRecord) -> str:
        """The cached diff_id, or one hash of the copy (or the blob), kept in the
        cache; one hasher per layer across daemons (like the index).

        An OSError (the lock file, a read of the copy or the blob) becomes a
        BlobUnavailable naming the layer, as a failed read does (`_read_stream`)."""
        key = str(desc.digest)
        try:
            found = diffid.load(self.cache, key)
            if found:
                return found
            with self.cache.building(diffid.KIND, key, stop=self.stopping):
                found = diffid.load(self.cache, key)
                if found:
                    return found
                started = time.monotonic()
                log.info("hashing layer %s for its diff_id", key)
                durable.checkpoint("diff-id-hash")
                value = self._hash_diff_id(desc, record)
                durable.checkpoint("diff-id-store")
                diffid.store(self.cache, key, value)
        except OSError as exc:
            raise BlobUnavailable(f"layer {key}: diff_id: {exc}") from exc
        log.info("hashed layer %s: diff_id in %.3f s", key, time.monotonic() - started)
        return value

    def _hash_diff_id(self, desc: Descriptor, record: LayerRecord) -> str:
        key = str(desc.digest)
        size = record.index.uncompressed_size
        if record.compression is not Compression.NONE:
            fd = self.cache.open_file(DATA_KIND, key, size)
            if fd is not None:
                try:
                    return diffid.from_copy(fd, size, record.crcs, self.stopping)
                except CopyCorrupt as exc:
                    log.warning("unpacked copy of layer %s is corrupt (%s); hashing the blob",
                                key, exc)
                    self.cache.discard(DATA_KIND, key)
                finally:
                    os.close(fd)
        blob = self._open_blob(desc)
        try:
            return diffid.from_blob(
                blob, desc.digest, record.compression, self.limits, size, self.stopping
            )
        finally:
            blob.close()

    def _index_blob(
        self, desc: Descriptor, reader: BlobReader, builder: IndexBuilder
    ) -> LayerRecord:
        """One indexing pass; keeps the unpacked copy of a compressed layer that fits."""
        key = str(desc.digest)
        compression = indexer.choose_compression(desc.media_type, reader.pread(0, 512), key)
        if compression is Compression.NONE or self.unpack_limit <= 0:
            return indexer.build(
                reader, desc.digest, compression, self.limits, builder=builder,
                stop=self.stopping,
            )[0]
        # the diff_id is hashed now for a rootfs that waits for this pass, or a
        # stream that may outgrow the copy; otherwise later, from the copy, if a
        # rootfs asks (diffid.py)
        in_pass = desc.digest in self._diff_id_in_pass or diffid.hash_in_pass(
            desc.size, self.unpack_limit
        )
        temp, sink = self.cache.new_temp(DATA_KIND)
        kept = False
        try:
            with sink:
                record, kept = indexer.build(
                    reader, desc.digest, compression, self.limits, sink, self.unpack_limit,
                    builder, self.stopping, want_diff_id=in_pass,
                )
            if kept:
                self.cache.commit_file(temp, DATA_KIND, key)
        finally:
            if not kept:
                temp.unlink(missing_ok=True)
        return record

    # -- rootfs --------------------------------------------------------------------

    async def merged(self, descs: list[Descriptor]) -> MergedTree:
        """The merged rootfs of these layers (bottom first), built once per digest tuple."""

        async def compute() -> MergedTree:
            indexes: list[LayerIndex | None] = [None] * len(descs)

            async def one(i: int) -> None:
                indexes[i] = await self.index(descs[i])

            async with trio.open_nursery() as nursery:
                for i in range(len(descs)):
                    nursery.start_soon(one, i)
            ready = [ix for ix in indexes if ix is not None]
            names = [str(d.digest) for d in descs]
            return await trio.to_thread.run_sync(merge, ready, names, limiter=self.limiter)

        return await self._merged.get(tuple(d.digest for d in descs), compute)

    def forget_merged(self, descs: list[Descriptor]) -> None:
        """Drop the merged tree of these layers if one is kept: their image failed
        its diff_id check, and a rootfs of the same layers checks them again."""
        self._merged.done.pop(tuple(d.digest for d in descs), None)

    # -- reads ---------------------------------------------------------------------

    async def read(self, desc: Descriptor, entry: Entry, offset: int, size: int) -> bytes:
        """Bytes of a FILE entry's data. Raises LayerCorrupt for reads past damage."""
        if entry.kind is not Kind.FILE:
            raise IsADirectory(f"layer {desc.digest}: {entry.name!r} is not a regular file")
        if offset >= entry.size or size <= 0:
            return b""
        size = min(size, entry.size - offset)
        # Every READ of every file comes here: an indexed layer is one dict lookup
        # (no closure, no single-flight coroutine; a layer in `done` is never broken).
        layer = self._layers.done.get(desc.digest) or await self._layer(desc)
        if entry.sparse is None:
            return await self._read_stream(desc, layer, entry, entry.data_offset + offset, size)
        out = bytearray(size)  # holes read as zeros, as `tar -x` restores them
        for file_off, stream_off, length in sparse_pieces(entry, offset, size):
            data = await self._read_stream(desc, layer, entry, stream_off, length)
            out[file_off - offset : file_off - offset + length] = data
        return bytes(out)

    def read_ready(self, desc: Descriptor, entry: Entry, limit: int) -> bytes | None:
        """All of a FILE entry's bytes if they can be had now without blocking, or None.

        "Now" means: the layer is indexed, its reader is open and reads inline (an
        unpacked copy, or the blob file itself), every byte needed is in the page
        cache (read with RWF_NOWAIT: this runs on the trio thread, for bytes nobody
        has asked for yet), `entry` belongs to the final index, is not sparse, holds
        1 to `limit` bytes and lies before any damage. Anything else, and any error,
        is None: the caller then leaves the bytes to `read()`, which waits, retries
        and reports as it always does (the CRC and digest checks are the reader's
        own, the same for both ways).
        """
        layer = self._layers.done.get(desc.digest)
        if layer is None or not layer.inline or entry.sparse is not None:
            return None
        reader = layer.reader
        size = entry.size
        start = entry.data_offset
        if (
            reader is None
            or entry.kind is not Kind.FILE
            or not 0 < size <= limit
            or start + size > layer.record.valid_size
        ):
            return None
        entries = layer.record.index.entries
        if not (entry.identity < len(entries) and entries[entry.identity] is entry):
            return None
        pread_if_cached = getattr(reader, "pread_if_cached", None)
        if pread_if_cached is None:
            return None
        try:
            data = pread_if_cached(start, size)
        except (CopyCorrupt, OcifsError, OSError):
            return None
        return data if data is not None and len(data) == size else None

    async def _read_stream(
        self, desc: Descriptor, layer: _Layer, entry: Entry, start: int, size: int
    ) -> bytes:
        """`size` bytes of the layer's decompressed stream at `start`."""
        if start + size > layer.record.valid_size:
            raise LayerCorrupt(
                f"layer {desc.digest}: data of {entry.name!r} lies past the damage at "
                f"offset {layer.record.valid_size}"
            )
        for attempt in (1, 2):
            reader = layer.reader or await self._open_reader(desc, layer)
            try:
                if layer.inline:
                    data = reader.pread(start, size)
                else:
                    data = await trio.to_thread.run_sync(
                        reader.pread, start, size, limiter=self.limiter
                    )
            except CopyCorrupt as exc:
                log.warning(
                    "unpacked copy of layer %s is corrupt (%s); rebuilding", desc.digest, exc
                )
                self._drop_reader(desc, layer, discard=True)
                if attempt == 2:
                    raise LayerCorrupt(f"layer {desc.digest}: unpacked copy corrupt") from exc
                continue
            except BlobUnavailable as exc:
                # The blob read in place changed (BlobChanged, possibly wrapped by a
                # decoder) or failed: reopen it, which verifies it again, and retry
                # once; what is served has always been checked against the digest.
                self._retire_reader(desc, layer)
                self.in_place.forget(desc.digest)
                if not isinstance(exc, BlobChanged) or attempt == 2:
                    raise
                log_mod.once(log, logging.WARNING, str(exc))
                continue
            except OSError as exc:
                raise BlobUnavailable(f"layer {desc.digest}: read failed: {exc}") from exc
            if len(data) != size:
                raise LayerCorrupt(f"layer {desc.digest}: data ends early at {start + len(data)}")
            return data
        raise AssertionError("unreachable")

    def _retire_reader(self, desc: Descriptor, layer: _Layer) -> None:
        """Stop using a layer's reader without closing it: a worker thread may be
        inside its pread, and a closed descriptor number can be reused by another
        open (reads from the wrong file). Closed by `close()`."""
        if layer.reader is not None:
            self._retired.append(layer.reader)
        layer.reader = None
        self._readers.done.pop(desc.digest, None)

    def _drop_reader(self, desc: Descriptor, layer: _Layer, discard: bool) -> None:
        if layer.reader is not None:
            layer.reader.close()
        layer.reader = None
        self._readers.done.pop(desc.digest, None)
        if discard:
            self.cache.discard(DATA_KIND, str(desc.digest))

    async def _open_reader(self, desc: Descriptor, layer: _Layer) -> BlobReader:
        async def compute() -> None:
            reader, inline = await trio.to_thread.run_sync(
                self._make_reader, desc, layer.record, limiter=self.limiter
            )
            layer.reader, layer.inline = reader, inline

        await self._readers.get(desc.digest, compute)
        assert layer.reader is not None
        return layer.reader

    def _make_reader(self, desc: Descriptor, record: LayerRecord) -> tuple[BlobReader, bool]:
        """(reader over the decompressed stream, whether its pread may run inline)."""
        key = str(desc.digest)
        blob = self._open_blob(desc)
        try:
            if record.compression is Compression.NONE:
                inline = isinstance(blob, FileRegionReader)
                return self.in_place.ensure(desc.digest, blob), inline
            size = record.index.uncompressed_size
            copy = self._open_copy(key, size, record)
            if copy is None and size <= self.unpack_limit:
                temp, sink = self.cache.new_temp(DATA_KIND)
                try:
                    with sink:  # the pass checks the blob's digest
                        indexer.unpack(
                            blob, desc.digest, record.compression, self.limits, sink, size,
                            self.stopping,
                        )
                    self.cache.commit_file(temp, DATA_KIND, key)
                finally:
                    temp.unlink(missing_ok=True)
                copy = self._open_copy(key, size, record)
            if copy is not None:
                blob.close()
                return copy, True
            guarded = self.in_place.ensure(desc.digest, blob)
            if record.compression is Compression.GZIP:
                return open_gzip(guarded, self.cache, key, self.stopping), False
            return ZstdCursorReader(guarded, size, key), False
        except BaseException:
            blob.close()
            raise

    def _open_copy(self, key: str, size: int, record: LayerRecord) -> UnpackedReader | None:
        fd = self.cache.open_file(DATA_KIND, key, size)
        return None if fd is None else UnpackedReader(fd, size, record.crcs)

    def close(self) -> None:
        """Close open data readers (file descriptors of unpacked copies)."""
        for layer in self._layers.done.values():
            if layer.reader is not None:
                layer.reader.close()
                layer.reader = None
        self._readers.done.clear()
        for reader in self._retired:
            reader.close()
        self._retired.clear()
