"""Untag, retag, blob removal, gc and init on layout directories (no mount)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from ocifs.errors import AlreadyExists, BlobUnavailable, InUse, InvalidInput, NotEmpty, NotFound
from ocifs.importer import indexjson
from ocifs.layout import collect, init, reach, refs
from tests.conftest import FIXTURES
from tests.helpers import layoutcheck

REF = "org.opencontainers.image.ref.name"
CTR = "io.containerd.image.name"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
OLD = time.time() - 7200  # older than the default grace period


class Layout:
    """A layout on disk built blob by blob (all blobs aged past the grace period)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        assert init.init_layout(str(path))

    def blob(self, data: bytes, media_type: str = "application/octet-stream",
             age: float = OLD) -> dict[str, Any]:
        hex_ = hashlib.sha256(data).hexdigest()
        p = self.path / "blobs/sha256" / hex_
        p.write_bytes(data)
        os.utime(p, (age, age))
        return {"mediaType": media_type, "digest": f"sha256:{hex_}", "size": len(data)}

    def image(self, seed: str, subject: dict[str, Any] | None = None,
              age: float = OLD) -> dict[str, Any]:
        config = self.blob(json.dumps({"seed": seed}).encode(),
                           "application/vnd.oci.image.config.v1+json", age)
        layer = self.blob(f"layer {seed}".encode(), "application/vnd.oci.image.layer.v1.tar", age)
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config,
                               "layers": [layer]}
        if subject is not None:
            doc["subject"] = subject
        return self.blob(json.dumps(doc).encode(), MANIFEST, age)

    def index(self, children: list[dict[str, Any]]) -> dict[str, Any]:
        return self.blob(json.dumps({"schemaVersion": 2, "mediaType": INDEX,
                                     "manifests": children}).encode(), INDEX)

    def tag(self, *entries: dict[str, Any]) -> None:
        doc = json.loads((self.path / "index.json").read_bytes())
        doc["manifests"] += list(entries)
        (self.path / "index.json").write_text(json.dumps(doc))

    def entries(self) -> list[dict[str, Any]]:
        return json.loads((self.path / "index.json").read_bytes())["manifests"]

    def names(self) -> list[str]:
        return [indexjson.entry_name(e) or "" for e in self.entries()]

    def present(self) -> set[str]:
        return {f"sha256:{n}" for n in os.listdir(self.path / "blobs/sha256")}


def named(desc: dict[str, Any], name: str, key: str = REF, **more: str) -> dict[str, Any]:
    return {**desc, "annotations": {key: name, **more}}


@pytest.fixture
def lay(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "layout")


def test_untag_removes_exactly_the_entries_of_that_name(lay: Layout) -> None:
    a, b = lay.image("a"), lay.image("b")
    lay.tag(named(a, "x"), named(b, "x/y"), named(b, "x"), named(a, "xy"), a)
    before = lay.present()
    assert refs.untag(str(lay.path), ("x",), 5) == 2  # both duplicates
    assert lay.names() == ["x/y", "xy", ""]
    assert lay.present() == before  # blobs stay until gc
    assert refs.untag(str(lay.path), ("x", "y"), 5) == 1
    layoutcheck.check(str(lay.path))
    snapshot = (lay.path / "index.json").read_bytes()
    with pytest.raises(NotFound):
        refs.untag(str(lay.path), ("x",), 5)
    assert (lay.path / "index.json").read_bytes() == snapshot


def test_retag_renames_keeps_position_and_annotations(lay: Layout) -> None:
    a, b = lay.image("a"), lay.image("b")
    lay.tag(named(a, "app:1", extra="kept"), named(b, "other"))
    assert refs.retag(str(lay.path), ("app:1",), ("app:2",), replace=True, lock_timeout=5) == 1
    assert lay.entries()[0]["annotations"] == {REF: "app:2", "extra": "kept"}
    assert lay.names() == ["app:2", "other"]
    # containerd style: the full name moves, the OCI tag annotation follows
    lay.tag(named(a, "docker.io/library/busybox:1.36", CTR, **{REF: "1.36"}))
    refs.retag(str(lay.path), ("docker.io", "library", "busybox:1.36"),
               ("docker.io", "library", "busybox:stable"), replace=True, lock_timeout=5)
    assert lay.entries()[-1]["annotations"] == {CTR: "docker.io/library/busybox:stable",
                                               REF: "stable"}


