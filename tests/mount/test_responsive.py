"""Issue 3: while a big layer is being indexed, the rest of the mount keeps answering.

Checked by order, not by time: a read of another file must complete before the
daemon logs that the indexing has finished.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import copy_layout


@pytest.fixture(scope="module")
def big_layer_layout(tmp_path_factory: pytest.TempPathFactory, sample_layout: Path) -> Path:
    """The sample layout plus an image whose one layer is ~150 MiB of text (umoci-built)."""
    root = tmp_path_factory.mktemp("big")
    layout = copy_layout(sample_layout, root / "layout")
    payload = root / "payload"
    payload.mkdir()
    chunk = base64.b64encode(os.urandom(3 << 20))  # compressible, but not trivially
    with open(payload / "big.txt", "wb") as f:
        for _ in range(38):
            f.write(chunk)
    subprocess.run(["umoci", "new", "--image", f"{layout}:big"], check=True)
    subprocess.run(
        ["umoci", "insert", "--image", f"{layout}:big", str(payload), "/data"],
        check=True,
        capture_output=True,
    )
    return layout


def _log_time(line: str) -> float:
    stamp = line.split(" ")[0] + " " + line.split(" ")[1]
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def test_mount_answers_while_a_layer_is_indexed(mount_image, big_layer_layout) -> None:
    m = mount_image(big_layer_layout)
    big = json.loads((m.path / "refs/big/manifest.json").read_text())["layers"][0]["digest"]
    listing: list[str] = []
    walker = threading.Thread(
        target=lambda: listing.extend(os.listdir(m.path / "refs/big/layers/0/data"))
    )
    walker.start()
    deadline = time.monotonic() + 30
    while f"indexing layer {big}" not in m.log_text():
        assert time.monotonic() < deadline, "indexing never started"
        time.sleep(0.005)
    # The loop is free: other files are served while the worker thread indexes.
    text = (m.path / "refs/sample:1.0/rootfs/etc/os-release").read_text()
    manifest = (m.path / "refs/sample:1.0/manifest.json").read_bytes()
    answered = time.time()
    walker.join(timeout=60)
    assert listing == ["big.txt"] and text.startswith("NAME=") and manifest
    (done,) = [line for line in m.log_text().splitlines() if f"indexed layer {big}:" in line]
    assert answered < _log_time(done), "the other reads waited for the indexing to finish"


def _tree_digest(root: Path) -> list[tuple[str, str]]:
    import hashlib

    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            data = b"" if p.is_symlink() else p.read_bytes()
            out.append((str(p.relative_to(root)), hashlib.sha256(data).hexdigest()))
    return out


@pytest.mark.parametrize("busy_poll", ["0", "50", "default"])
def test_request_loop_serves_concurrent_clients(mount_image, sample_layout, busy_poll) -> None:
    """The fast request loop (ocifs/fastloop.py) under many clients at once.

    Eight threads walk and read the same rootfs at once; every one must see the
    same files with the same bytes as a walk done alone, whatever the busy poll.
    """
    extra = ["--debug"] + ([] if busy_poll == "default" else ["--busy-poll", busy_poll])
    m = mount_image(sample_layout, *extra)
    root = m.path / "refs/sample:1.0/rootfs"
    alone = _tree_digest(root)
    results: list[object] = [None] * 8

    def client(i: int) -> None:
        try:
            seen = [_tree_digest(root) for _ in range(5)]
            results[i] = seen[0] if all(s == seen[0] for s in seen) else seen
        except Exception as exc:  # surfaced by the assert below
            results[i] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(alone) >= 5
    assert all(r == alone for r in results), [r for r in results if r != alone][:1]
    default = "50" if len(os.sched_getaffinity(0)) > 1 else "0"
    expected = default if busy_poll == "default" else busy_poll
    assert f"request loop: cheap read lock, busy poll {expected} µs" in m.log_text()


def test_busy_poll_option_is_checked(tmp_path: Path, sample_layout: Path) -> None:
    from tests.conftest import ocifs

    (tmp_path / "mnt").mkdir()
    result = ocifs("mount", str(sample_layout), str(tmp_path / "mnt"), "--busy-poll", "lots")
    assert result.returncode != 0
    assert "invalid microseconds 'lots'" in result.stderr
    assert "Traceback" not in result.stderr
