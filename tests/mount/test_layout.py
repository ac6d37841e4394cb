"""Issue 2: an OCI layout directory mounted read-only, checked against skopeo and umoci."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, copy_layout, ocifs

GCR = FIXTURES / "go-containerregistry/pkg/v1/layout/testdata"
CIMG = FIXTURES / "containers-image/oci/layout/fixtures"
REGCLIENT = FIXTURES / "regclient/testdata"

INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
LAYER_EXT = {
    "application/vnd.oci.image.layer.v1.tar": ".tar",
    "application/vnd.oci.image.layer.v1.tar+gzip": ".tar.gz",
    "application/vnd.oci.image.layer.v1.tar+zstd": ".tar.zst",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": ".tar.gz",
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def blob_path(layout: Path, digest: str) -> Path:
    alg, hex_ = digest.split(":")
    return layout / "blobs" / alg / hex_


def ref_names(layout: Path) -> dict[str, dict]:
    index = json.loads((layout / "index.json").read_text())
    refs = {}
    for desc in index["manifests"]:
        name = desc.get("annotations", {}).get("org.opencontainers.image.ref.name")
        if name:
            refs[name] = desc
    return refs


def check_image_dir(mnt_dir: Path, layout: Path, desc: dict) -> None:
    """Every file of a manifest/index directory equals the blob it stands for."""
    is_index = desc["mediaType"] in INDEX_TYPES
    doc = mnt_dir / ("index.json" if is_index else "manifest.json")
    assert doc.stat().st_size == desc["size"]
    assert json.loads((mnt_dir / "descriptor.json").read_text()) == desc
    if not blob_path(layout, desc["digest"]).exists():
        with pytest.raises(OSError) as err:
            doc.read_bytes()
        assert err.value.errno == errno.EIO
        return
    assert sha256(doc) == desc["digest"]
    body = json.loads(doc.read_bytes())
    if is_index:
        children = sorted(os.listdir(mnt_dir / "platforms"))
        assert len(children) == len(body["manifests"])
        for name in children:
            child = json.loads((mnt_dir / "platforms" / name / "descriptor.json").read_text())
            assert child in body["manifests"]
            check_image_dir(mnt_dir / "platforms" / name, layout, child)
        return
    config = body["config"]
    if blob_path(layout, config["digest"]).exists():
        assert sha256(mnt_dir / "config.json") == config["digest"]
    assert (mnt_dir / "config.json").stat().st_size == config["size"]
    for n, layer in enumerate(body.get("layers") or []):
        ext = LAYER_EXT.get(layer["mediaType"], ".blob")
        f = mnt_dir / "layers" / f"{n}{ext}"
        assert f.stat().st_size == layer["size"]
        if blob_path(layout, layer["digest"]).exists():
            assert sha256(f) == layer["digest"]


def test_sample_layout_matches_skopeo_and_umoci(mount_image, sample_layout: Path) -> None:
    m = mount_image(sample_layout)
    assert (m.path / "oci-layout").read_bytes() == (sample_layout / "oci-layout").read_bytes()
    assert (m.path / "index.json").read_bytes() == (sample_layout / "index.json").read_bytes()
    refs = ref_names(sample_layout)
    assert sorted(os.listdir(m.path / "refs")) == sorted(refs)
    umoci_ls = subprocess.run(
        ["umoci", "ls", "--layout", str(sample_layout)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(umoci_ls) == sorted(os.listdir(m.path / "refs"))
    for name, desc in refs.items():
        ref_dir = m.path / "refs" / name
        check_image_dir(ref_dir, sample_layout, desc)
        raw = subprocess.run(
            ["skopeo", "inspect", "--raw", f"oci:{sample_layout}:{name}"],
            capture_output=True,
            check=True,
        ).stdout
        assert (ref_dir / "manifest.json").read_bytes() == raw
        stat_out = json.loads(
            subprocess.run(
                ["umoci", "stat", "--json", "--image", f"{sample_layout}:{name}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        layers = json.loads((ref_dir / "manifest.json").read_text())["layers"]
        non_empty = [h for h in stat_out["history"] if not h.get("empty_layer")]
        assert len(non_empty) == len(layers)
        assert sorted(os.listdir(ref_dir)) == sorted(
            ["manifest.json", "descriptor.json", "config.json", "layers", "rootfs", "image.tar"]
        )
    # every blob is listed and byte-identical
    blobs = sorted(os.listdir(sample_layout / "blobs/sha256"))
    assert sorted(os.listdir(m.path / "blobs/sha256")) == blobs
    for hex_ in blobs:
        assert sha256(m.path / "blobs/sha256" / hex_) == f"sha256:{hex_}"
    # by-digest holds every manifest reachable from index.json
    digests = {d["digest"] for d in refs.values()}
    assert set(os.listdir(m.path / "by-digest")) == digests


@pytest.mark.parametrize(
    "layout",
    [
        GCR / "test_index",
        GCR / "test_index_one_image",
        GCR / "test_index_media_type",
        GCR / "test_gc_index",
        CIMG / "delete_image_multiple_images",
        CIMG / "delete_image_two_identical_references",
        REGCLIENT / "testrepo",
    ],
    ids=lambda p: p.name,
)
def test_fixture_layouts(mount_image, layout: Path) -> None:
    """Layouts other tools ship: indexes, nested indexes, artifacts, absent blobs."""
    m = mount_image(layout)
    m.expect_log(r"blob sha256:[0-9a-f]{64}: missing")
    m.expect_log(r"only (index|manifest)\.json and descriptor\.json are shown")
    index = json.loads((layout / "index.json").read_text())
    seen_refs: dict[str, dict] = {}
    duplicated = set()
    for desc in index["manifests"]:
        name = desc.get("annotations", {}).get("org.opencontainers.image.ref.name")
        if name:
            if name in seen_refs:
                duplicated.add(name)
            seen_refs[name] = desc  # the last duplicate wins (skopeo takes the first)
        by_digest = m.path / "by-digest" / desc["digest"]
        assert by_digest.is_dir()
        check_image_dir_loose(by_digest, layout, desc)
    for name, desc in seen_refs.items():
        assert json.loads((m.path / "refs" / name / "descriptor.json").read_text()) == desc
    # skopeo agrees on every tagged manifest's bytes
    for name in set(seen_refs) - duplicated:
        result = subprocess.run(
            ["skopeo", "inspect", "--raw", f"oci:{layout}:{name}"], capture_output=True, check=False
        )
        if result.returncode == 0:
            doc = next(
                p
                for p in (m.path / "refs" / name).iterdir()
                if p.name in ("manifest.json", "index.json")
            )
            assert doc.read_bytes() == result.stdout


def check_image_dir_loose(mnt_dir: Path, layout: Path, desc: dict) -> None:
    """Like check_image_dir, for documents that may be artifacts or unknown types."""
    is_index = desc["mediaType"] in INDEX_TYPES
    is_manifest = desc["mediaType"].endswith(("manifest.v1+json", "manifest.v2+json"))
    doc = mnt_dir / ("index.json" if is_index else "manifest.json" if is_manifest else "blob")
    assert doc.stat().st_size == desc["size"]
    if not blob_path(layout, desc["digest"]).exists():
        with pytest.raises(OSError) as err:
            doc.read_bytes()
        assert err.value.errno == errno.EIO
        return
    assert sha256(doc) == desc["digest"]
    if is_index:
        body = json.loads(doc.read_bytes())
        assert len(os.listdir(mnt_dir / "platforms")) == len(body["manifests"])
        for name in os.listdir(mnt_dir / "platforms"):
            child = json.loads((mnt_dir / "platforms" / name / "descriptor.json").read_text())
            check_image_dir_loose(mnt_dir / "platforms" / name, layout, child)
    elif is_manifest:
        body = json.loads(doc.read_bytes())
        layers = body.get("layers") or []
        files = [n for n in os.listdir(mnt_dir / "layers") if not n.isdigit()]
        assert len(files) == len(layers)
        for n, layer in enumerate(layers):
            f = next(
                p
                for p in (mnt_dir / "layers").iterdir()
                if p.name.split(".")[0] == str(n) and not p.is_dir()
            )
            assert f.stat().st_size == layer["size"]
            if blob_path(layout, layer["digest"]).exists():
                assert sha256(f) == layer["digest"]


def test_missing_and_wrong_size_blobs_fail_with_eio(mount_image, sample_layout, tmp_path) -> None:
    layout = copy_layout(sample_layout, tmp_path / "layout")
    refs = ref_names(layout)
    manifest = json.loads(blob_path(layout, refs["sample:1.0"]["digest"]).read_bytes())
    missing = manifest["layers"][0]["digest"]
    blob_path(layout, missing).unlink()
    config = manifest["config"]["digest"]
    with open(blob_path(layout, config), "ab") as f:
        f.write(b"junk")
    m = mount_image(layout)
    m.expect_log(rf"blob {missing}: missing")
    m.expect_log(rf"blob {config}: size on disk is \d+, descriptor says \d+")
    ref = m.path / "refs/sample:1.0"
    assert (ref / "layers/0.tar.gz").stat().st_size == manifest["layers"][0]["size"]
    for bad in (ref / "layers/0.tar.gz", ref / "config.json"):
        with pytest.raises(OSError) as err:
            bad.read_bytes()
        assert err.value.errno == errno.EIO
    # the rest of the mount keeps working
    assert sha256(ref / "layers/1.tar.gz") == manifest["layers"][1]["digest"]
    assert sha256(ref / "manifest.json") == refs["sample:1.0"]["digest"]
    log = m.log_text()
    assert missing in log and config in log


def test_corrupt_blob_fails_at_end_of_sequential_read(mount_image, sample_layout, tmp_path) -> None:
    layout = copy_layout(sample_layout, tmp_path / "layout")
    digest = ref_names(layout)["sample:1.0"]["digest"]
    manifest = json.loads(blob_path(layout, digest).read_bytes())
    layer = manifest["layers"][0]["digest"]
    p = blob_path(layout, layer)
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    m = mount_image(layout)
    m.expect_log(rf"blob {layer}: content does not match its digest")
    with pytest.raises(OSError) as err:
        (m.path / "blobs/sha256" / layer.split(":")[1]).read_bytes()
    assert err.value.errno == errno.EIO


def test_writes_fail_with_erofs(mount_image, sample_layout) -> None:
    m = mount_image(sample_layout, "--read-only")
    assert not (m.path / ".import").exists()
    targets = [
        lambda: (m.path / "index.json").write_text("{}"),
        lambda: (m.path / "refs" / "new").mkdir(),
        lambda: (m.path / "blobs/sha256/x").write_bytes(b"x"),
        lambda: os.chmod(m.path / "oci-layout", 0o777),
        lambda: (m.path / "oci-layout").unlink(),
        lambda: os.truncate(m.path / "refs/sample:1.0/manifest.json", 0),
    ]
    for action in targets:
        with pytest.raises(OSError) as err:
            action()
        assert err.value.errno == errno.EROFS
    result = subprocess.run(
        ["cp", "/etc/hostname", str(m.path / "refs/")], capture_output=True, text=True
    )
    assert result.returncode != 0 and "Read-only file system" in result.stderr


def _write_index(layout: Path, manifests: list[dict]) -> None:
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))


def test_ref_names_duplicates_nesting_odd_characters_and_thousands(
    mount_image, sample_layout, tmp_path
) -> None:
    layout = copy_layout(sample_layout, tmp_path / "layout")
    base = ref_names(layout)
    gz, zst = base["sample:1.0"], base["sample:1.0-zstd"]

    def named(desc: dict, name: str) -> dict:
        return {**desc, "annotations": {"org.opencontainers.image.ref.name": name}}

    odd = ["with space", "ünïcødé:1", "a:b@c#d$e", "-dash", "tab\there"]
    entries = [named(gz, "dup"), named(zst, "dup")]  # the last one wins
    entries += [named(gz, "docker.io/library/busybox:latest"), named(zst, "docker.io/library/x")]
    entries += [named(gz, n) for n in odd]
    entries += [named(gz, "bad/../name"), named(gz, "/abs"), named(gz, "")]
    entries += [named(zst if i % 2 else gz, f"many/r{i:05d}") for i in range(3000)]
    _write_index(layout, entries)
    m = mount_image(layout)
    dup = json.loads((m.path / "refs/dup/descriptor.json").read_text())
    assert dup["digest"] == zst["digest"]
    assert (m.path / "refs/docker.io/library/busybox:latest/manifest.json").read_bytes() == (
        blob_path(layout, gz["digest"]).read_bytes()
    )
    assert sorted(os.listdir(m.path / "refs/docker.io/library")) == ["busybox:latest", "x"]
    for name in odd:
        assert (m.path / "refs" / name / "manifest.json").is_file()
    assert not (m.path / "refs/bad").exists()
    assert not (m.path / "refs/abs").exists()
    assert len(os.listdir(m.path / "refs/many")) == 3000
    assert (m.path / "refs/many/r02999/descriptor.json").is_file()
    log = m.log_text()
    assert "duplicate ref name 'dup'" in log
    assert "'bad/../name' cannot be shown as a path" in log


def test_index_changed_by_another_tool_is_picked_up(mount_image, sample_layout, tmp_path) -> None:
    layout = copy_layout(sample_layout, tmp_path / "layout")
    m = mount_image(layout, "--read-only")
    assert sorted(os.listdir(m.path / "refs")) == ["sample:1.0", "sample:1.0-zstd"]
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci:{layout}:sample:1.0", f"oci:{layout}:retagged"], check=True
    )
    import time

    deadline = time.monotonic() + 10
    while "retagged" not in os.listdir(m.path / "refs") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "retagged" in os.listdir(m.path / "refs")
    assert (m.path / "index.json").read_bytes() == (layout / "index.json").read_bytes()


# ----- bad sources and mountpoints: one line, non-zero exit, nothing mounted ---------------


def _mount_fails(source: Path, mnt: Path, *, mounts_before: int = 0) -> str:
    result = ocifs("mount", str(source), str(mnt))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    with open("/proc/self/mountinfo") as f:
        assert f.read().count(f" {mnt} ") == mounts_before
    return lines[0]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda L: (L / "oci-layout").unlink(), r"oci-layout: missing \(not an OCI image layout\)"),
        (lambda L: (L / "oci-layout").write_text("[]"), r"oci-layout: not a JSON object"),
        (
            lambda L: (L / "oci-layout").write_text("{}"),
            r"oci-layout: missing field 'imageLayoutVersion'",
        ),
        (lambda L: (L / "oci-layout").write_text("garbage"), r"oci-layout: invalid JSON at line 1"),
        (
            lambda L: (L / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}'),
            r"imageLayoutVersion '2.0.0' is not supported \(supported: 1.0.0\)",
        ),
        (
            lambda L: (L / "index.json").write_bytes((L / "index.json").read_bytes()[:100]),
            r"index.json: invalid JSON at line \d+ column \d+",
        ),
        (lambda L: (L / "index.json").write_text("[]"), r"index.json: not a JSON object"),
        (
            lambda L: (L / "index.json").write_text('{"schemaVersion": 2}'),
            r"index.json: missing field 'manifests'",
        ),
        (
            lambda L: (L / "index.json").write_text('{"schemaVersion": 1, "manifests": []}'),
            r"index.json: a Docker schema 1 manifest \(unsupported schema 1\)",
        ),
        (
            lambda L: (L / "index.json").write_text(
                '{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",'
                ' "manifests": []}'
            ),
            r"index.json: mediaType .* is not an image index",
        ),
        (lambda L: (L / "index.json").unlink(), r"index.json: missing"),
        (
            lambda L: (L / "index.json").write_text('{"schemaVersion": 2, "manifests": {}}'),
            r"index.json: field 'manifests' must be an array",
        ),
    ],
)
def test_bad_layouts_are_refused(sample_layout, tmp_path, setup, expected) -> None:
    import re

    from tests.conftest import require_fuse

    require_fuse()
    layout = copy_layout(sample_layout, tmp_path / "layout")
    setup(layout)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    line = _mount_fails(layout, mnt)
    assert re.search(expected, line), line
    assert str(layout) in line


def test_bad_mountpoints_and_sources_are_refused(mount_image, sample_layout, tmp_path) -> None:
    line = _mount_fails(sample_layout, tmp_path / "nope")
    assert "mountpoint does not exist" in line
    f = tmp_path / "file"
    f.write_text("x")
    assert "not a directory" in _mount_fails(sample_layout, f)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    assert "not empty" in _mount_fails(sample_layout, full)
    m = mount_image(sample_layout)
    assert "already a mount point (ocifs of" in _mount_fails(sample_layout, m.path, mounts_before=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no such file or directory" in _mount_fails(tmp_path / "missing-source", empty)
    result = ocifs("umount", str(empty))
    assert result.returncode == 1 and "not mounted" in result.stderr


def test_foreground_mount_and_umount(sample_layout, tmp_path) -> None:
    from tests.conftest import _is_mounted, require_fuse

    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    import sys
    import time

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ocifs",
            "mount",
            "--foreground",
            str(sample_layout),
            str(mnt),
            "--cache-dir",
            str(tmp_path / "c"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not _is_mounted(mnt) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        assert sorted(os.listdir(mnt / "refs")) == ["sample:1.0", "sample:1.0-zstd"]
        assert ocifs("umount", str(mnt)).returncode == 0
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "ERROR" not in (proc.stderr.read() if proc.stderr else "")


def test_mount_options_are_applied(mount_image, sample_layout) -> None:
    m = mount_image(sample_layout, "-o", "allow_other")
    with open("/proc/self/mountinfo") as f:
        line = next(line for line in f if line.split()[4] == str(m.path))
    opts = line.split()[5].split(",")
    assert "nosuid" in opts and "nodev" in opts
    assert "fuse.ocifs" in line
    assert "allow_other" in line and "default_permissions" in line
    assert (
        shutil.which("findmnt") is None
        or subprocess.run(["findmnt", str(m.path)], capture_output=True, check=False).returncode
        == 0
    )


def test_unusable_index_entries_are_skipped_with_a_warning(mount_image, sample_layout, tmp_path):
    layout = copy_layout(sample_layout, tmp_path / "layout")
    index = json.loads((layout / "index.json").read_text())
    index["manifests"].insert(0, {"mediaType": "a/b", "digest": "md5:00", "size": 1})
    index["manifests"].insert(0, {"mediaType": "a/b", "digest": "sha256:XYZ", "size": 1})
    (layout / "index.json").write_text(json.dumps(index))
    m = mount_image(layout)
    assert sorted(os.listdir(m.path / "refs")) == ["sample:1.0", "sample:1.0-zstd"]
    log = m.log_text()
    assert "manifests[1]: unsupported digest algorithm 'md5'" in log
    assert "manifests[0]: invalid sha256 digest 'sha256:XYZ'" in log


@pytest.mark.parametrize("writable", [False, True])
def test_second_read_and_stat_are_served_by_the_kernel(mount_image, sample_layout, writable):
    """Immutable files: long timeouts and keep_cache, so repeats never reach the daemon.

    On a writable mount (one with .import/) the kernel invalidates atime after
    every read (fuse_invalidate_atime skips only read-only superblocks), so a
    stat right after a read of the same file costs one GETATTR; data is still
    served from the page cache.
    """
    m = mount_image(sample_layout, "--debug", *([] if writable else ["--read-only"]))
    digest = ref_names(sample_layout)["sample:1.0"]["digest"]
    manifest = json.loads(blob_path(sample_layout, digest).read_bytes())
    layer = m.path / "refs/sample:1.0/layers/0.tar.gz"
    os.stat(layer)
    first = layer.read_bytes()
    reads_before = m.log_text().count(" read fh=")
    getattrs_before = m.log_text().count(" getattr inode=")
    assert reads_before >= 1
    for _ in range(3):
        os.stat(layer)
        assert layer.read_bytes() == first
    assert m.log_text().count(" read fh=") == reads_before
    if not writable:
        assert m.log_text().count(" getattr inode=") == getattrs_before
    assert "sha256:" + hashlib.sha256(first).hexdigest() == manifest["layers"][0]["digest"]


def test_empty_layout_made_by_umoci_init(mount_image, tmp_path) -> None:
    layout = tmp_path / "empty"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    assert json.loads((layout / "index.json").read_text())["manifests"] is None
    m = mount_image(layout)
    assert os.listdir(m.path / "refs") == [] and os.listdir(m.path / "by-digest") == []


def test_an_unexpected_error_is_eio_and_the_mount_lives_on(
    mount_image, sample_layout, monkeypatch
) -> None:
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")
    monkeypatch.setenv("OCIFS_TEST_CRASH_LOOKUP", "boom")
    m = mount_image(sample_layout)
    m.expect_log(r"internal error in lookup")
    with pytest.raises(OSError) as err:
        os.stat(m.path / "refs/boom")
    assert err.value.errno == errno.EIO
    assert "Traceback" in m.log_text() and "test-only crash" in m.log_text()
    m.expect_log(r"^Traceback|^\s|RuntimeError")
    assert sorted(os.listdir(m.path / "refs")) == ["sample:1.0", "sample:1.0-zstd"]
    assert (m.path / "refs/sample:1.0/rootfs/etc/os-release").read_text().startswith("NAME=")


def test_dead_mount_after_kill_9_is_reported_and_unmountable(mount_image, sample_layout) -> None:
    import signal

    m = mount_image(sample_layout)
    m.expect_log(r".")  # the daemon dies without a word
    os.kill(m.pid, signal.SIGKILL)
    from tests.conftest import _wait_gone

    assert _wait_gone(m.pid)
    line = _mount_fails(sample_layout, m.path, mounts_before=1)
    assert "a dead FUSE mount is here" in line and "ocifs umount" in line
    assert ocifs("umount", str(m.path)).returncode == 0
    assert not os.path.ismount(m.path)


def test_every_directory_has_one_parent(mount_image) -> None:
    """The same index under refs/ and by-digest/ gets distinct platform directories."""
    m = mount_image(REGCLIENT / "testrepo")
    m.expect_log(r"blob sha256:[0-9a-f]{64}: missing")
    m.expect_log(r"only (index|manifest)\.json and descriptor\.json are shown")
    index = json.loads((REGCLIENT / "testrepo/index.json").read_text())
    ref, desc = next(
        (d["annotations"]["org.opencontainers.image.ref.name"], d)
        for d in index["manifests"]
        if d["mediaType"] in INDEX_TYPES and "annotations" in d
    )
    via_ref = m.path / "refs" / ref / "platforms"
    via_digest = m.path / "by-digest" / desc["digest"] / "platforms"
    names = sorted(os.listdir(via_ref))
    assert names and names == sorted(os.listdir(via_digest))
    for name in names:
        assert os.stat(via_ref / name).st_ino != os.stat(via_digest / name).st_ino
