"""diffid.py: the lazily hashed diff_id agrees with the one the pass used to compute.

The pass without `want_diff_id` leaves the record's diff_id empty (unless it is
free); hashing the unpacked copy or decoding the blob again gives the sha256 of
the decompressed stream, also for a damaged layer (what came before the damage,
as the pass hashed it); a copy that fails its CRCs is refused, never hashed.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import pytest
import zstandard

from ocifs.codec.blobio import BytesReader
from ocifs.codec.limits import DEFAULT
from ocifs.codec.readers import CopyCorrupt
from ocifs.layers import diffid, indexer
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


def test_the_pass_hashes_where_no_copy_will_be_there() -> None:
    assert diffid.hash_in_pass(Compression.NONE, 10, 1 << 30)  # free, or no copy
    assert diffid.hash_in_pass(Compression.GZIP, 10, 0)  # copies off
    assert diffid.hash_in_pass(Compression.GZIP, 2 << 30, 1 << 30)  # blob over the limit
    assert not diffid.hash_in_pass(Compression.ZSTD, 10 << 20, 1 << 30)
    raw = layer_tar()
    record, _ = indexer.build(BytesReader(raw), of_bytes(raw), Compression.NONE, DEFAULT,
                              want_diff_id=False)
    assert record.diff_id == str(of_bytes(raw))  # an uncompressed layer is its own
