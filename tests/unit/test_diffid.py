"""diffid.py: the lazily hashed diff_id agrees with the one the pass used to compute.

The pass without `want_diff_id` leaves the record's diff_id empty (unless it is
free); hashing the unpacked copy or decoding the blob again gives the sha256 of
the decompressed stream, also for a damaged layer (what came before the damage,
as the pass hashed it); a copy that fails its CRCs is refused, never hashed; a
layer whose stream may outgrow its copy is hashed in its pass instead.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
from pathlib import Path

import pytest
import trio
import zstandard

from ocifs.cache import DiskCache
from ocifs.codec.blobio import BytesReader
from ocifs.codec.limits import DEFAULT
from ocifs.codec.readers import CopyCorrupt
from ocifs.errors import BlobUnavailable
from ocifs.layers import diffid, indexer, serial
from ocifs.layers.store import DATA_KIND, INDEX_KIND, LayerStore
from ocifs.model.descriptor import Descriptor
from ocifs.model.digest import of_bytes
from ocifs.model.mediatypes import Compression
from tests.helpers import tarbuilder as tb


def layer_tar() -> bytes:
    files = [tb.File(f"d/f{i}", data=os.urandom(300_000)) for i in range(8)]
    return tb.build([tb.Dir("d"), *files])


def compress(raw: bytes, comp: Compression) -> bytes:
    if comp is Compression.GZIP:
        return gzip.compress(raw, 1)
    return zstandard.ZstdCompressor().compress(raw)


@pytest.mark.parametrize("comp", [Compression.GZIP, Compression.ZSTD], ids=["gz", "zst"])
def test_copy_and_blob_hash_to_the_diff_id_the_pass_would_give(
    comp: Compression, tmp_path: Path
) -> None:
    raw = layer_tar()
    blob = compress(raw, comp)
    with open(tmp_path / "copy", "w+b") as sink:
        record, kept = indexer.build(BytesReader(blob), of_bytes(blob), comp, DEFAULT, sink,
                                     1 << 40, want_diff_id=False)
    assert kept and record.diff_id == ""
    want = f"sha256:{hashlib.sha256(raw).hexdigest()}"
    size = record.index.uncompressed_size
    fd = os.open(tmp_path / "copy", os.O_RDONLY)
    try:
        assert diffid.from_copy(fd, size, record.crcs) == want
    finally:
        os.close(fd)
    assert diffid.from_blob(BytesReader(blob), of_bytes(blob), comp, DEFAULT, size) == want
    # the pass asked for it computes the same
    full, _ = indexer.build(BytesReader(blob), of_bytes(blob), comp, DEFAULT)
    assert full.diff_id == want


def test_a_copy_that_fails_its_crc_is_refused(tmp_path: Path) -> None:
    raw = layer_tar()
    blob = compress(raw, Compression.GZIP)
    with open(tmp_path / "copy", "w+b") as sink:
        record, _ = indexer.build(BytesReader(blob), of_bytes(blob), Compression.GZIP, DEFAULT,
                                  sink, 1 << 40, want_diff_id=False)
    data = bytearray((tmp_path / "copy").read_bytes())
    data[len(data) // 2] ^= 0x40
    (tmp_path / "copy").write_bytes(bytes(data))
    fd = os.open(tmp_path / "copy", os.O_RDONLY)
    try:
        with pytest.raises(CopyCorrupt):
            diffid.from_copy(fd, record.index.uncompressed_size, record.crcs)
    finally:
        os.close(fd)


def test_a_damaged_layer_hashes_what_came_before_the_damage() -> None:
    raw = layer_tar()
    blob = compress(raw, Compression.GZIP)
    cut = blob[: len(blob) * 2 // 3]
    record, _ = indexer.build(BytesReader(cut), of_bytes(cut), Compression.GZIP, DEFAULT)
    assert not record.index.complete
    size = record.index.uncompressed_size
    again = diffid.from_blob(BytesReader(cut), of_bytes(cut), Compression.GZIP, DEFAULT, size)
    assert again == record.diff_id == f"sha256:{hashlib.sha256(raw[:size]).hexdigest()}"


def test_an_uncompressed_layer_is_its_own_diff_id() -> None:
    raw = layer_tar()
    record, _ = indexer.build(BytesReader(raw), of_bytes(raw), Compression.NONE, DEFAULT,
                              want_diff_id=False)
    assert record.diff_id == str(of_bytes(raw))


def test_the_pass_hashes_a_stream_that_may_outgrow_the_copy() -> None:
    limit = 1 << 30
    assert not diffid.hash_in_pass(limit // diffid.STREAM_RATIO, limit)
    assert diffid.hash_in_pass(limit // diffid.STREAM_RATIO + 1, limit)


def test_the_store_hashes_in_the_pass_only_a_layer_near_the_copy_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # `near`: 0.3 MiB of gzip that decompresses past the 1 MiB copy limit (no
    # copy kept: hashing later would decode it again); `far`: well within it
    limit = 1 << 20
    near_raw = tb.build([tb.File("zeros", bytes(2 << 20)),
                         tb.File("noise", os.urandom(300_000))])
    far_raw = tb.build([tb.File("noise", os.urandom(100_000))])
    src = tb.BlobSource(tmp_path)
    near = src.add(gzip.compress(near_raw, 1), "gz")
    far = src.add(gzip.compress(far_raw, 1), "gz")
    assert near.size * diffid.STREAM_RATIO > limit >= near.size
    assert far.size * diffid.STREAM_RATIO <= limit

    def kept_record(desc: Descriptor) -> serial.LayerRecord | None:
        payload = cache.get(INDEX_KIND, str(desc.digest), version=serial.FORMAT)
        return None if payload is None else serial.loads(payload)

    cache = DiskCache(tmp_path / "cache")

    async def main() -> None:
        st = LayerStore(src, cache, unpack_limit=limit)
        for desc in (near, far):
            await st.index(desc)
        near_rec, far_rec = kept_record(near), kept_record(far)
        assert near_rec is not None and far_rec is not None
        assert near_rec.diff_id == f"sha256:{hashlib.sha256(near_raw).hexdigest()}"
        assert far_rec.diff_id == ""
        assert not cache.path_for(DATA_KIND, str(near.digest)).exists()
        assert cache.path_for(DATA_KIND, str(far.digest)).exists()
        with caplog.at_level(logging.INFO, logger="ocifs.layers.store"):
            assert await st.diff_id(near) == near_rec.diff_id
            assert "hashing layer" not in caplog.text
            assert await st.diff_id(far) == f"sha256:{hashlib.sha256(far_raw).hexdigest()}"
            assert f"hashing layer {far.digest}" in caplog.text
        st.close()

    trio.run(main)


def test_a_disk_error_while_hashing_is_not_the_layers_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an OSError is a BlobUnavailable naming the layer, and the next call hashes
    # again (a wrong layer's error, by contrast, is repeated without the work)
    raw = tb.build([tb.File("noise", os.urandom(100_000))])
    src = tb.BlobSource(tmp_path)
    desc = src.add(gzip.compress(raw, 1), "gz")
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")

    async def main() -> None:
        st = LayerStore(src, DiskCache(tmp_path / "cache"))
        await st.index(desc)
        monkeypatch.setenv("OCIFS_TEST_FAIL_AT", "diff-id-hash:EIO")
        with pytest.raises(BlobUnavailable,
                           match=f"layer {desc.digest}: diff_id: .*Input/output error"):
            await st.diff_id(desc)
        monkeypatch.delenv("OCIFS_TEST_FAIL_AT")
        assert await st.diff_id(desc) == f"sha256:{hashlib.sha256(raw).hexdigest()}"
        st.close()

    trio.run(main)
