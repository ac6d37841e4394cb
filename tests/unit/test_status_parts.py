"""Pieces behind `ocifs umount|list|status` and `-o symlinks=contained`, without a mount:
the mountinfo parser, per-layer indexing progress, access() answers, contained targets."""

from __future__ import annotations

import os
import random
import stat
import sys
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))
import tarbuilder as tb

from ocifs import mounttable
from ocifs.cache import DiskCache
from ocifs.codec.blobio import BlobReader
from ocifs.errors import BlobUnavailable, ReadOnly
from ocifs.layers.store import LayerStore
from ocifs.model.digest import Digest
from ocifs.tree.permissions import allowed
from ocifs.tree.symlinks import contained_target

MOUNTINFO = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "40 22 0:39 / /mnt/my\\040images rw,nosuid,nodev,noatime shared:5 - fuse.ocifs "
    "/srv/a\\040b,c rw,user_id=1000,group_id=1000\n"
    "41 22 0:40 / /tmp/t rw - tmpfs none rw\n"
    "42 22 0:41 / /mnt/ro ro,nosuid - fuse.ocifs /srv/x.tar ro,user_id=0,group_id=0\n"
)


def test_mountinfo_parsing() -> None:
    entries = mounttable.parse(MOUNTINFO)
    by_point = {e.mountpoint: e for e in entries}
    mine = by_point["/mnt/my images"]
    assert mine.is_ocifs and mine.source == "/srv/a b,c" and mine.user_id == 1000
    assert not mine.read_only
    assert by_point["/mnt/ro"].read_only and by_point["/mnt/ro"].user_id == 0
    assert not by_point["/tmp/t"].is_ocifs and by_point["/tmp/t"].fstype == "tmpfs"


def test_progress_advances_while_a_layer_is_indexed(tmp_path: Path) -> None:
    """`bytes_done` grows during the indexing pass and equals the blob size at the end."""
    src = tb.BlobSource(tmp_path)
    data = random.Random(1).randbytes(5 << 20)
    desc = src.layer([tb.File("big", data), tb.File("small", b"x")], "gz")
    seen: list[tuple[str, int, int]] = []
    store: LayerStore

    class Watching(tb.BlobSource):
        def open_blob(self, digest: Digest) -> BlobReader:
            inner = src.open_blob(digest)

            class Reader:
                size = inner.size

                def pread(self, offset: int, size: int) -> bytes:
                    p = store.progress.layers[str(digest)]
                    seen.append((p.state, p.done, p.size))
                    return inner.pread(offset, size)

                def close(self) -> None:
                    inner.close()

            return Reader()

    watching = Watching(tmp_path)
    watching.blobs = src.blobs

    async def main() -> None:
        nonlocal store
        store = LayerStore(watching, DiskCache(tmp_path / "cache"))
        await store.index(desc)

    trio.run(main)
    assert len(seen) > 3
    assert {s for s, _d, _t in seen} == {"indexing"}
    dones = [d for _s, d, _t in seen]
    assert dones == sorted(dones) and dones[0] < dones[-1] < desc.size
    final = store.progress.snapshot()
    assert len(final) == 1
    assert final[0]["state"] == "indexed"
    assert final[0]["bytes_done"] == final[0]["bytes_total"] == desc.size
    assert final[0]["entries"] == 3  # the root, big, small

    async def again() -> None:
        st = LayerStore(watching, DiskCache(tmp_path / "cache"))
        await st.index(desc)
        assert [p["state"] for p in st.progress.snapshot()] == ["cached"]

    trio.run(again)


def test_progress_of_a_failed_layer(tmp_path: Path) -> None:
    src = tb.BlobSource(tmp_path)
    desc = src.layer([tb.File("a", b"a")], "gz")
    src.blobs[desc.digest] = src.blobs[desc.digest][:-1]

    async def main() -> LayerStore:
        st = LayerStore(src, DiskCache(tmp_path / "cache"))
        with pytest.raises(BlobUnavailable):
            await st.index(desc)
        return st

    (layer,) = trio.run(main).progress.snapshot()
    assert layer["state"] == "failed" and "blob has" in str(layer["error"])


def test_access_answers() -> None:
    file_644, exe, directory = stat.S_IFREG | 0o644, stat.S_IFREG | 0o755, stat.S_IFDIR | 0o700
    for mode in (file_644, exe, directory):
        assert allowed(mode, os.R_OK, writable=False)
        assert allowed(mode, os.F_OK, writable=False)
        with pytest.raises(ReadOnly):
            allowed(mode, os.W_OK, writable=False)
        assert allowed(mode, os.W_OK | os.R_OK, writable=True)
    assert not allowed(file_644, os.X_OK, writable=False)
    assert allowed(exe, os.X_OK, writable=False)
    assert allowed(stat.S_IFDIR | 0o000, os.X_OK, writable=False)


@pytest.mark.parametrize(
    ("link", "target", "shown"),
    [
        ("etc/x", "/etc/os-release", "os-release"),
        ("usr/bin/sh", "/bin/busybox", "../../bin/busybox"),
        ("x", "/", "."),
        ("d/l", "/", ".."),
        ("a", "/../../etc", "etc"),
        ("a/b/c", "../../../../etc/passwd", "../../etc/passwd"),  # relative, but escaping
        ("a/b", "../c", "../c"),  # stays inside: as stored
        ("a/b", "c/../../d", "c/../../d"),
        ("l", "", ""),
    ],
)
def test_contained_targets(link: str, target: str, shown: str) -> None:
    assert contained_target(link, target) == shown
