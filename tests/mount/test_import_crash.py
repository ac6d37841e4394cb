"""Crash consistency of `.import/`: kill -9 of the daemon mid-import, and at each commit step."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _wait_gone
from tests.helpers import layoutcheck
from tests.mount.test_import import empty_layout

STAGING = ".ocifs-staging"


def lazy_unmount(path: Path) -> None:
    subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, check=False)


def wait_dead(pid: int) -> None:
    if not _wait_gone(pid, timeout=10):
        raise AssertionError(f"daemon {pid} still alive")


def test_kill_daemon_during_large_import_then_remount(
    mount_image: Any, tmp_path: Path, images: dict[str, Path]
) -> None:
    layout = empty_layout(tmp_path / "layout")
    m = mount_image(layout)
    subprocess.run(["cp", str(images["oci"]), str(m.path / ".import/")], check=True)
    before = layoutcheck.snapshot(str(layout))
    big = tmp_path / "big"
    with open(big, "wb") as f:
        for _ in range(48):
            f.write(os.urandom(4 << 20))
    hex_ = hashlib.sha256(big.read_bytes()).hexdigest()
    cp = subprocess.Popen(["cp", str(big), str(m.path / f".import/sha256:{hex_}")],
                          stderr=subprocess.PIPE)
    staging = layout / STAGING
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sizes = [p.stat().st_size for p in staging.iterdir()] if staging.exists() else []
        if any(s > 8 << 20 for s in sizes):
            break
        time.sleep(0.01)
    else:
        raise AssertionError("the import never started staging")
    os.kill(m.pid, signal.SIGKILL)
    assert cp.wait(30) != 0  # the writer sees the mount die
    wait_dead(m.pid)
    lazy_unmount(m.path)
    assert os.listdir(staging)  # the half-written blob is there, but not under blobs/
    assert not (layout / "blobs/sha256" / hex_).exists()
    m2 = mount_image(layout)  # remount: stale staging is removed, and its directory
    assert not staging.exists()
    assert layoutcheck.snapshot(str(layout)) == before  # nothing else changed
    layoutcheck.check(str(layout))
    subprocess.run(["umoci", "stat", "--image", f"{layout}:v1"], check=True, capture_output=True)
    subprocess.run(["cp", str(big), str(m2.path / f".import/sha256:{hex_}")], check=True)
    layoutcheck.check(str(layout))


def _import(kind: str, mnt: Path, images: dict[str, Path]) -> subprocess.CompletedProcess[bytes]:
    imp = mnt / ".import"
    if kind == "archive":
        cmd = ["cp", str(images["docker"]), str(imp / "image.tar")]
    elif kind == "layout":
        cmd = ["cp", "-r", f"{images['layout']}/.", str(imp)]
    else:  # refs: tag an image whose blobs are present
        src = images["layout"]
        digest = json.loads((src / "index.json").read_text())["manifests"][0]["digest"]
        if not (imp / "refs").exists():
            (imp / "refs").mkdir()
        cmd = ["cp", str(src / "blobs/sha256" / digest.split(":")[1]), str(imp / "refs/tagged")]
    return subprocess.run(cmd, capture_output=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("kind", "step"),
    [
        ("archive", "blob-fsync"), ("archive", "blob-rename"), ("archive", "blob-dirsync"),
        ("archive", "index-write"), ("archive", "index-rename"), ("archive", "index-dirsync"),
        ("layout", "index-fsync"), ("refs", "index-rename"),
    ],
)
def test_crash_at_each_commit_step(
    mount_image: Any, tmp_path: Path, images: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch, kind: str, step: str,
) -> None:
    layout = empty_layout(tmp_path / "layout")
    if kind == "refs":  # the blobs are there already; only the tag is imported
        m0 = mount_image(layout)
        subprocess.run(["cp", "-r", f"{images['layout']}/blobs", str(m0.path / ".import/")],
                       check=True)
        subprocess.run(["fusermount3", "-u", str(m0.path)], check=True)
    old_index = (layout / "index.json").read_bytes()
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")
    monkeypatch.setenv("OCIFS_TEST_CRASH_AT", step)
    m = mount_image(layout)
    result = _import(kind, m.path, images)
    assert result.returncode != 0  # the daemon died at `step`
    wait_dead(m.pid)
    lazy_unmount(m.path)
    monkeypatch.delenv("OCIFS_TEST_CRASH_AT")
    m2 = mount_image(layout)
    layoutcheck.check(str(layout))  # valid: old or new index.json, every blob matches its name
    index = (layout / "index.json").read_bytes()
    assert index == old_index or step in ("index-dirsync",)
    assert _import(kind, m2.path, images).returncode == 0  # retrying works
    layoutcheck.check(str(layout))
    assert layoutcheck.refs(str(layout))
