"""kill -9 of the daemon while it indexes a big layer (issue 14).

The index pass decodes a big layer on the other core: a thread of the daemon,
or (`OCIFS_DECODER=child`) an `igzip` child process (docs/layers.md). When the
daemon dies mid-pass, no decoder may survive it, nothing may be left in the
cache as an index of that layer, and a new mount indexes it from scratch and
serves it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ocifs.cache import DiskCache
from ocifs.layers import serial
from ocifs.layers.store import DATA_KIND, INDEX_KIND
from ocifs.model.digest import of_bytes
from tests.conftest import _wait_gone, ocifs
from tests.helpers.imagebuilder import LAYER_TYPES, Layout

SIZE = 1 << 30  # bytes of the one file: about a second of hashing and decoding
PERIOD = os.urandom(4096)  # the file repeats it: compresses ~100:1, yet nothing is a hole


def big_gzip_layer() -> tuple[bytes, str]:
    """(gzip blob, diff_id) of a tar holding one SIZE-byte file, streamed through
    `igzip -1` (the tar never exists whole, in memory or on disk)."""
    info = tarfile.TarInfo("data")
    info.size = SIZE
    gz = subprocess.Popen(["igzip", "-1", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert gz.stdin is not None and gz.stdout is not None
    diff = hashlib.sha256()

    def pump() -> None:
        assert gz.stdin is not None
        chunk = PERIOD * 256
        pieces = [info.tobuf(tarfile.GNU_FORMAT), *[chunk] * (SIZE // len(chunk)), bytes(1024)]
        for piece in pieces:
            diff.update(piece)
            gz.stdin.write(piece)
        gz.stdin.close()

    t = threading.Thread(target=pump)
    t.start()
    blob = gz.stdout.read()
    t.join()
    assert gz.wait() == 0
    return blob, f"sha256:{diff.hexdigest()}"


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    except FileNotFoundError:
        pass
    return found


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def copy_in_progress(cache_dir: Path) -> bool:
    """The pass has written 64 MiB of the layer's unpacked copy (a temp file)."""
    d = cache_dir / DATA_KIND
    try:
        return any(p.name.startswith(".tmp-") and p.stat().st_size >= 64 << 20
                   for p in d.iterdir())
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("decoder", ["thread", "child"])
def test_kill_9_while_indexing_leaves_no_decoder_and_no_cache_entry(
    mount_image: Any, tmp_path: Path, cache_dir: Path, decoder: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if decoder == "child":
        monkeypatch.setenv("OCIFS_DECODER", "child")  # inherited by the daemon
    blob, diff_id = big_gzip_layer()
    layout = Layout(tmp_path / "layout")
    layer = layout.blob(blob, LAYER_TYPES["gz"])
    config = layout.json_blob(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                                                            "diff_ids": [diff_id]}},
        "application/vnd.oci.image.config.v1+json",
    )
    manifest = layout.json_blob(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": config, "layers": [layer]},
        "application/vnd.oci.image.manifest.v1+json",
    )
    layout.tag(manifest, "big")
    key = str(of_bytes(blob))

    m = mount_image(layout.root)
    listing = subprocess.Popen(["ls", str(m.path / "refs/big/layers/0")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    decoders: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and listing.poll() is None:
        decoders = [c for c in children_of(m.pid) if comm(c) == "igzip"]
        if copy_in_progress(cache_dir) and (decoders or decoder == "thread"):
            break
        time.sleep(0.005)
    else:
        raise AssertionError("the index pass was never seen running (or it ended first)")
    os.kill(m.pid, signal.SIGKILL)
    assert _wait_gone(m.pid)
    listing.wait(60)
    for pid in decoders:
        assert _wait_gone(pid), f"decoder {pid} ({comm(pid)}) outlived the daemon"
    assert DiskCache(cache_dir).get(INDEX_KIND, key, version=serial.FORMAT) is None
    assert ocifs("umount", str(m.path)).returncode == 0

    m2 = mount_image(layout.root)
    layer0 = m2.path / "refs/big/layers/0"
    assert os.listdir(layer0) == ["data"]
    assert os.stat(layer0 / "data").st_size == SIZE
    with open(layer0 / "data", "rb") as f:
        f.seek(SIZE - 8192)
        assert f.read() == PERIOD * 2
    assert os.listdir(m2.path / "refs/big/rootfs") == ["data"]  # diff_id checked
    assert DiskCache(cache_dir).get(INDEX_KIND, key, version=serial.FORMAT) is not None
    assert not [c for c in children_of(m2.pid) if comm(c) == "igzip"]
