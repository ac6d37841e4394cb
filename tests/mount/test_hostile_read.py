"""Hostile and odd layouts, read side: the mount never blocks, serves only right bytes or EIO.

Every layout is hand-written here (tests/helpers/layoutbuilder.py: JSON with
correct digests, layers from tarbuilder). Reads go through a child process with
a timeout, so a daemon that blocks fails the test instead of hanging it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ocifs
from tests.helpers.layoutbuilder import Layout, simple_layers

_PROBE = r"""
import errno, hashlib, os, sys
op, path = sys.argv[1], sys.argv[2]
try:
    if op == "read":
        with open(path, "rb") as f:
            data = f.read()
        print("ok", hashlib.sha256(data).hexdigest())
    elif op == "list":
        print("ok", *sorted(os.listdir(path)))
    else:
        os.stat(path)
        print("ok")
except OSError as e:
    print("err", errno.errorcode[e.errno])
"""


def probe(op: str, path: Path) -> list[str]:
    """`op` (read, list, stat) on `path` in a child process: ['ok', ...] or ['err', 'EIO']."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, op, str(path)], capture_output=True, text=True, timeout=30
    )
    return result.stdout.split()


def read_ok(path: Path) -> str:
    out = probe("read", path)
    assert out[0] == "ok", f"{path}: {out}"
    return out[1]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def log_lines(m, needle: str) -> list[str]:
    return [line for line in m.log_text().splitlines() if needle in line]


# ----- never block --------------------------------------------------------------------


def test_fifo_blobs_fail_with_eio_and_the_mount_keeps_answering(mount_image, tmp_path) -> None:
    layout = Layout(tmp_path / "layout")
    good = layout.tag(layout.image(simple_layers(layout)), "good")
    fifo_layer = layout.image(simple_layers(layout, "layer will be a fifo\n"))
    fifo_config = layout.image(simple_layers(layout, "config will be a fifo\n"))
    fifo_manifest = layout.image(simple_layers(layout, "manifest will be a fifo\n"))
    for desc, name in ((fifo_layer, "fifo-layer"), (fifo_config, "fifo-config"),
                       (fifo_manifest, "fifo-manifest")):
        layout.tag(desc, name)
    manifest_of = {
        name: json.loads(layout.blob_path(desc).read_bytes())
        for desc, name in ((fifo_layer, "fifo-layer"), (fifo_config, "fifo-config"))
    }
    bad = {
        "layer": manifest_of["fifo-layer"]["layers"][0]["digest"],
        "config": manifest_of["fifo-config"]["config"]["digest"],
        "manifest": fifo_manifest["digest"],
    }
    for digest in bad.values():
        layout.blob_path(digest).unlink()
        os.mkfifo(layout.blob_path(digest))

    m = mount_image(layout.path)
    for digest in bad.values():
        m.expect_log(digest.split(":")[1])
    root = m.path
    # the bad objects: EIO (or a directory that says why), each in bounded time
    for _ in range(3):
        assert probe("read", root / "refs/fifo-config/config.json") == ["err", "EIO"]
        assert probe("list", root / "refs/fifo-layer/layers/0") == ["err", "EIO"]
        assert probe("list", root / "refs/fifo-layer/rootfs") == ["err", "EIO"]
        assert probe("read", root / "refs/fifo-manifest/manifest.json") == ["err", "EIO"]
        assert probe("list", root / "refs/fifo-config/rootfs") == ["err", "EIO"]
    listing = probe("list", root / "refs/fifo-manifest")
    assert listing == ["ok", "descriptor.json", "error.txt", "manifest.json"]
    assert "FIFO" in (root / "refs/fifo-manifest/error.txt").read_text()
    # everything else keeps answering
    assert (root / "oci-layout").read_text() == '{"imageLayoutVersion":"1.0.0"}'
    assert (root / "refs/good/rootfs/etc/hello").read_text() == "hello\n"
    assert (root / "refs/fifo-layer/layers/1/second").read_text() == "second layer\n"
    assert read_ok(root / "refs/good/manifest.json") == good["digest"].split(":")[1]
    blobs = probe("list", root / "blobs/sha256")
    assert blobs[0] == "ok" and not {d.split(":")[1] for d in bad.values()} & set(blobs)
    # one log line per bad object, naming it, however often it was asked for
    for digest in bad.values():
        lines = [line for line in log_lines(m, digest.split(":")[1]) if "FIFO" in line]
        assert len(lines) == 1, lines
    assert "Traceback" not in m.log_text()


def test_fifo_source_and_fifo_index_json_are_refused_at_mount(tmp_path) -> None:
    fifo = tmp_path / "image.tar"
    os.mkfifo(fifo)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = ocifs("mount", str(fifo), str(mnt), timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"ocifs: {fifo}: is a FIFO, not an image layout directory or archive"
    ]

    layout = Layout(tmp_path / "layout")
    (layout.path / "index.json").unlink()
    os.mkfifo(layout.path / "index.json")
    result = ocifs("mount", str(layout.path), str(mnt), timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"ocifs: {layout.path}/index.json: is a FIFO, not a regular file"
    ]
    assert not os.path.ismount(mnt)