def test_retag_replace_noreplace_nested_and_refusals(lay: Layout) -> None:
    a, b, c = lay.image("a"), lay.image("b"), lay.image("c")
    lay.tag(named(a, "a"), named(b, "b"), named(c, "g/1"), named(c, "g/2/x"))
    with pytest.raises(AlreadyExists):
        refs.retag(str(lay.path), ("a",), ("b",), replace=False, lock_timeout=5)
    assert refs.retag(str(lay.path), ("a",), ("b",), replace=True, lock_timeout=5) == 1
    assert lay.names() == ["b", "g/1", "g/2/x"]
    assert lay.entries()[0]["digest"] == a["digest"]  # b now names a's image
    # a directory of refs moves whole, as mv moves a directory
    assert refs.retag(str(lay.path), ("g",), ("h",), replace=False, lock_timeout=5) == 2
    assert lay.names() == ["b", "h/1", "h/2/x"]
    with pytest.raises(NotEmpty):  # rename(2) never replaces a non-empty directory
        refs.retag(str(lay.path), ("b",), ("h",), replace=True, lock_timeout=5)
    with pytest.raises(InvalidInput):
        refs.retag(str(lay.path), ("h",), ("h", "2", "y"), replace=True, lock_timeout=5)
    with pytest.raises(NotFound):
        refs.retag(str(lay.path), ("nope",), ("z",), replace=True, lock_timeout=5)
    layoutcheck.check(str(lay.path))


def test_gc_follows_nested_indexes_and_untagged_entries(lay: Layout) -> None:
    a, b, c, gone = lay.image("a"), lay.image("b"), lay.image("c"), lay.image("gone")
    inner = lay.index([a])
    outer = lay.index([inner, b])
    lay.tag(named(outer, "multi"), c)  # c: untagged, still a root
    stray = lay.blob(b"stray")
    result = collect.collect(str(lay.path))
    removed = {str(blob.digest) for blob in result.removed}
    assert stray["digest"] in removed and gone["digest"] in removed
    assert len(removed) == 4  # stray + gone's manifest, config and layer
    assert result.freed == sum(b.size for b in result.removed)
    layoutcheck.check(str(lay.path))
    # what is left is exactly the closure of index.json (independent checker's view)
    for desc in (outer, inner, a, b, c):
        assert desc["digest"] in lay.present()
    assert collect.collect(str(lay.path)).removed == []


def test_referrers_stay_with_their_subject(lay: Layout) -> None:
    a, b = lay.image("a"), lay.image("b")
    sig = lay.image("sig-of-a", subject=a)
    sig_of_sig = lay.image("sig-of-sig", subject=sig)
    sbom_b = lay.image("sbom-of-b", subject=b)
    lay.tag(named(a, "a"))  # b is not reachable: its referrer goes with it
    removed = {str(x.digest) for x in collect.collect(str(lay.path)).removed}
    assert sig["digest"] not in removed and sig_of_sig["digest"] not in removed
    assert {b["digest"], sbom_b["digest"]} <= removed
    # a referrer does not keep its subject: untagging a releases a and its referrers
    refs.untag(str(lay.path), ("a",), 5)
    collect.collect(str(lay.path))
    assert lay.present() == set()


def test_grace_period_spares_fresh_blobs_and_what_they_reference(lay: Layout) -> None:
    old_layer = lay.blob(b"old layer")
    config = lay.blob(b"{}", "application/vnd.oci.image.config.v1+json")
    fresh = lay.blob(json.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "config": config,
                                 "layers": [old_layer]}).encode(), MANIFEST, age=time.time())
    old_stray = lay.blob(b"old stray")
    dry = collect.collect(str(lay.path), dry_run=True)
    assert [str(b.digest) for b in dry.removed] == [old_stray["digest"]]
    assert old_stray["digest"] in lay.present()  # dry run: nothing removed
    result = collect.collect(str(lay.path))
    assert {str(b.digest) for b in result.kept_young} == {
        fresh["digest"], old_layer["digest"], config["digest"]}
    assert collect.collect(str(lay.path), grace=0).removed  # --grace 0: everything goes
    assert lay.present() == set()


