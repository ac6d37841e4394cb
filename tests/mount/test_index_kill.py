"""kill -9 of the daemon while it indexes a big layer (issue 14).

The index pass decodes a big layer in a child process (`igzip`, docs/layers.md).
When the daemon dies mid-pass, the child must die with it, nothing may be
left in the cache as an index of that layer, and a new mount indexes it from
scratch and serves it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from ocifs.cache import DiskCache
from ocifs.layers import serial
from ocifs.layers.store import INDEX_KIND
from ocifs.model.digest import of_bytes
from tests.conftest import _wait_gone, ocifs
from tests.helpers.imagebuilder import LAYER_TYPES, Layout

ZEROS = 1 << 30  # bytes of the one file: about a second of hashing and decoding


def big_gzip_layer(tmp_path: Path) -> tuple[bytes, str]:
    """(gzip blob, diff_id) of a tar holding one file of ZEROS zero bytes, made by the
    tools in a stream (the tar never exists whole, in memory or on disk)."""
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "zeros", "wb") as f:
        f.truncate(ZEROS)
    tar = subprocess.Popen(["tar", "-C", str(src), "-cf", "-", "zeros"], stdout=subprocess.PIPE)
    gz = subprocess.Popen(["igzip", "-1", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert tar.stdout is not None and gz.stdin is not None and gz.stdout is not None
    diff = hashlib.sha256()

    def pump() -> None:
        assert tar.stdout is not None and gz.stdin is not None
        while chunk := tar.stdout.read(1 << 20):
            diff.update(chunk)
            gz.stdin.write(chunk)
        gz.stdin.close()

    t = threading.Thread(target=pump)
    t.start()
    blob = gz.stdout.read()
    t.join()
    assert tar.wait() == 0 and gz.wait() == 0
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


def test_kill_9_while_indexing_leaves_no_decoder_and_no_cache_entry(
    mount_image: Any, tmp_path: Path, cache_dir: Path
) -> None:
    blob, diff_id = big_gzip_layer(tmp_path)
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
    while not decoders and time.monotonic() < deadline and listing.poll() is None:
        decoders = [c for c in children_of(m.pid) if comm(c) == "igzip"]
        time.sleep(0.005)
    assert decoders, "the index pass never started its decoder (or it ended first)"
    os.kill(m.pid, signal.SIGKILL)
    assert _wait_gone(m.pid)
    listing.wait(60)
    for pid in decoders:
        assert _wait_gone(pid), f"decoder {pid} ({comm(pid)}) outlived the daemon"
    assert DiskCache(cache_dir).get(INDEX_KIND, key, version=serial.FORMAT) is None
    assert ocifs("umount", str(m.path)).returncode == 0

    m2 = mount_image(layout.root)
    layer0 = m2.path / "refs/big/layers/0"
    assert os.listdir(layer0) == ["zeros"]
    assert os.stat(layer0 / "zeros").st_size == ZEROS
    with open(layer0 / "zeros", "rb") as f:
        f.seek(ZEROS - 4096)
        assert f.read() == bytes(4096)
    assert os.listdir(m2.path / "refs/big/rootfs") == ["zeros"]  # diff_id checked
    assert DiskCache(cache_dir).get(INDEX_KIND, key, version=serial.FORMAT) is not None
    assert not [c for c in children_of(m2.pid) if comm(c) == "igzip"]
