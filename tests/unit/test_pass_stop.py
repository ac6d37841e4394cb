"""The store's stop flag (set when the daemon unmounts): an index pass ends at its
next chunk with `Unmounting`, on every decoding path, and never reports the
input it cut short as damage; nor does the store wait for another daemon's
build lock or hash a blob read in place once it is set."""

from __future__ import annotations

import gzip
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from ocifs.cache import DiskCache
from ocifs.codec import child
from ocifs.codec.blobio import BytesReader
from ocifs.codec.decode import LayerPass
from ocifs.codec.limits import DEFAULT
from ocifs.errors import Unmounting
from ocifs.layers.store import INDEX_KIND, LayerStore
from ocifs.model.digest import of_bytes
from ocifs.model.mediatypes import Compression
from tests.helpers import tarbuilder as tb


@pytest.mark.parametrize("decoder", ["inline", "thread", "child"])
def test_a_stopped_pass_ends_with_unmounting(
    decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCIFS_DECODER", "child" if decoder == "child" else "")
    if decoder == "child":
        assert child.enabled() and child.command(Compression.GZIP) is not None
    size = 64 << 10 if decoder == "inline" else 8 << 20  # CHILD_MIN_SIZE and more
    blob = gzip.compress(os.urandom(size) + bytes(16 << 20), compresslevel=1)
    stop = threading.Event()
    lp = LayerPass(BytesReader(blob), of_bytes(blob), Compression.GZIP, "test", DEFAULT,
                   stop=stop)
    produced = 0
    with pytest.raises(Unmounting, match="stopped"):
        try:
            for chunk in lp.chunks():
                produced += len(chunk)
                stop.set()
            lp.finish()
        finally:
            lp.close()
    assert produced < size + (16 << 20)


def test_a_pass_that_is_not_stopped_ends_normally() -> None:
    data = os.urandom(1 << 20)
    blob = gzip.compress(data, compresslevel=1)
    lp = LayerPass(BytesReader(blob), of_bytes(blob), Compression.GZIP, "test", DEFAULT,
                   stop=threading.Event())
    try:
        assert b"".join(lp.chunks()) == data
        lp.finish()
    finally:
        lp.close()


def test_a_stopped_store_stops_waiting_for_another_builder(tmp_path: Path) -> None:
    """The other daemon holds the layer's build lock: a stopped store gives up at
    once (Unmounting) instead of waiting out the lock's 600 s bound."""
    src = tb.BlobSource(tmp_path)
    desc = src.layer([tb.File("a", b"a")], "gz")
    cache = DiskCache(tmp_path / "cache")
    inside, release = threading.Event(), threading.Event()

    def other_daemon() -> None:
        with cache.building(INDEX_KIND, str(desc.digest)) as held:
            assert held
            inside.set()
            release.wait()

    holder = threading.Thread(target=other_daemon)
    holder.start()
    try:
        inside.wait()
        store = LayerStore(src, cache)
        store.stop()
        with pytest.raises(Unmounting):
            store._load_or_build(desc)
        assert not release.is_set()  # it did not wait for the holder
    finally:
        release.set()
        holder.join()


def test_a_stopped_store_does_not_hash_a_blob_read_in_place(tmp_path: Path) -> None:
    src = tb.BlobSource(tmp_path)
    desc = src.layer([tb.File("f", b"bytes")])  # uncompressed: read in place
    cache = DiskCache(tmp_path / "cache")

    async def main() -> None:
        indexed = LayerStore(src, cache)
        await indexed.index(desc)
        store = LayerStore(src, cache)  # a new mount: index cached, blob not verified
        store.in_place.cache = DiskCache(tmp_path / "other-cache")  # no verified mark
        entry = (await store.index(desc)).entries[1]
        store.stop()
        with pytest.raises(Unmounting):
            await store.read(desc, entry, 0, 5)

    trio.run(main)


def test_a_stopped_store_does_not_hash_a_copy_for_its_diff_id(tmp_path: Path) -> None:
    """The diff_id hash of an unpacked copy (for rootfs/, after the pass) stops too."""
    src = tb.BlobSource(tmp_path)
    desc = src.layer([tb.File("f", os.urandom(3 << 20))], "gz")
    cache = DiskCache(tmp_path / "cache")

    async def main() -> None:
        store = LayerStore(src, cache)
        await store.index(desc)  # keeps an unpacked copy; the diff_id is left for later
        store.stop()
        with pytest.raises(Unmounting):
            await store.diff_id(desc)

    trio.run(main)


def test_a_stopped_index_is_not_recorded_as_a_failure(tmp_path: Path) -> None:
    """A pass the stop ended says nothing about the layer: `ocifs status` shows it
    "stopped" (not "failed"), and the store does not keep the stop as the layer's
    error (a store that goes on, in tests or after `forget_failures`, indexes it)."""
    src = tb.BlobSource(tmp_path)
    desc = src.layer([tb.File("f", os.urandom(1 << 20))], "gz")
    cache = DiskCache(tmp_path / "cache")

    store = LayerStore(src, cache)
    open_blob = src.open_blob

    class StopOnRead:
        """The blob's reader; the mount goes away once the pass reads it."""

        def __init__(self, digest: Any) -> None:
            self._reader = open_blob(digest)
            self.size = self._reader.size

        def pread(self, offset: int, size: int) -> bytes:
            store.stop()
            return self._reader.pread(offset, size)

        def close(self) -> None:
            self._reader.close()

    src.open_blob = StopOnRead  # type: ignore[method-assign, assignment]

    async def main() -> None:
        with pytest.raises(Unmounting):
            await store.index(desc)
        progress = store.progress.layers[str(desc.digest)]
        assert (progress.state, progress.error) == ("stopped", None)
        src.open_blob = open_blob  # type: ignore[method-assign]
        store.stopping.clear()  # not a real path: shows no error was kept
        assert len((await store.index(desc)).entries) == 2

    trio.run(main)
