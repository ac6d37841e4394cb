"""Issue 11: `image.tar` in every image directory, checked with the tools that load archives.

Every kind of image the suite builds (gzip and zstd single-platform images, a
multi-platform index, a nested index, an artifact, a legacy docker-save tar's
synthesized manifest) is exported through a real mount and handed to podman
load, skopeo (oci-archive: and docker-archive:), ctr import (against a private
containerd) and `ocifs mount` itself; bytes are compared across reads, mounts
and random offsets; a corrupt blob must make the read fail with EIO.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import copy_layout, require, require_tools, unmount
from tests.helpers.layoutcheck import make_layout

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPES = {OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json"}
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _put_blob(layout: Path, data: bytes) -> dict:
    digest = _sha(data)
    (layout / "blobs/sha256" / digest.split(":")[1]).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def _tag(layout: Path, desc: dict, name: str) -> None:
    index = json.loads((layout / "index.json").read_text())
    index["manifests"].append({**desc, "annotations": {REF_NAME: name}})
    (layout / "index.json").write_text(json.dumps(index))


def _ref_desc(layout: Path, name: str) -> dict:
    index = json.loads((layout / "index.json").read_text())
    return next(d for d in index["manifests"] if d.get("annotations", {}).get(REF_NAME) == name)


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / digest.replace(":", "/")).read_bytes()


@pytest.fixture(scope="session")
def export_layout(tmp_path_factory: pytest.TempPathFactory, sample_layout: Path) -> Path:
    """The sample layout plus a 6 MiB random layer image, a multi-platform index, a
    nested index and an artifact (indexes and the artifact written here as JSON)."""
    layout = copy_layout(sample_layout, tmp_path_factory.mktemp("export") / "layout")
    rng = random.Random(11)
    make_layout(str(layout), "big", {"random.bin": rng.randbytes(6 << 20)})
    gz, zst = _ref_desc(layout, "sample:1.0"), _ref_desc(layout, "sample:1.0-zstd")
    children = [
        {"mediaType": OCI_MANIFEST, "digest": gz["digest"], "size": gz["size"],
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": OCI_MANIFEST, "digest": zst["digest"], "size": zst["size"],
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
    ]
    multi = _put_blob(layout, json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode())
    _tag(layout, {"mediaType": OCI_INDEX, **multi}, "multi:1")
    nested_index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                    "manifests": [{"mediaType": OCI_INDEX, **multi}]}
    nested = _put_blob(layout, json.dumps(nested_index).encode())
    _tag(layout, {"mediaType": OCI_INDEX, **nested}, "nested:1")
    empty = _put_blob(layout, b"{}")
    sbom = _put_blob(layout, b'{"sbom": "nothing to declare"}\n')
    artifact = _put_blob(layout, json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/example.sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", **empty},
        "layers": [{"mediaType": "application/example.sbom.json", **sbom}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": gz["digest"], "size": gz["size"]},
    }).encode())
    _tag(layout, {"mediaType": OCI_MANIFEST, "artifactType": "application/example.sbom",
                  **artifact}, "artifact:1")
    return layout


@pytest.fixture(scope="session")
def docker_save(tmp_path_factory: pytest.TempPathFactory, sample_layout: Path) -> Path:
    """A legacy docker-save tar (skopeo docker-archive: writes no manifest blob)."""
    path = tmp_path_factory.mktemp("dockersave") / "sample-docker.tar"
    subprocess.run(["skopeo", "copy", "-q", f"oci:{sample_layout}:sample:1.0",
                    f"docker-archive:{path}:example.com/sample:1.0"], check=True)
    return path


# -- what an export must contain, computed from the layout without ocifs ---------

@dataclass
class Expected:
    desc: dict                     # the exported descriptor
    blobs: dict[str, bytes]        # digest -> bytes of every blob in the closure
    images: list[dict]             # image manifests (podman/docker-archive can load)


def closure(read_blob, desc: dict) -> Expected:
    blobs: dict[str, bytes] = {}
    images: list[dict] = []
    stack = [desc]
    while stack:
        d = stack.pop(0)
        if d["digest"] in blobs:
            continue
        data = read_blob(d["digest"])
        blobs[d["digest"]] = data
        if d["mediaType"] in INDEX_TYPES:
            stack.extend(json.loads(data)["manifests"])
            continue
        manifest = json.loads(data)
        for part in [manifest["config"], *manifest.get("layers", [])]:
            blobs[part["digest"]] = read_blob(part["digest"])
        if manifest["config"]["mediaType"].endswith(("image.config.v1+json",
                                                      "container.image.v1+json")):
            images.append(manifest)
    return Expected(desc, blobs, images)


def diff_ids(read_blob, manifest: dict) -> list[str]:
    return json.loads(read_blob(manifest["config"]["digest"]))["rootfs"]["diff_ids"]


def check_members(
    tar_path: Path, exp: Expected, names: dict[str, str], repo_tags: list[str] | None = None
) -> None:
    """The archive holds exactly the closure, in containerd's form and order."""
    with tarfile.open(tar_path) as tf:
        members = tf.getmembers()
        names_in_order = [m.name for m in members]
        expected_files = {f"blobs/{d.replace(':', '/')}" for d in exp.blobs}
        assert set(names_in_order) == {"blobs", "blobs/sha256", "index.json", "manifest.json",
                                       "oci-layout", *expected_files}
        assert names_in_order == sorted(names_in_order)
        for m in members:
            assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0)
            assert m.mode == (0o755 if m.isdir() else 0o644)
            if m.isfile() and m.name.startswith("blobs/"):
                data = tf.extractfile(m).read()  # type: ignore[union-attr]
                assert data == exp.blobs[m.name[len("blobs/"):].replace("/", ":", 1)]
        index = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
        (entry,) = index["manifests"]
        assert (entry["digest"], entry["size"]) == (exp.desc["digest"], exp.desc["size"])
        assert {k: v for k, v in entry.get("annotations", {}).items()
                if k in (REF_NAME, CONTAINERD_NAME)} == names
        docker = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert [item["Config"] for item in docker] == [
            "blobs/" + m["config"]["digest"].replace(":", "/") for m in exp.images]
        tags = [item["RepoTags"] for item in docker]
        assert tags == ([repo_tags] + [None] * (len(docker) - 1) if docker else [])
        assert json.loads(tf.extractfile("oci-layout").read()) == {  # type: ignore[union-attr]
            "imageLayoutVersion": "1.0.0"}


