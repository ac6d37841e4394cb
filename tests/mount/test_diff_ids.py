"""The diff_id of a compressed layer is hashed when `rootfs/` first needs it (issue 14).

The index pass of a layer whose unpacked copy is kept does not hash the
decompressed stream; `rootfs/` hashes the copy and keeps the result in the
cache (`layer-diff-id`, diffid.py). What must still hold, through real mounts:
`rootfs/` is only served from layers whose diff_id matches the config, also
when the layer tree was listed first and its index is cached without one; a
kept diff_id is reused by later mounts; a damaged copy or damaged entry is
never trusted; a daemon killed while hashing leaves nothing half-written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ocifs.cache import DiskCache
from ocifs.layers import diffid, serial
from ocifs.layers.store import DATA_KIND, INDEX_KIND
from tests.conftest import _wait_gone, ocifs
from tests.helpers import tarbuilder
from tests.helpers.layoutbuilder import Layout
from tests.mount.test_hostile_read import probe


def gz_image(tmp_path: Path, *, wrong: bool = False) -> tuple[Layout, str, str]:
    """A layout tagged `img`: one gzip layer, its config's diff_id right or
    `wrong`; (layout, layer digest, the layer's real diff_id)."""
    layout = Layout(tmp_path / "layout")
    layer = layout.layer([tarbuilder.Dir("etc"), tarbuilder.File("etc/hello", data=b"hi\n")],
                         "gz")
    ids = ["sha256:" + "1" * 64] if wrong else None
    layout.tag(layout.image([layer], diff_ids=ids), "img")
    return layout, layer[0]["digest"], layer[1]


def cached_record(cache_dir: Path, digest: str) -> serial.LayerRecord:
    payload = DiskCache(cache_dir).get(INDEX_KIND, digest, version=serial.FORMAT)
    assert payload is not None
    record = serial.loads(payload)
    assert record is not None
    return record


def entry_file(cache_dir: Path, kind: str, key: str) -> Path:
    path = DiskCache(cache_dir).path_for(kind, key)
    assert path.exists(), path
    return path


def test_rootfs_refuses_a_layer_listed_first_whose_diff_id_does_not_match(
    mount_image: Any, tmp_path: Path, cache_dir: Path
) -> None:
    layout, digest, real = gz_image(tmp_path, wrong=True)
    m = mount_image(layout.path)
    m.expect_log(r"rootfs: image config .* decompresses to")
    assert (m.path / "refs/img/layers/0/etc/hello").read_bytes() == b"hi\n"
    # the listing did not hash the stream: the cached index has no diff_id
    assert cached_record(cache_dir, digest).diff_id == ""
    assert diffid.load(DiskCache(cache_dir), digest) == ""
    for _ in range(2):
        assert probe("list", m.path / "refs/img/rootfs") == ["err", "EIO"]
    assert (m.path / "refs/img/layers/0/etc/hello").read_bytes() == b"hi\n"
    lines = [ln for ln in m.log_text().splitlines() if "decompresses to" in ln]
    assert len(lines) == 1 and f"decompresses to {real}" in lines[0], lines
    # what was hashed is the layer's true diff_id, and it is kept
    assert diffid.load(DiskCache(cache_dir), digest) == real
    assert ocifs("umount", str(m.path)).returncode == 0

    # a new mount over the same cache (index and diff_id cached): still refused
    m2 = mount_image(layout.path)
    m2.expect_log(r"rootfs: image config .* decompresses to")
    assert probe("list", m2.path / "refs/img/rootfs") == ["err", "EIO"]
    assert f"hashing layer {digest}" not in m2.log_text()


def test_a_rootfs_listed_first_gets_the_diff_id_from_its_pass(
    mount_image: Any, tmp_path: Path, cache_dir: Path
) -> None:
    layout, digest, real = gz_image(tmp_path)
    m = mount_image(layout.path)
    assert sorted(os.listdir(m.path / "refs/img/rootfs")) == ["etc"]
    # the pass the rootfs waited for hashed as it went: kept with the index
    assert cached_record(cache_dir, digest).diff_id == real
    assert f"hashing layer {digest}" not in m.log_text()
    assert (m.path / "refs/img/rootfs/etc/hello").read_bytes() == b"hi\n"


def test_a_kept_diff_id_is_reused_by_the_next_mount(
    mount_image: Any, tmp_path: Path, cache_dir: Path
) -> None:
    layout, digest, real = gz_image(tmp_path)
    m = mount_image(layout.path)
    assert sorted(os.listdir(m.path / "refs/img/layers/0")) == ["etc"]
    assert sorted(os.listdir(m.path / "refs/img/rootfs")) == ["etc"]
    assert f"hashing layer {digest}" in m.log_text()
    assert diffid.load(DiskCache(cache_dir), digest) == real
    assert ocifs("umount", str(m.path)).returncode == 0

    # Without the copy, and with a blob that no longer matches its digest, the
    # diff_id could not be hashed again: the rootfs answers from the cache alone.
    entry_file(cache_dir, DATA_KIND, digest).unlink()
    blob = layout.blob_path(digest)
    blob.write_bytes(bytes(blob.stat().st_size))
    m2 = mount_image(layout.path)
    assert sorted(os.listdir(m2.path / "refs/img/rootfs")) == ["etc"]
    assert f"hashing layer {digest}" not in m2.log_text()
    assert ocifs("umount", str(m2.path)).returncode == 0

    # the control: the same without the kept diff_id fails (the blob is bad)
    entry_file(cache_dir, diffid.KIND, digest).unlink()
    m3 = mount_image(layout.path)
    m3.expect_log(r"does not match its digest|rootfs: ")
    assert probe("list", m3.path / "refs/img/rootfs") == ["err", "EIO"]


def test_a_damaged_diff_id_entry_or_copy_is_not_trusted(
    mount_image: Any, tmp_path: Path, cache_dir: Path
) -> None:
    layout, digest, real = gz_image(tmp_path)
    m = mount_image(layout.path)
    assert sorted(os.listdir(m.path / "refs/img/layers/0")) == ["etc"]
    assert sorted(os.listdir(m.path / "refs/img/rootfs")) == ["etc"]
    assert ocifs("umount", str(m.path)).returncode == 0

    # a flipped byte in the kept entry: rejected by its checksum, hashed again
    kept = entry_file(cache_dir, diffid.KIND, digest)
    data = bytearray(kept.read_bytes())
    data[-3] ^= 0x01
    kept.write_bytes(bytes(data))
    m2 = mount_image(layout.path)
    m2.expect_log(r"is corrupt or truncated; rebuilding")
    assert sorted(os.listdir(m2.path / "refs/img/rootfs")) == ["etc"]
    assert f"hashing layer {digest}" in m2.log_text()
    assert diffid.load(DiskCache(cache_dir), digest) == real
    assert ocifs("umount", str(m2.path)).returncode == 0

    # a flipped byte in the unpacked copy (no kept diff_id): the copy fails its
    # CRC, is dropped, and the blob is hashed instead — the right diff_id, no EIO
    entry_file(cache_dir, diffid.KIND, digest).unlink()
    copy = entry_file(cache_dir, DATA_KIND, digest)
    data = bytearray(copy.read_bytes())
    data[600] ^= 0x01
    copy.write_bytes(bytes(data))
    m3 = mount_image(layout.path)
    m3.expect_log(r"unpacked copy of layer .* is corrupt")
    assert sorted(os.listdir(m3.path / "refs/img/rootfs")) == ["etc"]
    assert "hashing the blob" in m3.log_text()
    assert diffid.load(DiskCache(cache_dir), digest) == real
    assert (m3.path / "refs/img/rootfs/etc/hello").read_bytes() == b"hi\n"


@pytest.mark.parametrize("step", ["diff-id-hash", "diff-id-store", "cache-replace"])
def test_kill_9_while_hashing_keeps_no_partial_diff_id_and_the_next_mount_hashes(
    mount_image: Any, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
    step: str,
) -> None:
    layout, digest, real = gz_image(tmp_path)
    m = mount_image(layout.path)
    assert sorted(os.listdir(m.path / "refs/img/layers/0")) == ["etc"]  # indexed, copy kept
    assert cached_record(cache_dir, digest).diff_id == ""
    assert ocifs("umount", str(m.path)).returncode == 0

    # The index is cached: the diff_id's entry is the only one this mount writes,
    # and the daemon dies at `step` (before the hash, before the store, or with
    # the entry written to its temporary file but not renamed into place).
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")
    monkeypatch.setenv("OCIFS_TEST_CRASH_AT", step)
    m2 = mount_image(layout.path)
    assert probe("list", m2.path / "refs/img/rootfs")[0] == "err"
    assert _wait_gone(m2.pid)
    assert ocifs("umount", str(m2.path)).returncode == 0
    monkeypatch.delenv("OCIFS_TEST_CRASH_AT")

    entry = DiskCache(cache_dir).path_for(diffid.KIND, digest)
    assert not entry.exists() or diffid.load(DiskCache(cache_dir), digest) == real
    temps = list((cache_dir / diffid.KIND).rglob(".tmp-*"))
    if step == "cache-replace":
        assert temps, "the daemon died before writing the entry's temporary file"

    # the next mount ignores a leftover temporary file and hashes again
    m3 = mount_image(layout.path)
    assert sorted(os.listdir(m3.path / "refs/img/rootfs")) == ["etc"]
    assert (m3.path / "refs/img/rootfs/etc/hello").read_bytes() == b"hi\n"
    assert f"hashing layer {digest}" in m3.log_text()
    assert diffid.load(DiskCache(cache_dir), digest) == real


def no_traceback(m: Any) -> None:
    assert "Traceback" not in m.log_text(), m.log_text()


def test_disk_full_while_indexing_for_rootfs_is_enospc_without_a_traceback(
    mount_image: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The index pass runs beside the diff_id check (two tasks of one nursery):
    # its OSError must still reach the kernel as its errno, not as EIO.
    layout, _digest, _real = gz_image(tmp_path)
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")
    monkeypatch.setenv("OCIFS_TEST_FAIL_AT", "cache-lock:ENOSPC")
    m = mount_image(layout.path)
    m.expect_log(r"rootfs: \[Errno 28\] No space left on device \(injected at cache-lock\)")
    for _ in range(2):
        assert probe("list", m.path / "refs/img/rootfs") == ["err", "ENOSPC"]
    no_traceback(m)
    lines = [ln for ln in m.log_text().splitlines() if "rootfs: " in ln]
    assert len(lines) == 1, lines


@pytest.mark.parametrize("step", ["cache-lock", "diff-id-hash"])
def test_an_os_error_while_hashing_the_diff_id_is_one_line_and_eio(
    mount_image: Any, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
    step: str,
) -> None:
    layout, digest, real = gz_image(tmp_path)
    m = mount_image(layout.path)
    assert sorted(os.listdir(m.path / "refs/img/layers/0")) == ["etc"]  # index cached
    assert ocifs("umount", str(m.path)).returncode == 0

    # the index comes from the cache: only the diff_id's work meets the fault
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")
    monkeypatch.setenv("OCIFS_TEST_FAIL_AT", f"{step}:EACCES")
    m2 = mount_image(layout.path)
    m2.expect_log(rf"rootfs: layer {digest}: diff_id: .*injected at {step}")
    for _ in range(2):
        assert probe("list", m2.path / "refs/img/rootfs") == ["err", "EIO"]
    assert (m2.path / "refs/img/layers/0/etc/hello").read_bytes() == b"hi\n"
    no_traceback(m2)
    lines = [ln for ln in m2.log_text().splitlines() if "rootfs: " in ln]
    assert len(lines) == 1 and "Permission denied" in lines[0], lines
    assert ocifs("umount", str(m2.path)).returncode == 0

    # the failure was the disk's, not the layer's: nothing kept, the next mount hashes
    monkeypatch.delenv("OCIFS_TEST_FAIL_AT")
    m3 = mount_image(layout.path)
    assert sorted(os.listdir(m3.path / "refs/img/rootfs")) == ["etc"]
    assert diffid.load(DiskCache(cache_dir), digest) == real
