"""The member table, gzip seek points, zstd copies and layer digests are built once and reused.

Shown without timing: the cache entries exist, and on the second open the
builders are replaced by functions that fail the test if called.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from contextlib import closing
from pathlib import Path

import pytest

from ocifs.cache import DiskCache
from ocifs.codec import seekable, zstd_stream
from ocifs.errors import NotAnImage
from ocifs.model import digest as digest_mod
from ocifs.sources import docker_archive, tarmembers
from ocifs.sources.base import Source
from ocifs.sources.detect import open_source
from tests.conftest import FIXTURES

WHITEOUT_DIR = FIXTURES / "go-containerregistry/pkg/v1/mutate/testdata/whiteout_dir.tar"


def docker_tar(path: Path, layers: int = 3, layer_bytes: int = 5000) -> Path:
    """A small legacy docker-save tar with uncompressed layers."""
    members: list[tuple[str, bytes]] = []
    diff_ids, paths = [], []
    for i in range(layers):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            data = os.urandom(layer_bytes)
            info = tarfile.TarInfo(f"file{i}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        layer = buf.getvalue()
        diff_ids.append(str(digest_mod.of_bytes(layer)))
        paths.append(f"{i:064x}/layer.tar")
        members.append((paths[-1], layer))
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    members.append(("cfg.json", config))
    items = [{"Config": "cfg.json", "RepoTags": ["a:1"], "Layers": paths}]
    members.append(("manifest.json", json.dumps(items).encode()))
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def forbid(*_: object, **__: object) -> None:
    pytest.fail("rebuilt although a cache entry exists")


@pytest.fixture
def cache(tmp_path: Path) -> DiskCache:
    return DiskCache(tmp_path / "cache")


def entries(cache: DiskCache, kind: str) -> list[Path]:
    return [p for p in (cache.directory / kind).rglob("*") if p.is_file()]


def test_member_table_is_reused(
    tmp_path: Path, cache: DiskCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = docker_tar(tmp_path / "d.tar")
    first = open_source(str(path), cache)
    index = first.index_bytes()
    first.close()
    assert len(entries(cache, tarmembers.CACHE_KIND)) == 1
    monkeypatch.setattr(tarmembers, "scan", forbid)
    second = open_source(str(path), cache)
    assert second.index_bytes() == index
    second.close()


def test_changed_file_is_rescanned(
    tmp_path: Path, cache: DiskCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = docker_tar(tmp_path / "d.tar")
    open_source(str(path), cache).close()
    docker_tar(tmp_path / "d.tar", layers=2)  # same name, new content
    calls: list[str] = []
    real = tarmembers.scan

    def counting(*args: object, **kwargs: object) -> tarmembers.MemberTable:
        calls.append("scan")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tarmembers, "scan", counting)
    source = open_source(str(path), cache)
    assert calls == ["scan"]
    (entry,) = json.loads(source.index_bytes())["manifests"]
    manifest = json.loads(source.open_blob(digest_mod.parse(entry["digest"])).pread(0, 10000))
    assert len(manifest["layers"]) == 2
    source.close()


def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path, cache: DiskCache) -> None:
    path = docker_tar(tmp_path / "d.tar")
    source = open_source(str(path), cache)
    key = source.identity()
    index = source.index_bytes()
    source.close()
    cache.put(
        tarmembers.CACHE_KIND,
        key,
        b'{"format": 2, "files": "garbage"}',
        version=tarmembers.CACHE_FORMAT,
    )
    again = open_source(str(path), cache)
    assert again.index_bytes() == index
    again.close()
    payload = cache.get(tarmembers.CACHE_KIND, key, version=tarmembers.CACHE_FORMAT)
    assert payload is not None and b"garbage" not in payload


def test_gzip_seek_points_are_kept(
    tmp_path: Path, cache: DiskCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = docker_tar(tmp_path / "d.tar").read_bytes()
    path = tmp_path / "d.tar.gz"
    path.write_bytes(gzip.compress(plain))
    first = open_source(str(path), cache)
    blobs = {d: first.open_blob(d).pread(0, 1 << 20) for d in first.list_blobs()}
    first.close()
    assert len(entries(cache, seekable.CACHE_KIND)) == 1
    monkeypatch.setattr(seekable, "_build", forbid)
    monkeypatch.setattr(tarmembers, "scan", forbid)
    second = open_source(str(path), cache)
    for digest, data in blobs.items():
        reader = second.open_blob(digest)
        assert reader.size == len(data)
        assert reader.pread(0, len(data)) == data
        assert reader.pread(len(data) // 2, 100) == data[len(data) // 2 : len(data) // 2 + 100]
    second.close()


def test_compressed_layer_digests_are_reused(
    cache: DiskCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = open_source(str(WHITEOUT_DIR), cache)
    index = first.index_bytes()
    first.close()
    assert len(entries(cache, docker_archive.DIGEST_CACHE_KIND)) == 4

    def no_hashing(*_: object) -> None:
        pytest.fail("a compressed layer was hashed again")

    monkeypatch.setattr(tarmembers.ArchiveFile, "member_reader", no_hashing)
    second = open_source(str(WHITEOUT_DIR), cache)  # configs are read via document()
    assert second.index_bytes() == index
    second.close()


def test_open_reads_no_blob_contents(
    tmp_path: Path, cache: DiskCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening an OCI archive reads headers and the two JSON members only."""
    blob = os.urandom(100_000)
    digest = digest_mod.of_bytes(blob)
    index = b'{"schemaVersion":2,"manifests":[]}'
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in (
            (f"blobs/sha256/{digest.hex}", blob),
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", index),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    reads: list[int] = []
    real = os.pread

    def counting(fd: int, n: int, offset: int) -> bytes:
        reads.append(n)
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", counting)
    source = open_source(str(path), cache)
    assert source.index_bytes() == index
    assert max(reads) <= 512  # header blocks, magic bytes and small JSON members
    source.close()


def _zstd(plain: Path) -> Path:
    subprocess.run(["zstd", "-q", "-f", str(plain)], check=True)
    return Path(f"{plain}.zst")


def _blobs(source: Source) -> dict[digest_mod.Digest, bytes]:
    out = {}
    for d in source.list_blobs():
        reader = source.open_blob(d)
        out[d] = reader.pread(0, reader.size)
    return out


def test_zstd_archive_copy_is_kept_and_reads_like_the_plain_tar(
    tmp_path: Path, cache: DiskCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = docker_tar(tmp_path / "d.tar", layers=2, layer_bytes=3 << 20)
    with closing(open_source(str(plain), DiskCache(tmp_path / "other"))) as source:
        expected = _blobs(source)
    path = _zstd(plain)
    with closing(open_source(str(path), cache)) as first:
        assert _blobs(first) == expected
    assert len(entries(cache, zstd_stream.COPY_KIND)) == 1
    monkeypatch.setattr(zstd_stream._Copies, "build", forbid)
    monkeypatch.setattr(tarmembers, "scan", forbid)
    with closing(open_source(str(path), cache)) as second:
        assert _blobs(second) == expected


def test_zstd_archive_damaged_after_open_is_rebuilt_and_read(
    tmp_path: Path, cache: DiskCache, caplog: pytest.LogCaptureFixture
) -> None:
    plain = docker_tar(tmp_path / "d.tar", layers=1, layer_bytes=3 << 20)
    path = _zstd(plain)
    with closing(open_source(str(path), cache)) as first:
        expected = _blobs(first)
    [copy] = entries(cache, zstd_stream.COPY_KIND)
    with closing(open_source(str(path), cache)) as second:  # opened on the good copy
        with open(copy, "r+b") as f:
            f.seek((1 << 20) + 100)  # inside the layer: not read while opening
            f.write(b"damage")
        assert _blobs(second) == expected
    assert "cached decompressed copy is damaged" in caplog.text
    with closing(open_source(str(path), cache)) as third:
        assert _blobs(third) == expected


def test_zstd_archive_too_big_for_the_cache_is_read_sequentially(tmp_path: Path) -> None:
    plain = docker_tar(tmp_path / "d.tar", layers=2, layer_bytes=1 << 20)
    with closing(open_source(str(plain), DiskCache(tmp_path / "other"))) as source:
        expected = _blobs(source)
    small = DiskCache(tmp_path / "small", limit_bytes=1 << 20)  # copies up to 256 KiB
    with closing(open_source(str(_zstd(plain)), small)) as source:
        blobs = list(source.list_blobs())
        assert _blobs(source) == expected
        last = source.open_blob(blobs[-1])  # backward seeks restart the cursor
        assert last.pread(100, 10) == expected[blobs[-1]][100:110]
    assert entries(small, zstd_stream.COPY_KIND) == []


def test_zstd_data_that_is_not_a_tar_is_refused(tmp_path: Path, cache: DiskCache) -> None:
    path = tmp_path / "notes.zst"
    path.write_bytes(subprocess.run(["zstd", "-q", "-c"], input=b"hello\n" * 1000,
                                    capture_output=True, check=True).stdout)
    with pytest.raises(NotAnImage, match="zstd data that is not a tar"):
        open_source(str(path), cache)
