"""Persistent cache entries name what they hold; one builder per entry across processes."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
import trio

from ocifs.cache import DiskCache
from ocifs.errors import BlobUnavailable
from ocifs.layers import serial
from ocifs.layers.store import INDEX_KIND, LayerStore
from tests.helpers import tarbuilder as tb


def test_an_entry_copied_over_another_key_is_a_miss(tmp_path: Path, caplog) -> None:
    cache = DiskCache(tmp_path)
    cache.put("layer-index", "sha256:aaa", b"index of a")
    cache.put("layer-index", "sha256:bbb", b"index of b")
    a, b = (cache.path_for("layer-index", f"sha256:{k}") for k in ("aaa", "bbb"))
    shutil.copy(a, b)
    assert cache.get("layer-index", "sha256:bbb") is None
    assert "belongs to layer-index 'sha256:aaa'" in caplog.text
    assert not b.exists()  # deleted: rebuilt next time
    assert cache.get("layer-index", "sha256:aaa") == b"index of a"


def test_an_entry_of_another_kind_or_format_version_is_a_miss(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.put("gzip-seek", "k", b"seek points", version=1)
    assert cache.get("gzip-seek", "k", version=2) is None
    cache.put("gzip-seek", "k", b"seek points", version=1)
    other = cache.path_for("archive-copy", "k")
    other.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(cache.path_for("gzip-seek", "k"), other)
    assert cache.get("archive-copy", "k", version=1) is None
    assert cache.get("gzip-seek", "k", version=1) == b"seek points"


def test_a_flipped_byte_in_the_header_is_detected(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.put("k", "key", b"payload")
    path = cache.path_for("k", "key")
    data = bytearray(path.read_bytes())
    data[len(data) - len(b"payload") - 1] ^= 1  # last byte of the key in the header
    path.write_bytes(bytes(data))
    assert cache.get("k", "key") is None


def test_only_one_builder_holds_an_entry(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    inside, release = threading.Event(), threading.Event()

    def first() -> None:
        with cache.building("layer-index", "sha256:x") as held:
            assert held
            inside.set()
            release.wait()

    t = threading.Thread(target=first)
    t.start()
    inside.wait()
    with cache.building("layer-index", "sha256:x", timeout=0) as held:
        assert not held  # the other holder is still building
    with cache.building("layer-index", "sha256:y", timeout=0) as held:
        assert held  # other entries are independent
    release.set()
    t.join()
    with cache.building("layer-index", "sha256:x", timeout=0) as held:
        assert held


def test_a_waiting_store_loads_what_the_builder_wrote(tmp_path: Path) -> None:
    """The second of two stores (two daemons) sharing a cache does not index again."""
    src = tb.BlobSource(tmp_path)
    desc = src.layer([tb.File("a", b"a")], "gz")
    cache = DiskCache(tmp_path / "cache")
    builder = LayerStore(src, cache)
    record = builder._build(desc)  # what the other daemon wrote while holding the lock
    waiter = LayerStore(src, cache)
    opened = src.opened
    assert waiter._load_or_build(desc).index.entries[1].name == "a"
    assert src.opened == opened  # loaded, not indexed
    assert cache.get(INDEX_KIND, str(desc.digest), version=serial.FORMAT) == serial.dumps(record)


def test_in_place_layer_blob_that_fails_its_digest_is_refused(tmp_path: Path) -> None:
    """A cached index (from another copy of the layer) never vouches for a blob's bytes."""
    good_dir, bad_dir = tmp_path / "good", tmp_path / "bad"
    good_dir.mkdir()
    bad_dir.mkdir()
    good, bad = tb.BlobSource(good_dir), tb.BlobSource(bad_dir)
    desc = good.layer([tb.File("f", b"right bytes")])
    bad.blobs[desc.digest] = good.blobs[desc.digest].replace(b"right", b"wrong")
    (bad_dir / desc.digest.hex).write_bytes(bad.blobs[desc.digest])
    cache = DiskCache(tmp_path / "cache")

    async def main() -> None:
        first = LayerStore(good, cache)
        entry = (await first.index(desc)).entries[1]
        assert await first.read(desc, entry, 0, 100) == b"right bytes"
        second = LayerStore(bad, cache)
        entry = (await second.index(desc)).entries[1]  # from the cache
        with pytest.raises(BlobUnavailable, match="does not match its digest"):
            await second.read(desc, entry, 0, 100)

    trio.run(main)


def test_a_fifo_planted_as_a_cache_entry_is_a_miss_not_a_hang(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.put("layer-index", "sha256:f", b"payload")
    path = cache.path_for("layer-index", "sha256:f")
    path.unlink()
    os.mkfifo(path)
    assert cache.get("layer-index", "sha256:f") is None  # would wait for a writer if blocking
    assert cache.open_file("layer-index", "sha256:f", 0) is None
    cache.put("layer-index", "sha256:f", b"payload")
    assert cache.get("layer-index", "sha256:f") == b"payload"
