"""Archive sources on archives made by real tools (skopeo, podman), plain and gzip'd.

Oracle: the same image copied out of the archive by skopeo (`oci:` for OCI
archives, `dir:` for docker-save tars, which have no manifest blob to compare);
every blob the source serves for a ref equals the oracle's file of that digest.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocifs.cache import DiskCache
from ocifs.importer.archive_stream import ArchiveImport
from ocifs.model import digest as digest_mod
from ocifs.model import documents
from ocifs.model import mediatypes as mt
from ocifs.model.descriptor import CONTAINERD_NAME, REF_NAME
from ocifs.sources.base import Source
from ocifs.sources.detect import open_source
from tests.conftest import require_paths, require_tools

SCRIPT = Path(__file__).resolve().parent.parent / "data" / "make_archives.sh"
NEEDED = ("umoci", "skopeo", "gzip")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tools(*NEEDED)
    out = tmp_path_factory.mktemp("made")
    subprocess.run(["sh", str(SCRIPT), str(out)], check=True, capture_output=True, timeout=120)
    return out


@pytest.fixture
def cache(tmp_path: Path) -> DiskCache:
    return DiskCache(tmp_path / "cache")


@pytest.fixture
def opened(made: Path, cache: DiskCache, request: pytest.FixtureRequest) -> Iterator[Source]:
    path = made / request.param
    require_paths(path)  # the podman-made archives need podman (scripts/install-deps)
    source = open_source(str(path), cache)
    yield source
    source.close()


def blob(source: Source, digest: str) -> bytes:
    reader = source.open_blob(digest_mod.parse(digest))
    try:
        return reader.pread(0, reader.size + 1)
    finally:
        reader.close()


def refs(source: Source) -> dict[str, dict[str, object]]:
    index = json.loads(source.index_bytes())
    out = {}
    for entry in index["manifests"]:
        ann = entry.get("annotations") or {}
        out[ann.get(CONTAINERD_NAME) or ann.get(REF_NAME) or entry["digest"]] = entry
    return out


def closure(source: Source, entry: dict[str, object]) -> dict[str, bytes]:
    """Manifest, config and layers of an index entry, by digest."""
    manifest = blob(source, str(entry["digest"]))
    parsed = documents.parse_manifest(manifest, "test")
    out = {str(entry["digest"]): manifest}
    for desc in [parsed.config, *parsed.layers]:
        data = blob(source, str(desc.digest))
        assert len(data) == desc.size
        assert desc.digest.matches(data)
        out[str(desc.digest)] = data
    return out


def oracle_blob(ref: Path, digest: str) -> bytes:
    hex_ = digest.split(":", 1)[1]
    path = ref / "blobs" / "sha256" / hex_
    return (path if path.exists() else ref / hex_).read_bytes()


OCI_ARCHIVES = ["oci.tar", "oci.tar.gz", "podman-oci.tar", "podman-oci.tar.gz"]
DOCKER_ARCHIVES = ["docker.tar", "docker.tar.gz"]


@pytest.mark.parametrize("opened", OCI_ARCHIVES, indirect=True)
def test_oci_archive_equals_layout_copy(opened: Source, made: Path) -> None:
    assert opened.kind == "oci-archive"
    assert not opened.writable
    ref = made / ("ref-podman-oci" if "podman" in opened.path else "ref-oci")
    layout_index = json.loads((ref / "index.json").read_text())
    assert len(refs(opened)) == 1
    (entry,) = refs(opened).values()
    assert entry["digest"] == layout_index["manifests"][0]["digest"]
    for digest, data in closure(opened, entry).items():
        assert data == oracle_blob(ref, digest), digest
        assert not opened.synthesized(digest_mod.parse(digest))
    assert opened.oci_layout_bytes() == (ref / "oci-layout").read_bytes()


@pytest.mark.parametrize("opened", DOCKER_ARCHIVES, indirect=True)
def test_docker_archive_equals_dir_copy(opened: Source, made: Path) -> None:
    assert opened.kind == "docker-archive"
    names = refs(opened)
    assert set(names) == {"example.com/app:1", "docker.io/library/busybox:latest"}
    entries = list(names.values())
    assert entries[0]["digest"] == entries[1]["digest"]
    assert entries[0]["annotations"] == {
        CONTAINERD_NAME: "example.com/app:1",
        REF_NAME: "example.com/app:1",
    }
    oracle = json.loads((made / "ref-docker" / "manifest.json").read_text())
    blobs = closure(opened, entries[0])
    manifest_digest = str(entries[0]["digest"])
    assert opened.synthesized(digest_mod.parse(manifest_digest))
    manifest = json.loads(blobs.pop(manifest_digest))
    assert manifest["mediaType"] == mt.OCI_MANIFEST  # as skopeo copy docker-archive: oci: writes
    assert manifest["config"] == {**oracle["config"], "mediaType": mt.OCI_CONFIG}
    assert [x["digest"] for x in manifest["layers"]] == [x["digest"] for x in oracle["layers"]]
    assert {x["mediaType"] for x in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar"
    }
    for digest, data in blobs.items():
        assert data == oracle_blob(made / "ref-docker", digest), digest
        assert not opened.synthesized(digest_mod.parse(digest))
    assert set(opened.list_blobs()) == {digest_mod.parse(d) for d in [manifest_digest, *blobs]}


@pytest.mark.parametrize("opened", ["podman-docker.tar", "podman-docker.tar.gz"], indirect=True)
def test_podman_multi_image_docker_archive(opened: Source, made: Path) -> None:
    names = refs(opened)
    assert set(names) == {"example.org/base:1", "example.org/app:2"}
    layout_index = json.loads((made / "layout" / "index.json").read_text())
    by_tag = {m["annotations"][REF_NAME]: m["digest"] for m in layout_index["manifests"]}
    for name, tag in (("example.org/base:1", "base"), ("example.org/app:2", "app")):
        blobs = closure(opened, names[name])
        manifest = json.loads(blobs[str(names[name]["digest"])])
        # Layers are the uncompressed form of the umoci layout's gzip layers.
        source_manifest = json.loads(oracle_blob(made / "layout", by_tag[tag]))
        assert len(manifest["layers"]) == len(source_manifest["layers"])


def test_synthesized_manifest_matches_importer(
    made: Path, cache: DiskCache, tmp_path: Path
) -> None:
    """Mounting and importing the same docker-save give the same manifest digests."""
    layout = tmp_path / "layout"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    imp = ArchiveImport(str(layout), "docker.tar")
    imp.feed((made / "docker.tar").read_bytes())
    try:
        imported = imp.finish().entries
    finally:
        imp.discard()
    source = open_source(str(made / "docker.tar"), cache)
    try:
        mounted = json.loads(source.index_bytes())["manifests"]
    finally:
        source.close()
    assert sorted(json.dumps(e, sort_keys=True) for e in mounted) == sorted(
        json.dumps(e, sort_keys=True) for e in imported
    )


@pytest.mark.parametrize("name", ["oci.tar", "docker.tar"])
def test_gzip_and_plain_serve_the_same_bytes(made: Path, cache: DiskCache, name: str) -> None:
    plain = open_source(str(made / name), cache)
    gz = open_source(str(made / f"{name}.gz"), cache)
    try:
        assert plain.index_bytes() == gz.index_bytes()
        assert list(plain.list_blobs()) == list(gz.list_blobs())
        for digest in plain.list_blobs():
            a, b = plain.open_blob(digest), gz.open_blob(digest)
            assert a.size == b.size == plain.blob_size(digest)
            # random access, not only from the start
            for off in (0, a.size // 3, max(0, a.size - 7)):
                assert a.pread(off, 5000) == b.pread(off, 5000)
    finally:
        plain.close()
        gz.close()