# -- third-party tools ---------------------------------------------------------------

def run(*cmd: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, f"{cmd}: {result.stderr}"
    return result


class Podman:
    """podman with private vfs storage (never the machine's own images).

    The run root must be under 50 characters, so it is a short directory in /tmp.
    """

    def __init__(self, root: Path) -> None:
        self.runroot = tempfile.mkdtemp(prefix="ocifs-podman-", dir="/tmp")
        self.base = ["podman", "--root", str(root), "--runroot", self.runroot,
                     "--storage-driver", "vfs"]

    def __call__(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return run(*self.base, *args)

    def close(self) -> None:
        shutil.rmtree(self.runroot, ignore_errors=True)


class Containerd:
    """A private containerd (own root, state and socket under tmp) for `ctr images import`."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.socket = base / "c.sock"
        config = base / "config.toml"
        config.write_text(
            'version = 2\n'
            f'root = "{base}/root"\nstate = "{base}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
            '[debug]\n  address = ""\n[metrics]\n  address = ""\n'
        )
        self.log = open(base / "containerd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["containerd", "-c", str(config)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while run("ctr", "-a", self.socket, "version", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"containerd did not start: {(base / 'containerd.log').read_text()}")
            time.sleep(0.1)

    def ctr(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return run("ctr", "-a", self.socket, *args)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    require_tools("containerd", "ctr")
    if os.geteuid() != 0:
        require("containerd needs root for its content store and snapshots")
    daemon = Containerd(tmp_path_factory.mktemp("ctrd"))
    yield daemon
    daemon.stop()


def linked(tmp: Path, target: Path, name: str) -> Path:
    """A colon-free path to `target`: skopeo and podman split transport paths at ':'."""
    link = tmp / name
    link.symlink_to(target)
    return link


KINDS = ["gzip", "zstd", "big", "multi", "nested", "artifact", "docker-save"]
LAYOUT_REFS = {"gzip": "sample:1.0", "zstd": "sample:1.0-zstd", "big": "big",
               "multi": "multi:1", "nested": "nested:1", "artifact": "artifact:1"}
#: RepoTags of manifest.json's first item: the ref name when it is a Docker `repo:tag`
REPO_TAGS = {"gzip": ["sample:1.0"], "zstd": ["sample:1.0-zstd"], "big": None,
             "multi": ["multi:1"], "nested": ["nested:1"],
             "docker-save": ["example.com/sample:1.0"]}


@pytest.mark.parametrize("kind", KINDS)
def test_export_is_loaded_by_every_tool(
    kind: str, mount_image, export_layout: Path, docker_save: Path, containerd: Containerd,
    tmp_path: Path,
) -> None:
    require_tools("podman", "skopeo", "tar", "ctr")
    if kind == "docker-save":
        m = mount_image(docker_save)
        ref = "example.com/sample:1.0"
    else:
        m = mount_image(export_layout)
        ref = LAYOUT_REFS[kind]
    ref_dir = m.path / "refs" / ref

    def read_blob(digest: str) -> bytes:
        return (m.path / "blobs" / digest.replace(":", "/")).read_bytes()

    desc = json.loads((ref_dir / "descriptor.json").read_text())
    exp = closure(read_blob, desc)
    names = {REF_NAME: ref, CONTAINERD_NAME: ref}
    export = ref_dir / "image.tar"

    # stat gives the exact size before anything is read; two reads give the same bytes
    size = export.stat().st_size
    first = export.read_bytes()
    assert len(first) == size
    assert export.read_bytes() == first
    check_members(export, exp, names, REPO_TAGS.get(kind))
    listing = run("tar", "-tvf", export).stdout.splitlines()
    assert len(listing) == 5 + len(exp.blobs)

    tar = linked(tmp_path, export, "export.tar")
    # skopeo oci-archive: keeps every manifest byte for byte (--all: every platform)
    copied = run("skopeo", "copy", "-q", "--all", f"oci-archive:{tar}",
                 f"oci:{tmp_path / 'out'}:x", check=False)
    if kind == "nested":
        # skopeo 1.9 cannot copy an index of indexes, from the layout itself either
        original = run("skopeo", "copy", "-q", "--all", f"oci:{m.source}:{ref}",
                       f"oci:{tmp_path / 'out0'}:x", check=False)
        assert original.returncode == copied.returncode == 1
        assert "Unexpectedly received a manifest list" in original.stderr
        assert "Unexpectedly received a manifest list" in copied.stderr
    else:
        assert copied.returncode == 0, copied.stderr
        out = tmp_path / "out"
        (out_desc,) = json.loads((out / "index.json").read_text())["manifests"]
        layers = [x for image in exp.images for x in image["layers"]]
        compressed = all(x["mediaType"].endswith(("+gzip", "+zstd")) for x in layers)
        if desc["mediaType"].startswith("application/vnd.oci.") and compressed:
            assert out_desc["digest"] == desc["digest"]
            for digest, data in exp.blobs.items():
                assert _blob(out, digest) == data
        else:  # skopeo converts a Docker manifest, and compresses uncompressed layers
            # (a legacy docker save's), for an oci: destination: same layers
            (image,) = exp.images
            out_manifest = json.loads(_blob(out, out_desc["digest"]))
            assert diff_ids(lambda d: _blob(out, d), out_manifest) == diff_ids(read_blob, image)

    # docker-archive: one image per manifest.json item, same layers (diff_ids) as the source
    for n, manifest in enumerate(exp.images):
        dest = tmp_path / f"docker{n}"
        run("skopeo", "copy", "-q", f"docker-archive:{tar}:@{n}", f"oci:{dest}:x")
        (copied,) = json.loads((dest / "index.json").read_text())["manifests"]
        copied_manifest = json.loads(_blob(dest, copied["digest"]))
        copied_ids = diff_ids(functools.partial(_blob, dest), copied_manifest)
        assert copied_ids == diff_ids(read_blob, manifest)
    if not exp.images:
        result = run("skopeo", "copy", "-q", f"docker-archive:{tar}", f"oci:{tmp_path}/no:x",
                     check=False)
        assert result.returncode != 0 and "expected 1 item, got 0" in result.stderr

    # podman load: an index loads the host's platform (linux/amd64: the gzip image)
    podman = Podman(tmp_path / "podman")
    try:
        loaded = podman("load", "-q", "-i", tar).stdout
        listed = json.loads(podman("images", "--format", "json").stdout)
        if exp.images:
            # podman reads the OCI index (an index: the linux/amd64 image, the gzip one);
            # what it cannot (an index of indexes) it loads from manifest.json instead
            assert listed, loaded
            sources = [diff_ids(read_blob, image) for image in exp.images]
            for image in listed:
                inspect = json.loads(podman("image", "inspect", image["Id"]).stdout)[0]
                assert inspect["RootFS"]["Layers"] in sources
            if kind == "multi":
                assert [inspect["RootFS"]["Layers"]] == sources[:1]
        else:
            assert listed == []  # an artifact is not an image: podman loads nothing
    finally:
        podman.close()

    # ctr import unpacks (native snapshotter: checks every layer against its diff_id)
    if exp.images:
        name = f"export-test/{kind}:1"
        containerd.ctr("images", "import", "--snapshotter", "native", "--all-platforms",
                       "--index-name", name, tar)
        assert name in containerd.ctr("images", "ls", "-q").stdout.split()
        checked = containerd.ctr("images", "check", f"name=={name}").stdout
        assert "complete" in checked, checked
        containerd.ctr("images", "rm", "--sync", name, ref)
    else:  # not an image: imported as content, nothing to unpack
        containerd.ctr("images", "import", "--no-unpack", tar)
        listed_ctr = containerd.ctr("images", "ls").stdout
        assert any(line.split()[:1] == [ref] and desc["digest"] in line
                   for line in listed_ctr.splitlines()), listed_ctr
        containerd.ctr("images", "rm", "--sync", ref)

    # ocifs mounts the export (a mount inside a mount) and shows the same image
    inner = mount_image(export)
    inner_dir = inner.path / "refs" / ref
    assert json.loads((inner_dir / "descriptor.json").read_text())["digest"] == desc["digest"]
    doc = "index.json" if desc["mediaType"] in INDEX_TYPES else "manifest.json"
    assert (inner_dir / doc).read_bytes() == (ref_dir / doc).read_bytes()
    assert (inner_dir / "image.tar").read_bytes() == first
    unmount(inner.path)  # before the outer mount, whose file the inner daemon holds open


def test_random_offset_reads_equal_slices_of_a_full_read(
    mount_image, export_layout: Path, tmp_path: Path
) -> None:
    m = mount_image(export_layout)
    export = m.path / "refs/multi:1/image.tar"
    full = export.read_bytes()
    m2 = mount_image(export_layout)  # a fresh daemon: nothing is in its caches yet
    export2 = m2.path / "refs/multi:1/image.tar"
    rng = random.Random(1111)
    with tarfile.open(export) as tf:
        edges = [m.offset for m in tf.getmembers()] + [m.offset_data for m in tf.getmembers()]
    offsets = [0, len(full) - 1, len(full), len(full) + 4096, *edges,
               *(rng.randrange(len(full)) for _ in range(200))]
    with open(export2, "rb", buffering=0) as f:
        for off in offsets:
            n = rng.choice([1, 511, 512, 4096, 65537, 300_000])
            f.seek(off)
            assert f.read(n) == full[off : off + n], (off, n)
    for skip in (0, 3, 1234):
        got = subprocess.run(["dd", f"if={export2}", "bs=512", f"skip={skip}", "count=7",
                              "status=none"], capture_output=True, check=True).stdout
        assert got == full[skip * 512 : (skip + 7) * 512]
    # a second mount of the same layout serves identical bytes, sequentially too
    assert export2.read_bytes() == full
    copied = tmp_path / "copy.tar"
    shutil.copyfile(export2, copied)
    assert copied.read_bytes() == full
    require_tools("rsync")
    run("rsync", export, tmp_path / "rsynced.tar")
    assert (tmp_path / "rsynced.tar").read_bytes() == full


def test_platform_export_holds_one_image_and_by_digest_is_unnamed(
    mount_image, export_layout: Path
) -> None:
    m = mount_image(export_layout)
    ref = m.path / "refs/multi:1"
    platforms = sorted(os.listdir(ref / "platforms"))
    assert platforms == ["linux-amd64", "linux-arm64-v8"]
    for name in platforms:
        child = json.loads((ref / "platforms" / name / "descriptor.json").read_text())
        with tarfile.open(ref / "platforms" / name / "image.tar") as tf:
            (entry,) = json.loads(tf.extractfile("index.json").read())["manifests"]  # type: ignore[union-attr]
            docker = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert entry["digest"] == child["digest"]
        assert entry["platform"] == child["platform"]
        assert entry["annotations"] == {REF_NAME: "multi:1", CONTAINERD_NAME: "multi:1"}
        assert len(docker) == 1 and docker[0]["RepoTags"] == ["multi:1"]
    digest = json.loads((ref / "descriptor.json").read_text())["digest"]
    by_digest = m.path / "by-digest" / digest / "image.tar"
    with tarfile.open(by_digest) as tf:
        (entry,) = json.loads(tf.extractfile("index.json").read())["manifests"]  # type: ignore[union-attr]
        docker = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert "annotations" not in entry
    assert [item["RepoTags"] for item in docker] == [None, None]


def test_corrupt_blob_makes_the_export_read_fail_with_eio(
    mount_image, export_layout: Path, tmp_path: Path
) -> None:
    layout = copy_layout(export_layout, tmp_path / "layout")
    manifest = json.loads(_blob(layout, _ref_desc(layout, "big")["digest"]))
    layer = max(manifest["layers"], key=lambda d: d["size"])["digest"]
    path = layout / "blobs" / layer.replace(":", "/")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, wrong content
    path.write_bytes(bytes(data))
    m = mount_image(layout)
    m.expect_log(rf"blob {layer}: content does not match its digest")
    export = m.path / "refs/big/image.tar"
    size = export.stat().st_size
    assert size > len(data)
    # `cat` reads ahead: the kernel's read-ahead requests overlap the reads that
    # complete (and verify) the small blobs before the big one
    result = subprocess.run(["cat", str(export)], capture_output=True)
    assert result.returncode != 0 and b"Input/output error" in result.stderr
    result = subprocess.run(["cp", str(export), str(tmp_path / "out.tar")], capture_output=True)
    assert result.returncode != 0 and b"Input/output error" in result.stderr
    with pytest.raises(OSError) as err, open(export, "rb") as f:
        while f.read(1 << 20):
            pass
    assert err.value.errno == errno.EIO
    # the rest of the mount keeps answering, and other exports are whole
    good = m.path / "refs/sample:1.0/image.tar"
    assert len(good.read_bytes()) == good.stat().st_size


def test_missing_blob_of_an_index_is_left_out_and_a_short_blob_fails(
    mount_image, export_layout: Path, tmp_path: Path
) -> None:
    """A layout holding only some platforms exports what it has (as docker save does);
    a blob whose size contradicts its descriptor fails the read with EIO."""
    layout = copy_layout(export_layout, tmp_path / "layout")
    zst = json.loads(_blob(layout, _ref_desc(layout, "sample:1.0-zstd")["digest"]))
    zst_config = zst["config"]["digest"]
    index = json.loads((layout / "index.json").read_text())
    index["manifests"] = [d for d in index["manifests"]
                          if d["annotations"][REF_NAME] in ("multi:1", "sample:1.0")]
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "blobs" / zst["layers"][0]["digest"].replace(":", "/")).unlink()
    m = mount_image(layout)
    with tarfile.open(m.path / "refs/multi:1/image.tar") as tf:
        names = tf.getnames()
        docker = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert "blobs/" + zst["layers"][0]["digest"].replace(":", "/") not in names
    assert "blobs/" + zst_config.replace(":", "/") in names
    assert len(docker) == 1  # only the complete (gzip) image is listed
    gz = _ref_desc(layout, "sample:1.0")["digest"]
    config = json.loads(_blob(layout, gz))["config"]["digest"]
    with open(layout / "blobs" / config.replace(":", "/"), "ab") as f:
        f.write(b"junk")
    m2 = mount_image(layout)
    m2.expect_log(rf"blob {config}: size on disk is \d+, descriptor says \d+")
    export = m2.path / "refs/sample:1.0/image.tar"
    with pytest.raises(OSError) as err:
        export.read_bytes()
    assert err.value.errno == errno.EIO


def test_big_blob_after_a_small_one_is_verified_under_read_ahead(
    mount_image, sample_layout: Path, tmp_path: Path
) -> None:
    """The read that completes a small blob waits for its hash; the kernel's read-ahead
    into the big blob that follows must not make that big blob's check silently lapse."""
    layout = copy_layout(sample_layout, tmp_path / "layout")
    rng = random.Random(4)
    layer = rng.randbytes(8 << 20)
    n = 0
    while True:  # a config whose digest sorts before the layer's: it precedes it in the tar
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": n,
                             "rootfs": {"type": "layers", "diff_ids": [_sha(layer)]}}).encode()
        if _sha(config) < _sha(layer):
            break
        n += 1
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **_put_blob(layout, config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    **_put_blob(layout, layer)}],
    }).encode()
    _tag(layout, {"mediaType": OCI_MANIFEST, **_put_blob(layout, manifest)}, "ahead")
    bad = bytearray(layer)
    bad[len(bad) - 100] ^= 0x01
    (layout / "blobs" / _sha(layer).replace(":", "/")).write_bytes(bytes(bad))
    m = mount_image(layout)
    m.expect_log(rf"blob {_sha(layer)}: content does not match its digest")
    result = subprocess.run(["cat", str(m.path / "refs/ahead/image.tar")], capture_output=True)
    assert result.returncode != 0 and b"Input/output error" in result.stderr


