"""Issue 13: `getfattr -n user.ocifs.layer rootfs/<path>` names the layer that supplied it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tools
from tests.helpers import tarbuilder

XATTR = "user.ocifs.layer"


def run(*cmd: str | Path) -> str:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))}: {result.stderr}"
    return result.stdout


def getfattr(path: Path) -> str:
    return run("getfattr", "--only-values", "-n", XATTR, path)


@pytest.fixture(scope="module")
def three_layers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """umoci image `t`: layer 0 base files, 1 replaces one and adds a dir, 2 adds one."""
    require_tools("umoci", "getfattr")
    base = tmp_path_factory.mktemp("prov")
    layout = base / "layout"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", f"{layout}:t")
    contents = [
        {"etc/base.txt": "base\n", "etc/shared.txt": "v0\n"},
        {"etc/shared.txt": "v1\n", "app/bin/run": "#!/bin/sh\n"},
        {"srv/new.txt": "new\n"},
    ]
    for n, files in enumerate(contents):
        src = base / f"src{n}"
        for name, text in files.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_text(text)
        run("umoci", "insert", "--image", f"{layout}:t", src, "/")
    return layout


def test_layer_xattr_names_the_supplying_layer(mount_image: Any, three_layers: Path) -> None:
    m = mount_image(three_layers)
    image = m.path / "refs/t"
    layers = [d["digest"] for d in json.loads((image / "manifest.json").read_text())["layers"]]
    rootfs = image / "rootfs"
    expected = {"etc/base.txt": 0, "etc/shared.txt": 1, "app/bin/run": 1, "srv/new.txt": 2,
                "app": 1, "srv": 2}
    for path, n in expected.items():
        assert getfattr(rootfs / path) == f"{n} {layers[n]}", path
    assert (rootfs / "etc/shared.txt").read_text() == "v1\n"
    # the same file in its layer's tree: same inode, same answer
    assert getfattr(image / "layers/1/etc/shared.txt") == f"1 {layers[1]}"
    assert os.stat(image / "layers/1/etc/shared.txt").st_ino == os.stat(
        rootfs / "etc/shared.txt").st_ino
    assert getfattr(image / "layers/0/etc/shared.txt") == f"0 {layers[0]}"
    # answered, not listed: copying tools take only what the image stores
    assert XATTR not in os.listxattr(rootfs / "etc/shared.txt")
    assert XATTR not in run("getfattr", "-d", "-m", "-", rootfs / "etc/shared.txt")
    # nothing outside layer trees pretends to come from a layer
    for other in (image / "manifest.json", m.path / "index.json", rootfs):
        result = subprocess.run(["getfattr", "-n", XATTR, str(other)], capture_output=True,
                                text=True, check=False)
        assert result.returncode != 0 and "No such attribute" in result.stderr, other


def _write_blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = tarbuilder.digest_of(data)
    (layout / "blobs/sha256" / digest.hex).write_bytes(data)
    return {"digest": str(digest), "size": len(data)}


def test_same_layer_at_two_positions_answers_each_position(
    mount_image: Any, tmp_path: Path
) -> None:
    """Layer A is layer 0 of image `one` and layer 1 of image `two`: one answer per inode."""
    layout = tmp_path / "layout"
    (layout / "blobs/sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    a = tarbuilder.build([tarbuilder.File("shared.txt", data=b"from A\n")])
    b = tarbuilder.build([tarbuilder.File("base.txt", data=b"from B\n")])
    layer = {name: {"mediaType": tarbuilder.MEDIA["tar"], **_write_blob(layout, data)}
             for name, data in (("a", a), ("b", b))}
    entries = []
    for ref, stack in (("one", ["a"]), ("two", ["b", "a"])):
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
            "type": "layers", "diff_ids": [layer[x]["digest"] for x in stack]}}).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       **_write_blob(layout, config)},
            "layers": [layer[x] for x in stack]}).encode()
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                        **_write_blob(layout, manifest),
                        "annotations": {"org.opencontainers.image.ref.name": ref}})
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    m = mount_image(layout)
    one, two = m.path / "refs/one", m.path / "refs/two"
    assert getfattr(one / "rootfs/shared.txt") == f"0 {layer['a']['digest']}"
    assert getfattr(two / "rootfs/shared.txt") == f"1 {layer['a']['digest']}"
    assert getfattr(two / "rootfs/base.txt") == f"0 {layer['b']['digest']}"
    assert os.stat(two / "rootfs/shared.txt").st_ino == os.stat(two / "layers/1/shared.txt").st_ino
    assert os.stat(one / "rootfs/shared.txt").st_ino != os.stat(two / "rootfs/shared.txt").st_ino
    assert (two / "rootfs/shared.txt").read_bytes() == b"from A\n"
