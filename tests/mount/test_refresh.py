"""The parts of the tree that follow the layout recover when missing content arrives."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import time

import pytest

from tests.conftest import copy_layout


def test_importing_a_missing_blob_makes_it_readable(mount_image, sample_layout, tmp_path) -> None:
    layout = copy_layout(sample_layout, tmp_path / "layout")
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    manifest_blob = layout / "blobs/sha256" / digest[7:]
    manifest = json.loads(manifest_blob.read_bytes())
    layer_blob = layout / "blobs/sha256" / manifest["layers"][1]["digest"][7:]
    saved = tmp_path / "saved"
    saved.mkdir()
    shutil.move(manifest_blob, saved / digest)
    shutil.move(layer_blob, saved / manifest["layers"][1]["digest"])

    m = mount_image(layout)
    m.expect_log(r"blob sha256:[0-9a-f]{64}: missing")
    ref = m.path / "refs/sample:1.0"
    shown = sorted(p.name for p in ref.iterdir())
    assert shown == ["descriptor.json", "error.txt", "manifest.json"]
    assert "missing" in (ref / "error.txt").read_text()
    with pytest.raises(OSError) as err:
        (ref / "manifest.json").read_bytes()
    assert err.value.errno == errno.EIO

    for blob in saved.iterdir():
        subprocess.run(["cp", str(blob), str(m.path / ".import" / blob.name)], check=True)
    assert (ref / "manifest.json").read_bytes() == (saved / digest).read_bytes()
    assert {"config.json", "layers", "rootfs"} <= {p.name for p in ref.iterdir()}
    assert "error.txt" not in {p.name for p in ref.iterdir()}
    assert (ref / "layers/1.tar.gz").read_bytes() == (
        saved / manifest["layers"][1]["digest"]
    ).read_bytes()
    assert (ref / "rootfs/etc/os-release").read_text().startswith("NAME=")


def test_a_missing_blob_supplied_from_outside_is_noticed(
    mount_image, sample_layout, tmp_path
) -> None:
    """Another program (skopeo, a second mount) writes the missing blob into blobs/,
    index.json unchanged and blobs/ never listed: the 1 s watcher notices."""
    layout = copy_layout(sample_layout, tmp_path / "layout")
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    manifest_blob = layout / "blobs/sha256" / digest[7:]
    saved = tmp_path / "saved-manifest"
    shutil.move(manifest_blob, saved)

    m = mount_image(layout)
    m.expect_log(r"blob sha256:[0-9a-f]{64}: missing")
    ref = m.path / "refs/sample:1.0"
    assert "error.txt" in {p.name for p in ref.iterdir()}

    temp = layout / "blobs/sha256/.tmp-outside"
    shutil.copyfile(saved, temp)
    temp.rename(manifest_blob)  # as skopeo and ocifs itself commit: write, then rename
    deadline = time.monotonic() + 30
    while "error.txt" in {p.name for p in ref.iterdir()}:
        assert time.monotonic() < deadline, "the blob added from outside was never noticed"
        time.sleep(0.2)
    assert (ref / "manifest.json").read_bytes() == saved.read_bytes()
    assert (ref / "rootfs/etc/os-release").read_text().startswith("NAME=")
