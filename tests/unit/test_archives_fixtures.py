"""Archive sources on docker-save tars other projects ship (tests/fixtures)."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from ocifs.cache import DiskCache
from ocifs.errors import NotAnImage
from ocifs.model import digest as digest_mod
from ocifs.model import documents
from ocifs.model.descriptor import CONTAINERD_NAME, REF_NAME
from ocifs.sources.base import Source
from ocifs.sources.detect import open_source
from tests.conftest import FIXTURES, require_tools

GCR = FIXTURES / "go-containerregistry" / "pkg" / "v1"
TARBALL = GCR / "tarball" / "testdata"
MUTATE = GCR / "mutate" / "testdata"
ALMOSTEMPTY = FIXTURES / "containers-image" / "docker" / "archive" / "fixtures" / "almostempty.tar"


#: fixture -> the ref names its index must show
IMAGES = {
    TARBALL / "test_image_1.tar": {"docker.io/bazel/v1/tarball:test_image_1"},
    TARBALL / "test_image_2.tar": {"docker.io/bazel/v1/tarball:test_image_2"},
    TARBALL / "test_load_manifest.tar": {"docker.io/bazel/v1/tarball:test_image_1"},
    TARBALL / "test_bundle.tar": {
        "docker.io/library/test_image_1:latest",
        "docker.io/library/test_image_2:latest",
    },
    TARBALL / "test_link.tar": {
        "docker.io/bazel/v1/tarball:test_image_1",
        "docker.io/bazel/v1/tarball:test_image_3",
    },
    TARBALL / "hello-world-v25.tar": set(),
    MUTATE / "whiteout_image.tar": None,
    MUTATE / "whiteout_dir.tar": {"localhost:5000/whiteout:latest"},
    MUTATE / "overwritten_file.tar": None,
    MUTATE / "source_image.tar": None,
    MUTATE / "source_image_with_empty_layer_history.tar": None,
    ALMOSTEMPTY: None,
}


@pytest.fixture
def cache(tmp_path: Path) -> DiskCache:
    return DiskCache(tmp_path / "cache")


def read(source: Source, digest: object) -> bytes:
    reader = source.open_blob(digest_mod.parse(str(digest)))
    return reader.pread(0, reader.size + 1)


def check_closure(source: Source, entry: dict[str, object]) -> documents.Manifest:
    """Every blob of an entry is present, of the declared size, and matches its digest."""
    data = read(source, entry["digest"])
    assert len(data) == entry["size"]
    assert digest_mod.parse(entry["digest"]).matches(data)
    manifest = documents.parse_manifest(data, "test")
    assert manifest.is_image
    config = json.loads(read(source, manifest.config.digest))
    for desc, diff_id in zip(manifest.layers, config["rootfs"]["diff_ids"], strict=True):
        layer = read(source, desc.digest)
        assert len(layer) == desc.size == source.blob_size(desc.digest)
        assert desc.digest.matches(layer)
        plain = gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer
        assert "sha256:" + hashlib.sha256(plain).hexdigest() == diff_id
    return manifest


@pytest.mark.parametrize("path", list(IMAGES), ids=lambda p: p.name)
def test_fixture_images(path: Path, cache: DiskCache) -> None:
    source = open_source(str(path), cache)
    try:
        assert source.kind == "docker-archive"
        index = json.loads(source.index_bytes())
        names = set()
        for entry in index["manifests"]:
            ann = entry.get("annotations") or {}
            if CONTAINERD_NAME in ann:
                assert ann[REF_NAME] == ann[CONTAINERD_NAME]
                names.add(ann[CONTAINERD_NAME])
            check_closure(source, entry)
        if IMAGES[path] is not None:
            assert names == IMAGES[path]
        else:
            assert names
        documents.parse_oci_layout(source.oci_layout_bytes(), "test")
    finally:
        source.close()


def test_layer_symlink_resolves_to_member(cache: DiskCache) -> None:
    """test_link.tar: image 3's first layer.tar is a symlink to image 1's layer.tar."""
    path = TARBALL / "test_link.tar"
    with tarfile.open(path) as tf:
        target = tf.extractfile(
            "6e77476643c3155b1e9ae07dd5a4c8288bdb6590c131c222b7a3f277dec1e266/layer.tar"
        )
        assert target is not None
        expected = target.read()
    source = open_source(str(path), cache)
    try:
        index = json.loads(source.index_bytes())
        entry = next(
            e for e in index["manifests"] if e["annotations"][REF_NAME].endswith(":test_image_3")
        )
        manifest = check_closure(source, entry)
        assert read(source, manifest.layers[0].digest) == expected
    finally:
        source.close()


def test_gzip_layers_get_member_digests(cache: DiskCache) -> None:
    """whiteout_dir.tar has `*.tar.gz` layers: OCI tar+gzip, digest of the stored bytes."""
    source = open_source(str(MUTATE / "whiteout_dir.tar"), cache)
    try:
        (entry,) = json.loads(source.index_bytes())["manifests"]
        manifest = check_closure(source, entry)
        assert {d.media_type for d in manifest.layers} == {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        }
        assert source.synthesized(digest_mod.parse(entry["digest"]))
    finally:
        source.close()
    assert list((cache.directory / "archive-member-digest").rglob("*"))


@pytest.mark.parametrize("name", ["test_image_1.tar", "whiteout_dir.tar", "hello-world-v25.tar"])
def test_fixture_blobs_equal_skopeo_copy(name: str, cache: DiskCache, tmp_path: Path) -> None:
    """Config and layer bytes equal skopeo's (skopeo stores layers uncompressed)."""
    require_tools("skopeo")
    path = TARBALL / name if (TARBALL / name).exists() else MUTATE / name
    subprocess.run(
        ["skopeo", "copy", "-q", f"docker-archive:{path}", f"dir:{tmp_path / 'd'}"],
        check=True,
        capture_output=True,
    )
    oracle = json.loads((tmp_path / "d" / "manifest.json").read_text())
    source = open_source(str(path), cache)
    try:
        (entry,) = json.loads(source.index_bytes())["manifests"]
        manifest = documents.parse_manifest(read(source, entry["digest"]), "test")
        assert (
            read(source, manifest.config.digest)
            == (tmp_path / "d" / oracle["config"]["digest"][7:]).read_bytes()
        )
        assert len(manifest.layers) == len(oracle["layers"])
        for ours, theirs in zip(manifest.layers, oracle["layers"], strict=True):
            data = read(source, ours.digest)
            plain = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
            assert plain == (tmp_path / "d" / theirs["digest"][7:]).read_bytes()
    finally:
        source.close()


