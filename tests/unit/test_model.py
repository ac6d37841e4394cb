"""The FUSE-free model: digests, descriptors, documents, naming, catalog, cache."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocifs.cache import DiskCache
from ocifs.errors import InvalidInput, LimitExceeded, Unsupported
from ocifs.model import descriptor, digest, documents, naming
from ocifs.model.descriptor import Platform
from tests.conftest import FIXTURES

MANIFESTS = FIXTURES / "containers-image/manifest/fixtures"
HEX = "a" * 64


def test_digest_parse_accepts_registered_algorithms() -> None:
    d = digest.parse(f"sha256:{HEX}")
    assert (d.algorithm, d.hex, str(d), d.path_fragment) == (
        "sha256",
        HEX,
        f"sha256:{HEX}",
        f"sha256/{HEX}",
    )
    assert digest.parse("sha512:" + "0" * 128).algorithm == "sha512"
    assert digest.EMPTY_SHA256.matches(b"")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("sha256:xyz", InvalidInput),
        ("sha256:" + "A" * 64, InvalidInput),
        ("sha256:" + "a" * 63, InvalidInput),
        ("sha256:../../etc/passwd", InvalidInput),
        ("md5:" + "a" * 32, Unsupported),
        ("", InvalidInput),
        (None, InvalidInput),
        ("sha256", InvalidInput),
    ],
)
def test_digest_parse_rejects(text: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        digest.parse(text)


@given(st.text())
def test_digest_parse_never_yields_an_unsafe_path(text: str) -> None:
    try:
        d = digest.parse(text)
    except (InvalidInput, Unsupported):
        return
    assert "/" not in d.hex and ".." not in d.path_fragment


def test_descriptor_parse_and_embedded_data() -> None:
    data = b'{"a": 1}'
    dig = "sha256:" + hashlib.sha256(data).hexdigest()
    obj = {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": dig,
        "size": len(data),
        "data": base64.b64encode(data).decode(),
        "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
        "annotations": {"k": "v"},
    }
    desc = descriptor.parse(obj, "here")
    assert desc.data == data and desc.platform == Platform("linux", "arm64", "v8")
    bad = descriptor.parse({**obj, "data": base64.b64encode(b"other!!!").decode()}, "here")
    assert bad.data is None  # unverifiable inline bytes are never used
    with pytest.raises(InvalidInput, match="here: size must be a non-negative integer"):
        descriptor.parse({**obj, "size": -1}, "here")
    with pytest.raises(InvalidInput, match="here: invalid mediaType"):
        descriptor.parse({**obj, "mediaType": "nonsense"}, "here")
    with pytest.raises(Unsupported, match="here: unsupported digest algorithm"):
        descriptor.parse({**obj, "digest": "md5:" + "0" * 32}, "here")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ociv1.everything.json", "manifest"),
        ("ociv1.encrypted.manifest.json", "manifest"),
        ("ociv1.zstd.manifest.json", "manifest"),
        ("ociv1.nondistributable.gzip.manifest.json", "manifest"),
        ("v2s2.everything.json", "manifest"),
        ("v2s2.uncompressed.manifest.json", "manifest"),
    ],
)
def test_documents_from_containers_image_fixtures(name: str, kind: str) -> None:
    data = (MANIFESTS / name).read_bytes()
    if kind == "index":
        pytest.fail("no index fixtures here")
    if kind == "manifest":
        m = documents.parse_manifest(data, name)
        assert m.config.size >= 0 and isinstance(m.layers, list)
    else:
        i = documents.parse_index(data, name)
        assert i.manifests


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("v2s1.everything.json", Unsupported, "schema 1"),
        ("non-json.manifest.json", InvalidInput, "invalid JSON"),
    ],
)
def test_documents_refused(name: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        documents.parse_manifest((MANIFESTS / name).read_bytes(), name)


def test_unknown_layer_type_is_an_artifact_not_an_image() -> None:
    name = "ociv1.invalid.mediatype.manifest.json"
    m = documents.parse_manifest((MANIFESTS / name).read_bytes(), name)
    assert not m.is_image


def test_index_documents_of_the_regclient_layout() -> None:
    layout = FIXTURES / "regclient/testdata/testrepo"
    top = documents.parse_index((layout / "index.json").read_bytes(), "index.json")
    kinds = {documents.kind_of(d.media_type) for d in top.manifests}
    assert {"index", "manifest"} <= kinds
    for d in top.manifests:
        blob = layout / "blobs" / d.digest.path_fragment
        if documents.kind_of(d.media_type) == "index" and blob.exists():
            assert documents.parse_index(blob.read_bytes(), str(d.digest)).manifests


def test_documents_ambiguity_and_limits() -> None:
    both = json.dumps({"schemaVersion": 2, "manifests": [], "layers": []}).encode()
    with pytest.raises(InvalidInput, match="a manifest, not an index"):
        documents.parse_index(both, "x")
    with pytest.raises(InvalidInput, match="an index, not a manifest"):
        documents.parse_manifest(
            json.dumps({"schemaVersion": 2, "manifests": [], "config": {}}).encode(), "x"
        )
    with pytest.raises(LimitExceeded):
        documents.load_json(b" " * (documents.MAX_DOCUMENT_BYTES + 1), "big")
    with pytest.raises(InvalidInput, match="nested too deeply"):
        documents.load_json(b"[" * 100_000 + b"]" * 100_000, "deep")
    assert documents.parse_oci_layout(b'{"imageLayoutVersion": "1.0.0"}', "o") == "1.0.0"


def test_duplicate_json_keys_warn(caplog: pytest.LogCaptureFixture) -> None:
    assert documents.load_json(b'{"a": 1, "a": 2}', "dup.json") == {"a": 2}
    assert "dup.json: duplicate JSON key 'a'" in caplog.text


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("busybox:latest", ("busybox:latest",)),
        ("docker.io/library/busybox:1", ("docker.io", "library", "busybox:1")),
        ("a b/ü", ("a b", "ü")),
        ("", None),
        ("a//b", None),
        ("../x", None),
        ("a/.", None),
        ("/abs", None),
        ("nul\0x", None),
        ("x" * 256, None),
    ],
)
def test_ref_path(name: str, path: tuple[str, ...] | None) -> None:
    assert naming.ref_path(name) == path


def test_platform_dir() -> None:
    assert naming.platform_dir(Platform("linux", "arm", "v7"), HEX) == "linux-arm-v7"
    assert naming.platform_dir(Platform("linux", "amd64"), HEX) == "linux-amd64"
    assert naming.platform_dir(None, HEX) == "unknown-aaaaaaaaaaaa"


def test_disk_cache_detects_corruption_and_evicts(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, limit_bytes=10_000)
    cache.put("k", "one", b"x" * 4000)
    assert cache.get("k", "one") == b"x" * 4000
    path = cache.path_for("k", "one")
    path.write_bytes(path.read_bytes()[:-1])  # truncated
    assert cache.get("k", "one") is None and not path.exists()
    for i in range(5):
        cache.put("k", f"e{i}", b"y" * 3000)
    present = [i for i in range(5) if cache.get("k", f"e{i}") is not None]
    assert len(present) == 3 and present == [2, 3, 4]


def test_disk_cache_counts_itself_once_then_on_demand(tmp_path: Path, monkeypatch) -> None:
    """Adding entries under the limit does not stat the whole cache each time; an
    entry another process added is counted at the next recount."""
    import ocifs.cache as cache_mod

    walks: list[str] = []
    real_walk = os.walk
    monkeypatch.setattr(cache_mod.os, "walk", lambda top: walks.append(str(top)) or real_walk(top))
    cache = DiskCache(tmp_path, limit_bytes=100_000)
    for i in range(20):
        cache.put("k", f"e{i}", b"z" * 1000)
    assert len(walks) == 1
    other = DiskCache(tmp_path, limit_bytes=100_000)  # a second daemon on the same cache
    for i in range(60):
        other.put("k", f"o{i}", b"o" * 1000)
    for i in range(60):  # a clear LRU order (the clock may not tell these puts apart)
        os.utime(cache.path_for("k", f"e{i}") if i < 20 else cache.path_for("k", f"o{i - 20}"),
                 (1_000 + i, 1_000 + i))
    monkeypatch.setattr(cache_mod, "RECOUNT_S", 0.0)
    cache.put("k", "last", b"l" * 1000)  # recounts: 81 entries of 1,044 bytes fit
    assert cache.path_for("k", "e0").exists() and cache.path_for("k", "o0").exists()
    cache.put("k", "big", b"b" * 30_000)  # now over the limit: the oldest go
    assert not cache.path_for("k", "e0").exists() and cache.path_for("k", "big").exists()
    assert sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file()) <= 100_000


def test_only_the_fuse_edge_imports_pyfuse3() -> None:
    """model/, sources/, layers/, tree/, catalog and cache work with pyfuse3 unavailable."""
    code = (
        "import sys; sys.modules['pyfuse3'] = None\n"
        "import ocifs.model.documents, ocifs.sources.layout_dir, ocifs.catalog, ocifs.cache\n"
        "import ocifs.tree.tree, ocifs.layers.store\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_catalog_prefers_the_full_containerd_name(tmp_path: Path, caplog) -> None:
    """containerd exports carry both annotations; the full image name is shown."""
    import shutil

    from ocifs import catalog
    from ocifs.sources.layout_dir import LayoutDir

    src = FIXTURES / "go-containerregistry/pkg/v1/layout/testdata/test_index_one_image"
    layout = tmp_path / "layout"
    shutil.copytree(src, layout)
    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]
    entry["annotations"] = {
        "io.containerd.image.name": "docker.io/library/busybox:1.36",
        "org.opencontainers.image.ref.name": "1.36",
    }
    (layout / "index.json").write_text(json.dumps(index))
    cat = catalog.build(LayoutDir(str(layout)))
    assert list(cat.refs) == [("docker.io", "library", "busybox:1.36")]
