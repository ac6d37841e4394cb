"""UnpackedReader: every read answers the copy's exact bytes, checks each 1 MiB
block against its CRC once, and refuses a damaged or short copy on both ways in
(`pread`, and `pread_if_cached` used to push files into the page cache)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ocifs.codec.decode import CRC_BLOCK, crc32
from ocifs.codec.readers import CopyCorrupt, UnpackedReader

SIZE = 3 * CRC_BLOCK + 12_345  # a short last block


def _copy(tmp_path: Path) -> tuple[Path, bytes, list[int]]:
    data = random.Random(7).randbytes(SIZE)
    path = tmp_path / "copy"
    path.write_bytes(data)
    crcs = [crc32(data[i : i + CRC_BLOCK]) for i in range(0, SIZE, CRC_BLOCK)]
    return path, data, crcs


def _reader(path: Path, crcs: list[int], size: int = SIZE) -> UnpackedReader:
    return UnpackedReader(os.open(path, os.O_RDONLY), size, crcs)


@pytest.mark.parametrize("way", ["pread", "pread_if_cached"])
def test_reads_answer_the_exact_bytes_in_any_order(tmp_path: Path, way: str) -> None:
    path, data, crcs = _copy(tmp_path)
    reader = _reader(path, crcs)
    read = getattr(reader, way)
    rng = random.Random(1)
    spans = [(0, 10), (CRC_BLOCK - 5, 10), (SIZE - 100, 1000), (SIZE, 5), (2 * CRC_BLOCK, 0)]
    spans += [(rng.randrange(SIZE), rng.randrange(1, 300_000)) for _ in range(200)]
    try:
        for offset, size in spans:
            assert read(offset, size) == data[offset : offset + size]
        assert all(reader._checked)  # every block was checked once on the way
    finally:
        reader.close()


@pytest.mark.parametrize("way", ["pread", "pread_if_cached"])
def test_a_damaged_block_is_refused_and_the_others_still_read(tmp_path: Path, way: str) -> None:
    path, data, crcs = _copy(tmp_path)
    with open(path, "r+b") as f:
        f.seek(CRC_BLOCK + 77)
        f.write(b"\x00" if data[CRC_BLOCK + 77] else b"\x01")
    reader = _reader(path, crcs)
    read = getattr(reader, way)
    try:
        with pytest.raises(CopyCorrupt, match="block 1"):
            read(CRC_BLOCK + 1000, 10)  # the damage lies elsewhere in the same block
        with pytest.raises(CopyCorrupt, match="block 1"):
            read(CRC_BLOCK - 10, 20)  # a read across blocks 0 and 1
        assert read(0, 100) == data[:100]
        assert read(2 * CRC_BLOCK, 100) == data[2 * CRC_BLOCK : 2 * CRC_BLOCK + 100]
    finally:
        reader.close()


def test_a_copy_shorter_than_its_index_is_refused(tmp_path: Path) -> None:
    path, data, crcs = _copy(tmp_path)
    os.truncate(path, SIZE - 1000)
    reader = _reader(path, crcs)
    try:
        with pytest.raises(CopyCorrupt):
            reader.pread(SIZE - 2000, 10)
        assert reader.pread_if_cached(SIZE - 2000, 10) is None
        assert reader.pread(0, 10) == data[:10]
    finally:
        reader.close()
