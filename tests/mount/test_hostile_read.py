"""Hostile and odd layouts, read side: the mount never blocks, serves only right bytes or EIO.

Every layout is hand-written here (tests/helpers/layoutbuilder.py: JSON with
correct digests, layers from tarbuilder). Reads go through a child process with
a timeout, so a daemon that blocks fails the test instead of hanging it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import ocifs
from tests.helpers import tarbuilder
from tests.helpers.layoutbuilder import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Layout,
    simple_layers,
)

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
    """`op` (read, list, stat) on `path` in a child process: ['ok', ...] or ['err', 'EIO'].

    A child that gets no answer within 30 s fails the test (a blocked daemon)
    instead of hanging it.
    """
    child = subprocess.Popen(
        [sys.executable, "-c", _PROBE, op, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        out, _ = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()  # not waited for: a reader stuck in the kernel may never exit
        pytest.fail(f"{op} {path}: no answer within 30 s (the mount is blocked)")
    return out.split()


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
    assert read_ok(root / "refs/fifo-manifest/error.txt")
    assert "FIFO" in (root / "refs/fifo-manifest/error.txt").read_text()
    # everything else keeps answering (every access in a child with a timeout)
    assert read_ok(root / "oci-layout") == sha(b'{"imageLayoutVersion":"1.0.0"}')
    assert read_ok(root / "refs/good/rootfs/etc/hello") == sha(b"hello\n")
    assert read_ok(root / "refs/fifo-layer/layers/1/second") == sha(b"second layer\n")
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


# ----- never serve wrong bytes --------------------------------------------------------


def test_layer_read_in_place_that_changes_on_disk_is_eio_until_it_verifies(
    mount_image, tmp_path
) -> None:
    layout = Layout(tmp_path / "layout")
    text = b"original content\n"
    members = [tarbuilder.File(n, data=text) for n in ("f", "unchanged", "touched")]
    layers = [layout.layer([*members, tarbuilder.File("g", data=b"g\n")])]
    layout.tag(layout.image(layers), "img")
    blob = layout.blob_path(layers[0][0])
    original = blob.read_bytes()
    m = mount_image(layout.path)
    m.expect_log(layers[0][0]["digest"].split(":")[1])
    assert (m.path / "refs/img/layers/0/g").read_bytes() == b"g\n"  # indexed and verified
    assert read_ok(m.path / "refs/img/rootfs/unchanged") == sha(text)
    # a change of the file's identity alone (a new link, utime): verified again, served
    os.link(blob, tmp_path / "a-hard-link")
    os.utime(blob)
    assert read_ok(m.path / "refs/img/rootfs/touched") == sha(text)
    assert not log_lines(m, "does not match its digest")
    # rewrite the blob in place: same size, other bytes, same mtime
    st = blob.stat()
    blob.write_bytes(original.replace(b"original", b"tampered"))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    for path in ("refs/img/rootfs/f", "refs/img/layers/0/f"):
        for _ in range(2):
            assert probe("read", m.path / path) == ["err", "EIO"]
    lines = log_lines(m, "does not match its digest")
    assert len(lines) == 1 and layers[0][0]["digest"] in lines[0]
    # put the right bytes back: served again (after one more verification)
    blob.write_bytes(original)
    assert read_ok(m.path / "refs/img/rootfs/f") == sha(text)


def test_cache_entry_of_another_layer_is_rebuilt_not_served(
    mount_image, tmp_path, cache_dir
) -> None:
    layout = Layout(tmp_path / "layout")
    layer_a = layout.layer([tarbuilder.File("only-in-a", data=b"a\n")], "gz")
    layer_b = layout.layer([tarbuilder.File("only-in-b", data=b"b\n")], "gz")
    layout.tag(layout.image([layer_a]), "a")
    layout.tag(layout.image([layer_b]), "b")
    m1 = mount_image(layout.path)
    assert sorted(os.listdir(m1.path / "refs/a/rootfs")) == ["only-in-a"]
    assert sorted(os.listdir(m1.path / "refs/b/rootfs")) == ["only-in-b"]
    # every entry written for layer a (index, ...) copied over the entry of layer b
    entries = [p for p in cache_dir.rglob("*") if p.is_file()]
    entry_of = {
        p.name: p for p in entries if p.parent.parent.name in ("layer-index", "gzip-seek")
    }
    by_kind: dict[str, list[Path]] = {}
    for p in entry_of.values():
        by_kind.setdefault(p.parent.parent.name, []).append(p)
    index_entries = by_kind["layer-index"]
    assert len(index_entries) == 2
    first, second = index_entries
    second.write_bytes(first.read_bytes())
    m2 = mount_image(layout.path)
    m2.expect_log(r"belongs to")
    assert sorted(os.listdir(m2.path / "refs/a/rootfs")) == ["only-in-a"]
    assert sorted(os.listdir(m2.path / "refs/b/rootfs")) == ["only-in-b"]
    assert (m2.path / "refs/b/rootfs/only-in-b").read_bytes() == b"b\n"
    assert len(log_lines(m2, "belongs to")) == 1


@pytest.mark.parametrize("blobs_first", [True, False])
def test_wrong_size_descriptor_fails_only_its_own_view(mount_image, tmp_path, blobs_first) -> None:
    layout = Layout(tmp_path / "layout")
    layers = simple_layers(layout)
    good = layout.image(layers)
    manifest = json.loads(layout.blob_path(good).read_bytes())
    config = manifest["config"]
    config_bytes = layout.blob_path(config).read_bytes()
    for name, delta in (("bigger", 5), ("smaller", -5)):
        bent = {**manifest, "config": {**config, "size": config["size"] + delta}}
        layout.tag(layout.json_blob(bent, manifest["mediaType"]), name)
    layout.tag(good, "good")
    m = mount_image(layout.path)
    m.expect_log(r"size on disk is \d+, descriptor says \d+")
    own = m.path / "blobs/sha256" / config["digest"].split(":")[1]
    views = [m.path / "refs/bigger/config.json", m.path / "refs/smaller/config.json"]
    if blobs_first:
        assert read_ok(own) == sha(config_bytes)
    for view in views:
        assert probe("read", view) == ["err", "EIO"]
    assert read_ok(own) == sha(config_bytes)
    assert read_ok(m.path / "refs/good/config.json") == sha(config_bytes)
    for view in views:
        assert probe("read", view) == ["err", "EIO"]
    assert (m.path / "refs/bigger/config.json").stat().st_size == config["size"] + 5


def test_rootfs_fails_when_layers_do_not_match_the_config_diff_ids(mount_image, tmp_path) -> None:
    layout = Layout(tmp_path / "layout")
    layers = simple_layers(layout)
    diff_ids = [d for _, d in layers]
    cases = {
        "swapped": list(reversed(diff_ids)),
        "wrong": [diff_ids[0], "sha256:" + "0" * 64],
        "missing": diff_ids[:1],
    }
    for name, ids in cases.items():
        layout.tag(layout.image(layers, diff_ids=ids), name)
    layout.tag(layout.image(layers), "right")
    m = mount_image(layout.path)
    m.expect_log(r"rootfs: image config")
    assert (m.path / "refs/right/rootfs/etc/hello").read_text() == "hello\n"
    for name in cases:
        for _ in range(2):
            assert probe("list", m.path / f"refs/{name}/rootfs") == ["err", "EIO"]
        # each layer is checked against its own digest: layers/<n>/ stays browsable
        assert (m.path / f"refs/{name}/layers/0/etc/hello").read_text() == "hello\n"
    for name in cases:
        manifest = json.loads((m.path / f"refs/{name}/manifest.json").read_bytes())
        lines = log_lines(m, manifest["config"]["digest"])
        assert len(lines) == 1 and "diff_ids" in lines[0], lines
    wrong = log_lines(m, "0" * 64)
    assert "decompresses to " + layers[1][1] in wrong[0]


# ----- platforms/ depth -------------------------------------------------------------------


def test_nested_indexes_stop_at_a_documented_depth(mount_image, tmp_path) -> None:
    from ocifs.tree.tree import MAX_PLATFORM_DEPTH

    layout = Layout(tmp_path / "layout")
    desc = layout.image(simple_layers(layout))
    for _ in range(MAX_PLATFORM_DEPTH + 2):
        child = {**desc, "platform": {"os": "linux", "architecture": "amd64"}}
        desc = layout.index([child])
    layout.tag(desc, "deep")
    m = mount_image(layout.path)
    m.expect_log(r"levels of indexes")
    path = m.path / "refs/deep"
    for _ in range(MAX_PLATFORM_DEPTH):
        path = path / "platforms/linux-amd64"
        assert probe("list", path)[0] == "ok"
    for _ in range(2):
        assert probe("list", path / "platforms/linux-amd64") == ["err", "ELOOP"]
    assert len(log_lines(m, "levels of indexes")) == 1
    assert (m.path / "oci-layout").exists()


# ----- say what was tolerated ---------------------------------------------------------------


def test_unusable_and_odd_manifests_show_raw_bytes_and_a_reason(mount_image, tmp_path) -> None:
    layout = Layout(tmp_path / "layout")
    layers = simple_layers(layout)
    good = layout.image(layers)
    manifest = json.loads(layout.blob_path(good).read_bytes())
    invalid = layout.blob(b'{"schemaVersion": 2, "config": ', OCI_MANIFEST)
    ambiguous = layout.json_blob({**manifest, "manifests": []}, OCI_MANIFEST)
    schema1 = layout.json_blob(
        {"schemaVersion": 1, "name": "x", "tag": "1", "fsLayers": [], "history": []},
        "application/vnd.docker.distribution.manifest.v1+json",
    )
    # the descriptor says Docker v2, the document says OCI: tolerated, with a warning
    mislabeled = {**good, "mediaType": DOCKER_MANIFEST}
    for desc, name in ((invalid, "invalid"), (ambiguous, "ambiguous"), (schema1, "schema1"),
                       (mislabeled, "mislabeled")):
        layout.tag(desc, name)
    m = mount_image(layout.path)
    reasons = {
        "invalid": "invalid JSON",
        "ambiguous": "an index, not a manifest",
        "schema1": "unsupported schema 1",
    }
    for name, reason in reasons.items():
        ref = m.path / f"refs/{name}"
        assert sorted(os.listdir(ref)) == ["descriptor.json", "error.txt", "manifest.json"]
        digest = json.loads((ref / "descriptor.json").read_bytes())["digest"]
        assert (ref / "manifest.json").read_bytes() == layout.blob_path(digest).read_bytes()
        assert reason in (ref / "error.txt").read_text()
        assert probe("list", ref / "rootfs") == ["err", "ENOENT"]
        os.listdir(ref)
        lines = [line for line in log_lines(m, digest) if reason in line]
        assert len(lines) == 1, lines
        assert " WARNING " in lines[0]
    assert (m.path / "refs/mislabeled/rootfs/etc/hello").read_text() == "hello\n"
    os.listdir(m.path / "refs/mislabeled")
    lines = log_lines(m, "says mediaType")
    assert len(lines) == 1 and good["digest"] in lines[0] and OCI_INDEX not in lines[0]
    assert "Traceback" not in m.log_text()


# ----- one indexer per layer across mounts ----------------------------------------------------


def test_two_mounts_needing_one_uncached_layer_index_it_once(mount_image, tmp_path) -> None:
    layout = Layout(tmp_path / "layout")
    rng = random.Random(15)
    members = [
        tarbuilder.File(f"f{i:03}", data=rng.randbytes(256 * 1024)) for i in range(96)
    ]  # 24 MiB of incompressible data: indexing takes a while
    layer = layout.layer(members, "gz")
    layout.tag(layout.image([layer]), "big")
    first, second = mount_image(layout.path), mount_image(layout.path)
    listings: dict[int, list[str]] = {}

    def ls(n: int, m) -> None:
        listings[n] = probe("list", m.path / "refs/big/rootfs")

    threads = [threading.Thread(target=ls, args=(n, m)) for n, m in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = ["ok", *(f"f{i:03}" for i in range(96))]
    assert listings == {0: expected, 1: expected}
    digest = layer[0]["digest"]
    indexing = log_lines(first, f"indexing layer {digest}") + log_lines(
        second, f"indexing layer {digest}"
    )
    assert len(indexing) == 1, indexing


def test_plain_archive_changed_after_mounting_is_eio_not_new_bytes(mount_image, tmp_path) -> None:
    layout = Layout(tmp_path / "layout")
    first, second = b"first file of the layer\n", b"second file, to be overwritten\n"
    layers = [layout.layer([tarbuilder.File("a", data=first), tarbuilder.File("b", data=second)])]
    layout.tag(layout.image(layers), "img")
    archive = tmp_path / "image.tar"
    subprocess.run(["tar", "-C", str(layout.path), "-cf", str(archive), "."], check=True)
    m = mount_image(archive)
    m.expect_log(r"changed on disk")
    m.expect_log(layers[0][0]["digest"].split(":")[1])
    assert read_ok(m.path / "refs/img/rootfs/a") == sha(first)
    data = archive.read_bytes()
    assert data.count(second) == 1
    with open(archive, "r+b") as f:  # in place: same size, same inode
        f.seek(data.index(second))
        f.write(second.upper())
    assert probe("read", m.path / "refs/img/rootfs/b") == ["err", "EIO"]
    blob = m.path / "blobs/sha256" / layers[0][0]["digest"].split(":")[1]
    assert probe("read", blob) == ["err", "EIO"]
    assert read_ok(m.path / "oci-layout")  # the rest answers


def test_gzip_archive_changed_after_mounting_is_eio_not_new_bytes(mount_image, tmp_path) -> None:
    layout = Layout(tmp_path / "layout")
    rng = random.Random(7)
    files = [tarbuilder.File(f"f{i}", data=rng.randbytes(300_000)) for i in range(8)]
    layers = [layout.layer(files)]
    layout.tag(layout.image(layers), "img")
    archive = tmp_path / "image.tar.gz"
    subprocess.run(["tar", "-C", str(layout.path), "-czf", str(archive), "."], check=True)
    m = mount_image(archive)
    m.expect_log(r"changed on disk after mounting")
    blob = m.path / "blobs/sha256" / layers[0][0]["digest"].split(":")[1]
    assert read_ok(m.path / "refs/img/manifest.json")
    with open(archive, "r+b") as f:  # in place, near the end: same size, same inode
        f.seek(archive.stat().st_size - 5000)
        old = f.read(16)
        f.seek(-16, os.SEEK_CUR)
        f.write(bytes(b ^ 0xFF for b in old))
    assert probe("read", blob) == ["err", "EIO"]
    assert log_lines(m, f"{archive}: the archive changed on disk after mounting")
    assert read_ok(m.path / "oci-layout")


def test_unpacked_copy_of_another_layer_is_rebuilt_not_served(
    mount_image, tmp_path, cache_dir
) -> None:
    layout = Layout(tmp_path / "layout")
    # same names and sizes, other bytes: the two unpacked copies have the same size
    layer_a = layout.layer([tarbuilder.File("x", data=b"a" * 300_000)], "gz")
    layer_b = layout.layer([tarbuilder.File("x", data=b"b" * 300_000)], "gz")
    layout.tag(layout.image([layer_a]), "a")
    layout.tag(layout.image([layer_b]), "b")
    m1 = mount_image(layout.path)
    assert sorted(os.listdir(m1.path / "refs/a/rootfs")) == ["x"]
    assert sorted(os.listdir(m1.path / "refs/b/rootfs")) == ["x"]
    copies = sorted(p for p in (cache_dir / "layer-data").rglob("*") if p.is_file())
    assert len(copies) == 2 and copies[0].stat().st_size == copies[1].stat().st_size
    copies[1].write_bytes(copies[0].read_bytes())
    m2 = mount_image(layout.path)
    assert read_ok(m2.path / "refs/a/rootfs/x") == sha(b"a" * 300_000)
    assert read_ok(m2.path / "refs/b/rootfs/x") == sha(b"b" * 300_000)
    assert len(log_lines(m2, "unpacked copy of layer")) == 1