def test_docker_v25_uses_the_stored_manifest(cache: DiskCache) -> None:
    """Docker 25+ format: index.json lists nothing; the manifest blob is found by config."""
    source = open_source(str(TARBALL / "hello-world-v25.tar"), cache)
    try:
        index = json.loads(source.index_bytes())
        (entry,) = index["manifests"]
        assert entry["digest"] == (
            "sha256:411caf340c828657e915a83ed561a79d2b8150dabad4dc079d881cbfe6f86afe"
        )
        assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        assert "annotations" not in entry  # RepoTags is null: by-digest only
        assert not source.synthesized(digest_mod.parse(entry["digest"]))
        assert source.oci_layout_bytes() == b'{"imageLayoutVersion": "1.0.0"}'
    finally:
        source.close()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_manifest.tar", "no manifest.json: a pre-1.10 docker save"),
        ("null_manifest.tar", "manifest.json: is null, not a list of images"),
        (
            "content.tar",
            "not an image archive (a tar without oci-layout, index.json or manifest.json)",
        ),
    ],
)
def test_fixture_non_images(name: str, message: str, cache: DiskCache) -> None:
    with pytest.raises(NotAnImage) as info:
        open_source(str(TARBALL / name), cache)
    text = str(info.value)
    assert text.startswith(str(TARBALL / name) + ":")
    assert message in text
    assert "\n" not in text
