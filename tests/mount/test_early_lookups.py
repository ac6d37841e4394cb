"""Issue 14: lookups inside a layer answered before its indexing pass ends.

Checked by order, not by time: the daemon's pass is held at a gate
(`OCIFS_TEST_INDEX_GATE`, ocifs/layers/testgate.py) after the first members,
so whatever is answered while the gate file does not exist was answered by a
pass that cannot have ended. Then the gate opens and the final index answers.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest

from tests.helpers import tarbuilder as tb
from tests.helpers.layoutbuilder import Layout

#: members before the gate (the pass stops before adding the next one)
EARLY = [
    tb.Dir("etc"),
    tb.File("etc/os-release", data=b"v1\n"),
    tb.File("etc/dup", data=b"first", mode=0o600),
    tb.Hardlink("etc/link", target="etc/dup"),
    tb.Hardlink("etc/too-early", target="etc/late"),  # its target comes later: dropped
    tb.Dir("sub"),
]
LATE = [
    tb.File("etc/dup", data=b"second version", mode=0o640),  # replaces the first
    tb.File("etc/late", data=b"late"),
    *[tb.File(f"bulk/f{i:04d}", data=b"%d\n" % i) for i in range(3000)],
    tb.File("sub/last", data=b"the last member"),
]


def _gated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, members: int) -> Path:
    gate = tmp_path / "gate"
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")
    monkeypatch.setenv("OCIFS_TEST_INDEX_GATE", f"{members}:{gate}")
    return gate


def _in_thread(func, *args):  # type: ignore[no-untyped-def]
    """Run func(*args) in a thread; returns (thread, result list: value or exception)."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(func(*args))
        except OSError as exc:
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_lookups_answer_before_the_pass_ends_and_turn_final(
    mount_image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout(tmp_path / "layout")
    layer = layout.layer([*EARLY, *LATE], "gz")
    layout.tag(layout.image([layer]), "early")
    gate = _gated(monkeypatch, tmp_path, len(EARLY))
    m = mount_image(layout.path)
    root = m.path / "refs/early/layers/0"

    # Answered by the running pass: the gate is closed, so the pass cannot have ended.
    assert os.stat(root / "etc/os-release").st_size == 3
    dup = os.stat(root / "etc/dup")
    assert (dup.st_size, stat.S_IMODE(dup.st_mode)) == (5, 0o600)  # provisional
    assert os.stat(root / "etc/link").st_size == 5
    assert stat.S_ISDIR(os.stat(root / "sub").st_mode)
    assert not gate.exists() and "indexed layer" not in m.log_text()

    # Listings, names not seen yet and reads wait for the end of the pass. (Opened
    # here, before the other requests: the kernel serialises lookups in one directory.)
    fd = os.open(root / "etc/dup", os.O_RDONLY)
    reader, read = _in_thread(os.read, fd, 100)
    listing, listed = _in_thread(os.listdir, root / "etc")
    late, late_stat = _in_thread(os.stat, root / "etc/late")
    early_link, early_link_stat = _in_thread(os.stat, root / "etc/too-early")
    gate.touch()
    for thread in (listing, late, early_link, reader):
        thread.join(timeout=60)
    assert sorted(listed[0]) == ["dup", "late", "link", "os-release"]  # type: ignore[arg-type]
    assert late_stat[0].st_size == 4  # type: ignore[union-attr]
    assert isinstance(early_link_stat[0], OSError) and early_link_stat[0].errno == errno.ENOENT
    # opened as the member the pass had then: it keeps reading that member, as a
    # file replaced on disk while open does
    assert read == [b"first"]
    os.close(fd)

    # The final index: the later member's attributes, the link keeps the first version.
    dup = os.stat(root / "etc/dup")
    assert (dup.st_size, stat.S_IMODE(dup.st_mode)) == (14, 0o640)
    assert (root / "etc/dup").read_bytes() == b"second version"
    assert (root / "etc/link").read_bytes() == b"first"
    assert os.stat(root / "etc/link").st_nlink == 1
    assert sorted(os.listdir(root / "sub")) == ["last"]
    assert len(os.listdir(root / "bulk")) == 3000
    found = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    assert len(found) == 3000 + 5
    # a directory answered early keeps its inode; the early file still reads its data
    assert os.stat(root / "sub").st_ino == os.stat(root / "sub").st_ino


def test_a_digest_mismatch_at_the_end_fails_the_layer_with_nothing_cached(
    mount_image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: Path
) -> None:
    layout = Layout(tmp_path / "layout")
    members = [tb.File("first", data=b"first\n"), tb.File("second", data=b"x" * 4096)]
    layer = layout.layer(members)
    layout.tag(layout.image([layer]), "bad")
    blob = layout.blob_path(layer[0])
    data = bytearray(blob.read_bytes())
    at = data.index(b"x" * 4096) + 100
    data[at] = ord("y")  # same size, the tar still walks: only the digest fails
    blob.write_bytes(bytes(data))
    gate = _gated(monkeypatch, tmp_path, 1)
    m = mount_image(layout.path)
    m.expect_log("sha256")
    root = m.path / "refs/bad/layers/0"

    assert os.stat(root / "first").st_size == 6  # provisional, from the running pass
    gate.touch()
    # a name the layer lacks is answered by the end of the pass only: EIO, then
    # every name fails (nothing provisional survives in the kernel's caches)
    for path in (root / "absent", root / "first", root / "second"):
        with pytest.raises(OSError) as err:
            os.stat(path)
        assert err.value.errno == errno.EIO
    with pytest.raises(OSError) as err:
        os.listdir(root)
    assert err.value.errno == errno.EIO
    hexd = layer[0]["digest"].split(":", 1)[1]
    cached = [p for p in cache_dir.rglob("*") if hexd in p.name]
    assert cached == []