def test_export_imports_into_an_empty_layout(mount_image, export_layout: Path,
                                             tmp_path: Path) -> None:
    """`cp refs/<x>/image.tar other/.import/` round-trips; umoci reads the result."""
    require_tools("umoci")
    target = tmp_path / "target"
    run("umoci", "init", "--layout", target)
    src = mount_image(export_layout)
    dst = mount_image(target)
    for ref in ("sample:1.0", "multi:1"):
        shutil.copyfile(src.path / "refs" / ref / "image.tar", dst.path / ".import" / "x.tar")
    unmount(dst.path)
    index = json.loads((target / "index.json").read_text())
    got = {d["annotations"][REF_NAME]: d["digest"] for d in index["manifests"]}
    assert got == {ref: _ref_desc(export_layout, ref)["digest"]
                   for ref in ("sample:1.0", "multi:1")}
    listed = run("umoci", "ls", "--layout", target).stdout.split()
    assert sorted(listed) == ["multi:1", "sample:1.0"]
    for blob in (export_layout / "blobs/sha256").iterdir():
        copied = target / "blobs/sha256" / blob.name
        assert not copied.exists() or copied.read_bytes() == blob.read_bytes()


def test_unreadable_child_manifest_makes_the_index_export_fail_at_open(
    mount_image, export_layout: Path, tmp_path: Path
) -> None:
    layout = copy_layout(export_layout, tmp_path / "layout")
    child = _ref_desc(layout, "sample:1.0-zstd")["digest"]
    path = layout / "blobs" / child.replace(":", "/")
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x20  # same size, wrong digest
    path.write_bytes(bytes(data))
    m = mount_image(layout)
    m.expect_log(rf"image.tar of sha256:[0-9a-f]{{64}}: blob {child}: content does not match")
    export = m.path / "refs/multi:1/image.tar"
    assert export.stat().st_size == 0
    with pytest.raises(OSError) as err:
        export.read_bytes()
    assert err.value.errno == errno.EIO
    assert "image.tar of" in m.log_text()
    # the single-platform export next to it is whole
    good = m.path / "refs/sample:1.0/image.tar"
    assert len(good.read_bytes()) == good.stat().st_size
