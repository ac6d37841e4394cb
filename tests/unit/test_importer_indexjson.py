"""index.json merging under the layout lock, across threads and processes; closures."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocifs.errors import LockTimeout, SizeMismatch
from ocifs.importer import closure, indexjson
from ocifs.importer.staging import LOCK_FILE
from ocifs.model import descriptor as descriptor_mod
from ocifs.model.digest import of_bytes

REF = "org.opencontainers.image.ref.name"
CTR = "io.containerd.image.name"


def entry(n: int, name: str | None = None, key: str = REF) -> dict[str, Any]:
    e: dict[str, Any] = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": str(of_bytes(str(n).encode())),
        "size": n,
    }
    if name is not None:
        e["annotations"] = {key: name}
    return e


@pytest.fixture
def layout(tmp_path: Path) -> str:
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (tmp_path / "index.json").write_text('{"schemaVersion":2,"manifests":null}')
    return str(tmp_path)


def manifests(layout: str) -> list[dict[str, Any]]:
    return json.loads(Path(layout, "index.json").read_bytes())["manifests"]


def test_same_name_replaced_new_added_identical_noop() -> None:
    old = [entry(1, "a"), entry(2, "b"), entry(3)]
    merged = indexjson.merge(old, [entry(4, "a"), entry(5, "c")])
    assert merged == [entry(2, "b"), entry(3), entry(4, "a"), entry(5, "c")]
    assert indexjson.merge(merged, [entry(3), entry(2, "b")]) is None


def test_containerd_name_wins_over_ref_name() -> None:
    e = entry(1, "docker.io/library/x:1", CTR)
    e["annotations"][REF] = "1"
    assert indexjson.entry_name(e) == "docker.io/library/x:1"
    assert indexjson.merge([e], [entry(2, "1")]) == [e, entry(2, "1")]


@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from([None, "a", "b", "c"])), max_size=30))
def test_merge_matches_a_set_model(ops: list[tuple[int, str | None]]) -> None:
    current: list[dict[str, Any]] = []
    named: dict[str, dict[str, Any]] = {}
    unnamed: list[dict[str, Any]] = []
    for n, name in ops:
        e = entry(n, name)
        current = indexjson.merge(current, [e]) or current
        if name is None:
            if e not in unnamed:
                unnamed.append(e)
        else:
            named[name] = e
    names = [indexjson.entry_name(e) for e in current if indexjson.entry_name(e)]
    assert len(names) == len(set(names))  # no duplicate names
    assert {indexjson.entry_name(e): e for e in current if indexjson.entry_name(e)} == named
    assert [e for e in current if indexjson.entry_name(e) is None] == unnamed


def test_update_rewrites_only_on_change(layout: str) -> None:
    assert indexjson.update(layout, [entry(1, "a")], 5.0)
    stamp = os.stat(Path(layout, "index.json")).st_mtime_ns
    assert not indexjson.update(layout, [entry(1, "a")], 5.0)
    assert os.stat(Path(layout, "index.json")).st_mtime_ns == stamp
    assert manifests(layout) == [entry(1, "a")]


def test_update_waits_then_times_out(layout: str) -> None:
    import fcntl

    fd = os.open(os.path.join(layout, LOCK_FILE), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(LockTimeout):
            indexjson.update(layout, [entry(1, "a")], 0.3)
    finally:
        os.close(fd)
    assert manifests(layout) is None  # untouched


def _writer(args: tuple[str, int]) -> None:
    layout, worker = args
    for rnd in range(20):
        indexjson.update(layout, [entry(worker * 100 + rnd, f"w{worker}/r{rnd}")], 30.0)


def test_concurrent_processes_never_lose_entries(layout: str) -> None:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(8) as pool:
        pool.map(_writer, [(layout, w) for w in range(8)])
    names = [indexjson.entry_name(e) for e in manifests(layout)]
    assert sorted(names) == sorted(f"w{w}/r{r}" for w in range(8) for r in range(20))
    assert os.listdir(os.path.join(layout, ".ocifs-staging")) == []


def _blob(layout: str, data: bytes) -> dict[str, Any]:
    d = of_bytes(data)
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    Path(layout, "blobs", "sha256", d.hex).write_bytes(data)
    return {"mediaType": "application/octet-stream", "digest": str(d), "size": len(data)}


def test_closure_walks_index_manifest_config_layers(layout: str) -> None:
    config = _blob(layout, b"{}")
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    layer_data = b"layer"
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar",
             "digest": str(of_bytes(layer_data)), "size": len(layer_data)}
    manifest = json.dumps({"schemaVersion": 2, "config": config, "layers": [layer]}).encode()
    m = _blob(layout, manifest)
    m["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    index = _blob(layout, json.dumps({"schemaVersion": 2, "manifests": [m]}).encode())
    index["mediaType"] = "application/vnd.oci.image.index.v1+json"
    view = closure.BlobView(layout)
    desc = descriptor_mod.parse(index, "t")
    assert closure.missing(view, desc) == {of_bytes(layer_data)}
    _blob(layout, layer_data)
    assert closure.missing(view, desc) == set()
    bad = dict(index, size=index["size"] + 1)
    with pytest.raises(SizeMismatch):
        closure.missing(view, descriptor_mod.parse(bad, "t"))
