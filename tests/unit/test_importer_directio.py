"""Staging appends through O_DIRECT (importer.directio): every byte lands where
it was written, whatever the sizes and whatever comes after (a rewrite, a
read, a truncate, a removal), and write errors reach the importer."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import random
from pathlib import Path

import pytest

from ocifs.importer import directio
from ocifs.importer.staging import StagedFile


def _content(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def _append_in_pieces(staged: StagedFile, data: bytes, piece: int) -> None:
    for start in range(0, len(data), piece):
        staged.append(data[start : start + piece])


def _on_disk(staged: StagedFile) -> bytes:
    return Path(staged.path).read_bytes()


def test_odd_sized_appends_are_stored_and_hashed(tmp_path: Path) -> None:
    data = _content(3 * directio.CHUNK * directio.DEPTH // 2 + 12345)
    staged = StagedFile(str(tmp_path))
    try:
        _append_in_pieces(staged, data, 777_777)
        assert staged.hexdigest() == hashlib.sha256(data).hexdigest()  # incremental
        staged.settle()
        assert _on_disk(staged) == data
        assert not fcntl.fcntl(staged.fd, fcntl.F_GETFL) & os.O_DIRECT  # plain again
    finally:
        staged.discard()
    assert not os.path.exists(staged.path)


def _takes_o_direct(directory: Path) -> bool:
    """Ask the filesystem itself: open() with O_DIRECT fails with EINVAL where unsupported."""
    try:
        fd = os.open(directory / "probe", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError as exc:
        assert exc.errno == errno.EINVAL
        return False
    os.close(fd)
    return True


def test_direct_writes_where_the_filesystem_takes_them(tmp_path: Path) -> None:
    """The fast path is taken wherever O_DIRECT works (ext4, tmpfs on 6.6+), and
    plain writes from the same threads store the same bytes elsewhere."""
    data = _content(directio.CHUNK * directio.DEPTH * 2 + 99)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        writer = directio.DirectWriter(fd)
        writer.append(data)
        assert writer.direct == _takes_o_direct(tmp_path)
        writer.finish()
        assert (tmp_path / "f").read_bytes() == data
    finally:
        os.close(fd)


def test_rewrite_read_and_truncate_after_direct_appends(tmp_path: Path) -> None:
    data = bytearray(_content(2 * directio.CHUNK + 5000))
    staged = StagedFile(str(tmp_path))
    try:
        _append_in_pieces(staged, bytes(data), 1 << 20)
        # a read before anything was settled sees what was written
        assert staged.pread(directio.CHUNK - 10, 20) == bytes(data[directio.CHUNK - 10 :
                                                                  directio.CHUNK + 10])
        # appends after a read continue (plainly, or directly again when aligned)
        more = _content(directio.CHUNK + 1, seed=8)
        staged.append(more)
        data += more
        # a rewrite in the middle: the digest then comes from the file
        staged.write(100, b"X" * 10)
        data[100:110] = b"X" * 10
        assert staged.hexdigest() == hashlib.sha256(bytes(data)).hexdigest()
        staged.truncate(3 * directio.CHUNK)
        del data[3 * directio.CHUNK :]
        assert _on_disk(staged) == bytes(data)
        assert staged.hexdigest() == hashlib.sha256(bytes(data)).hexdigest()
    finally:
        staged.discard()


def test_discard_with_writes_in_flight(tmp_path: Path) -> None:
    staged = StagedFile(str(tmp_path))
    staged.append(_content(directio.CHUNK * directio.DEPTH + 1))
    staged.discard()
    assert not os.path.exists(staged.path)
    assert staged.fd == -1


def test_memory_is_bounded_whatever_the_size(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        writer = directio.DirectWriter(fd)
        piece = _content(1 << 20)
        for _ in range(6 * directio.DEPTH * directio.CHUNK // len(piece)):
            writer.append(piece)
            assert len(writer._bufs) <= directio.DEPTH
        writer.finish()
    finally:
        os.close(fd)


def test_a_write_error_reaches_the_importer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC of a direct write (in a pool thread) is raised by a later append or settle."""
    staged = StagedFile(str(tmp_path))
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")
    monkeypatch.setenv("OCIFS_TEST_FAIL_AT", "staging-write:ENOSPC")
    try:
        with pytest.raises(OSError) as caught:
            staged.append(_content(directio.CHUNK * (directio.DEPTH + 1)))
            staged.settle()
        assert caught.value.errno == errno.ENOSPC
    finally:
        monkeypatch.delenv("OCIFS_TEST_FAIL_AT")
        staged.discard()
    assert not os.path.exists(staged.path)
