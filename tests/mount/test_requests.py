"""What the kernel may keep so requests never reach the daemon, and what it must not.

Counting tests: the daemon's debug log has one line per lookup, statfs
measurement and forget, so a property such as "a second stat of a missing name
in an image costs no LOOKUP" is asserted as a count, never as a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import copy_layout

SAMPLE_REF = "sample:1.0"


def _lookups(m: Any, name: str) -> int:
    return m.log_text().count(f" name={os.fsencode(name)!r}")


def _missing(path: Path) -> bool:
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    return False


def _manifest_digest(layout: Path, ref: str) -> str:
    index = json.loads((layout / "index.json").read_text())
    return next(
        d["digest"]
        for d in index["manifests"]
        if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref
    )


def test_missing_names_in_an_image_are_asked_once(mount_image: Any, sample_layout: Path) -> None:
    """File managers probe every directory for .hidden, .Trash...: in image
    content (immutable) the kernel remembers the absence."""
    m = mount_image(sample_layout, "--debug")
    inside = m.path / "refs" / SAMPLE_REF / "rootfs/etc"
    layer = m.path / "refs" / SAMPLE_REF / "layers/0"
    for directory in (inside, layer, m.path / "refs" / SAMPLE_REF / "rootfs"):
        for _ in range(3):
            assert _missing(directory / ".hidden")
            assert _missing(directory / ".Trash-0")
    assert _lookups(m, ".hidden") == 3
    assert _lookups(m, ".Trash-0") == 3
    # present names are unaffected
    assert (inside / "os-release").read_text().startswith("NAME=")


def test_missing_names_in_mutable_directories_are_asked_every_time(
    mount_image: Any, sample_layout: Path, tmp_path: Path
) -> None:
    """refs/, blobs/<alg>/, .import/ and the root change with imports: a missing
    name there is asked again, and found once an import adds it."""
    layout = copy_layout(sample_layout, tmp_path / "layout")
    m = mount_image(layout, "--debug")
    for _ in range(2):
        assert _missing(m.path / "refs/v9")
        assert _missing(m.path / ".import/x")
    assert _lookups(m, "v9") == 2
    assert _lookups(m, "x") == 2
    data = os.urandom(1000)
    hex_ = hashlib.sha256(data).hexdigest()
    assert _missing(m.path / "blobs/sha256" / hex_)
    src = tmp_path / "blob"
    src.write_bytes(data)
    subprocess.run(["cp", str(src), str(m.path / f".import/sha256:{hex_}")], check=True)
    assert (m.path / "blobs/sha256" / hex_).read_bytes() == data
    # a new ref under refs/, looked up (and missed) before the import made it
    manifest = _manifest_digest(layout, SAMPLE_REF).split(":")[1]
    shutil.copyfile(layout / "blobs/sha256" / manifest, m.path / ".import/refs/v9")
    assert (m.path / "refs/v9/rootfs/etc/os-release").read_text().startswith("NAME=")


def test_an_image_directory_completed_by_an_import_shows_its_new_entries(
    mount_image: Any, sample_layout: Path, tmp_path: Path
) -> None:
    """An image directory built while its manifest was missing gains config.json,
    layers/ and rootfs/ when an import supplies it: its misses are not cached."""
    layout = copy_layout(sample_layout, tmp_path / "layout")
    digest = _manifest_digest(layout, SAMPLE_REF)
    blob = layout / "blobs/sha256" / digest.split(":")[1]
    saved = tmp_path / "manifest"
    shutil.move(blob, saved)
    m = mount_image(layout, "--debug")
    m.expect_log(r"missing")
    # by-digest/<digest>/ is the image directory itself (refs/<name>/ is mutable)
    image = m.path / "by-digest" / digest
    for _ in range(2):
        assert _missing(image / "rootfs")
    assert _lookups(m, "rootfs") == 2
    subprocess.run(["cp", str(saved), str(m.path / f".import/{digest}")], check=True)
    assert (image / "rootfs/etc/os-release").read_text().startswith("NAME=")


def _directories_known_after_forget(m: Any, fewer_than: int) -> list[int]:
    """The "directories known" figure of every FORGET the daemon logged, once one
    is below `fewer_than` (or after 20 s).

    FORGET reaches the daemon asynchronously: the kernel queues it as it evicts
    dentries and the daemon logs it when it gets to it, which on a busy machine is
    after the write to drop_caches returns. So poll the log, and drop again in
    case something still held a dentry the first time."""
    deadline = time.monotonic() + 20
    known: list[int] = []
    while time.monotonic() < deadline:
        Path("/proc/sys/vm/drop_caches").write_text("2\n")  # dentries and inodes only
        for _ in range(10):
            known = [
                int(line.rsplit(";", 1)[1].split()[0])
                for line in m.log_text().splitlines()
                if "forget " in line
            ]
            if known and min(known) < fewer_than:
                return known
            time.sleep(0.1)
    return known


def test_dotdot_survives_forget_and_forgotten_directories_are_dropped(
    mount_image: Any, sample_layout: Path
) -> None:
    """The `..` table follows the kernel's lookup counts: entries go with FORGET
    (it used to grow with every directory ever seen), `..` in listings stays right."""
    if os.geteuid() != 0:
        pytest.fail("needs root: FORGET is provoked by writing /proc/sys/vm/drop_caches")
    m = mount_image(sample_layout, "--debug")
    rootfs = m.path / "refs" / SAMPLE_REF / "rootfs"
    subprocess.run(["find", str(m.path)], check=True, capture_output=True)
    directories = int(
        subprocess.run(
            ["find", str(m.path), "-type", "d"], check=True, capture_output=True, text=True
        ).stdout.count("\n")
    )
    known = _directories_known_after_forget(m, fewer_than=directories)
    assert known, "the kernel sent no FORGET within 20 s of dropping the dentry cache"
    assert min(known) < directories
    for directory, parent in ((rootfs / "etc", rootfs), (rootfs, rootfs.parent)):
        out = subprocess.run(
            ["ls", "-ai1", str(directory)], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        inodes = {line.split()[1]: int(line.split()[0]) for line in out[:2]}
        assert inodes["."] == os.stat(directory).st_ino
        assert inodes[".."] == os.stat(parent).st_ino


def test_statfs_is_measured_once_for_many_requests(
    mount_image: Any, sample_layout: Path
) -> None:
    """File managers ask statfs for every directory they show."""
    m = mount_image(sample_layout, "--debug")
    first = os.statvfs(m.path)
    for _ in range(20):
        assert os.statvfs(m.path / "refs").f_blocks == first.f_blocks
    # a short reuse window (a second at most) on a writable layout
    assert 1 <= m.log_text().count("statfs measured") <= 2