def test_gc_refuses_when_index_closure_is_unknown(lay: Layout) -> None:
    a = lay.image("a")
    stray = lay.blob(b"stray")
    lay.tag(named(a, "a"))
    (lay.path / "blobs/sha256" / a["digest"][7:]).unlink()
    with pytest.raises(reach.Unreachable, match="missing"):
        collect.collect(str(lay.path))
    assert stray["digest"] in lay.present()  # nothing removed


def test_remove_blob_refuses_reachable_and_names_the_ref(lay: Layout) -> None:
    a = lay.image("a")
    lay.tag(named(lay.index([a]), "multi"))
    config = json.loads((lay.path / "blobs/sha256" / a["digest"][7:]).read_bytes())["config"]
    from ocifs.model.digest import parse

    with pytest.raises(InUse, match="ref 'multi'"):
        collect.remove_blob(str(lay.path), parse(config["digest"]), 5)
    refs.untag(str(lay.path), ("multi",), 5)
    assert collect.remove_blob(str(lay.path), parse(config["digest"]), 5) == config["size"]
    with pytest.raises(NotFound):
        collect.remove_blob(str(lay.path), parse(config["digest"]), 5)


def test_import_merge_refuses_entries_whose_blobs_vanished(lay: Layout) -> None:
    a = lay.image("a")
    layer = json.loads((lay.path / "blobs/sha256" / a["digest"][7:]).read_bytes())["layers"][0]
    (lay.path / "blobs/sha256" / layer["digest"][7:]).unlink()  # as a concurrent gc would
    with pytest.raises(BlobUnavailable, match="removed while this import ran"):
        indexjson.update(str(lay.path), [named(a, "a")], 5, check_present=True)
    assert lay.entries() == []


def test_init_creates_resumes_and_refuses(tmp_path: Path) -> None:
    target = tmp_path / "new"
    assert init.init_layout(str(target))
    assert json.loads((target / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    assert json.loads((target / "index.json").read_bytes())["manifests"] == []
    assert (target / "blobs/sha256").is_dir()
    assert sorted(os.listdir(target)) == ["blobs", "index.json", "oci-layout"]
    assert not init.init_layout(str(target))  # already a layout: left alone
    layoutcheck.check(str(target))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(InvalidInput, match="not empty and not an OCI image layout"):
        init.init_layout(str(other))
    assert os.listdir(other) == ["notes.txt"]
    crashed = tmp_path / "crashed"  # killed after index.json, before oci-layout
    (crashed / "blobs/sha256").mkdir(parents=True)
    (crashed / "index.json").write_bytes(init.EMPTY_INDEX)
    assert init.init_layout(str(crashed))
    layoutcheck.check(str(crashed))


GGCR = FIXTURES / "go-containerregistry/pkg/v1/layout/testdata"


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [  # go-containerregistry's own gc tests (pkg/v1/layout/gc_test.go) on its fixtures
        ("test_gc_index",
         ["sha256:492b89b9dd3cda4596f94916d17f6901455fb8bd7f4c5a2a90df8d39c90f48a0"]),
        ("test_index_one_image", []),
        ("test_index_media_type", []),
    ],
)
def test_gc_agrees_with_go_containerregistry(tmp_path: Path, fixture: str,
                                             expected: list[str]) -> None:
    layout = tmp_path / fixture
    shutil.copytree(GGCR / fixture, layout)
    before = layoutcheck.blobs(str(layout))
    result = collect.collect(str(layout), grace=0)
    assert sorted(str(b.digest) for b in result.removed) == expected
    assert layoutcheck.blobs(str(layout)) == before - set(expected)
