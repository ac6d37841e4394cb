"""A registry layer's index pass trusts the download's digest check, and only that one.

The download of a registry blob hashes what it receives; the layer's index pass,
which reads the download as it arrives, does not hash the same bytes again
(`blobio.SelfVerifying`): its read that reaches the end waits for the download's
verdict. These tests hold the promises that rest on it: a blob whose bytes do not
match fails the layer (EIO) with nothing cached, even when the pass is the first
reader; and a copy left in the cache by an earlier mount, which this mount did not
download, is still hashed by the pass (a copy damaged on disk is caught).
"""

from __future__ import annotations

import errno
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocifs.cache import DiskCache
from tests.conftest import _wait_gone, require_fuse, require_tools, unmount
from tests.helpers.faultproxy import FaultProxy
from tests.helpers.registry import Registry, big_image_behind_proxy

BIG = 4 * 1024 * 1024


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Registry, FaultProxy, Path, str]]:
    """A registry with a 4 MiB uncompressed layer (/big.bin), behind a fault proxy."""
    require_fuse()
    require_tools("docker-registry", "skopeo")
    with big_image_behind_proxy(tmp_path, BIG) as registry:
        yield registry


def _entries(cache: Path, kind: str) -> list[Path]:
    d = cache / kind
    return [p for p in d.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")] if (
        d.exists()
    ) else []


def _cached_blob(cache: Path, layout: Path, digest: str) -> bool:
    """Whether the cache holds a (committed) copy of the blob `digest`."""
    size = (layout / "blobs/sha256" / digest.split(":")[1]).stat().st_size
    fd = DiskCache(cache).open_file("registry-blob", digest, size)
    if fd is None:
        return False
    os.close(fd)
    return True


def _eio(path: Path) -> None:
    with pytest.raises(OSError) as err:
        path.read_bytes()
    assert err.value.errno == errno.EIO, err.value


def _big_bin(layout: Path) -> bytes:
    """/big.bin as the layout's own mount would show it: the tar member's bytes."""
    (blob,) = [
        p for p in (layout / "blobs/sha256").iterdir() if p.stat().st_size > BIG
    ]
    with tarfile.open(blob) as tar:
        member = tar.extractfile("big.bin")
        assert member is not None
        return member.read()


def test_a_corrupt_blob_read_first_by_the_index_pass_fails_and_caches_nothing(
    mount_image, proxied, tmp_path
) -> None:
    reg, proxy, layout, layer = proxied
    cache = tmp_path / "cache"
    proxy.mode, proxy.digest = "corrupt", layer
    m = mount_image(proxy.ref("big:1"), "--tls-verify=false", cache=cache)
    m.expect_log(r"GET http://127\.0\.0\.1:\d+/v2/big/blobs/sha256:[0-9a-f]{64}: ")
    m.expect_log(r"sha256:[0-9a-f]{64}")
    # the first reader of the blob is the layer's index pass (rootfs/ and layers/0/)
    _eio(m.path / "refs/1/rootfs/big.bin")
    with pytest.raises(OSError) as err:
        os.listdir(m.path / "refs/1/layers/0")
    assert err.value.errno == errno.EIO
    assert proxy.blob_bytes >= BIG  # the pass read the blob through to its end
    assert "does not match its digest" in m.log_text()
    assert os.listdir(m.path / "refs") == ["1"]  # the rest of the mount answers
    assert _entries(cache, "layer-index") == []
    assert not _cached_blob(cache, layout, layer)
    # the same cache, straight to the registry: the right tree
    m2 = mount_image(reg.ref("big:1"), "--tls-verify=false", cache=cache)
    assert (m2.path / "refs/1/rootfs/big.bin").read_bytes() == _big_bin(layout)


def test_a_cached_blob_damaged_on_disk_is_still_hashed_by_the_index_pass(
    mount_image, proxied, tmp_path
) -> None:
    reg, _proxy, layout, layer = proxied
    cache = tmp_path / "cache"
    m = mount_image(reg.ref("big:1"), "--tls-verify=false", cache=cache)
    blob = (layout / "blobs/sha256" / layer.split(":")[1]).read_bytes()
    assert (m.path / "refs/1/layers/0.tar").read_bytes() == blob  # downloaded, no index
    pid = m.pid
    unmount(m.path)
    assert _wait_gone(pid)  # the daemon has let go of the cache
    assert _entries(cache, "layer-index") == []
    assert _cached_blob(cache, layout, layer)
    (cached,) = [p for p in _entries(cache, "registry-blob") if p.stat().st_size == len(blob)]
    with open(cached, "r+b") as f:  # same size, one byte flipped inside big.bin
        f.seek(len(blob) // 2)
        byte = f.read(1)
        f.seek(len(blob) // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    m2 = mount_image(reg.ref("big:1"), "--tls-verify=false", cache=cache)
    m2.expect_log(r"layer sha256:[0-9a-f]{64}: content does not match its digest")
    _eio(m2.path / "refs/1/rootfs/big.bin")
    assert _entries(cache, "layer-index") == []
