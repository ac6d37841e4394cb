"""Whiteout merging: hand cases, third-party fixtures, and Hypothesis against a dict model."""

from __future__ import annotations

import io
import posixpath
import sys
import tarfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))
import tarbuilder as tb

from ocifs.codec.limits import DEFAULT
from ocifs.layers.entry import Kind, LayerIndex
from ocifs.layers.merge import MergedTree, merge
from ocifs.layers.names import normalise
from ocifs.layers.tarindex import IndexBuilder
from ocifs.layers.tarwalk import ChunkStream, walk
from tests.conftest import FIXTURES


def index_of(data: bytes) -> LayerIndex:
    builder = IndexBuilder("t", DEFAULT)
    for m in walk(ChunkStream(iter([data])), DEFAULT, "t"):
        builder.add(m)
    return builder.finish(True, None, len(data))


def listing(tree: MergedTree, indexes: list[LayerIndex]) -> dict[str, tuple[str, bytes | str]]:
    """path -> (kind, content or link) of the merged tree."""
    out: dict[str, tuple[str, bytes | str]] = {}
    stack = [(0, "")]
    while stack:
        node, path = stack.pop()
        for name, child in tree.children(node).items():
            p = f"{path}/{name}" if path else name
            layer, idx = tree.source(child)
            e = indexes[layer].entries[idx]
            out[p] = (e.kind.name, e.link if e.kind is Kind.SYMLINK else str(layer))
            if tree.is_dir(child):
                stack.append((child, p))
    return out


def test_whiteouts_opaque_and_type_changes() -> None:
    l0 = tb.build([
        tb.File("a/keep", b"k"), tb.File("a/gone", b"g"), tb.File("o/lower", b"l"),
        tb.Dir("d", mode=0o700), tb.File("d/x", b"x"), tb.File("f", b"f"), tb.Dir("u", mode=0o700),
    ])
    l1 = tb.build([
        tb.File("a/.wh.gone"), tb.File("o/.wh..wh..opq"), tb.File("o/upper", b"u"),
        tb.File("d", b"file over dir"), tb.Dir("f", mode=0o711), tb.File("f/in", b"i"),
        tb.File("u/new", b"n"), tb.File(".wh..wh.plnk"),
        tb.File(".wh.again"), tb.File("again", b"same layer survives"),
    ])
    idx = [index_of(l0), index_of(l1)]
    tree = merge(idx)
    got = listing(tree, idx)
    assert set(got) == {"a", "a/keep", "o", "o/upper", "d", "f", "f/in", "u", "u/new", "again"}
    assert got["d"] == ("FILE", "1") and got["f"] == ("DIR", "1")
    # u is synthesised in layer 1: the real dir attributes of layer 0 are kept.
    layer, entry = tree.source(tree.lookup("u") or 0)
    assert (layer, idx[layer].entries[entry].mode) == (0, 0o700)


def test_regclient_layer_wh_fixture() -> None:
    base = FIXTURES / "regclient/testdata"
    idx = [index_of((base / name).read_bytes()) for name in ("layer.tar", "layer-wh.tar")]
    wh = idx[1]
    names = {wh.path(i) for i in range(1, len(wh.entries))}
    assert any(n.endswith(".wh..wh..opq") for n in names)  # shown as-is in the layer tree
    got = listing(merge(idx), idx)
    assert not any(posixpath.basename(p).startswith(".wh.") for p in got)
    assert "layer2.txt" not in got


def test_go_containerregistry_whiteout_image() -> None:
    path = FIXTURES / "go-containerregistry/pkg/v1/mutate/testdata/whiteout_image.tar"
    with tarfile.open(path) as tf:
        import json

        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        layers = []
        for name in manifest[0]["Layers"]:
            raw = tf.extractfile(name).read()  # type: ignore[union-attr]
            if raw[:2] == b"\x1f\x8b":
                import gzip

                raw = gzip.decompress(raw)
            layers.append(index_of(raw))
    got = listing(merge(layers), layers)
    with tarfile.open(path) as tf:
        every = set()
        for name in manifest[0]["Layers"]:
            raw = tf.extractfile(name).read()  # type: ignore[union-attr]
            if raw[:2] == b"\x1f\x8b":
                import gzip

                raw = gzip.decompress(raw)
            with tarfile.open(fileobj=io.BytesIO(raw)) as lt:
                every |= {normalise(m.name)[0] for m in lt}
    whited = {posixpath.join(posixpath.dirname(n), posixpath.basename(n)[4:])
              for n in every if posixpath.basename(n).startswith(".wh.")}
    assert whited and not (whited & set(got))


# ---- Hypothesis: the merge equals an independent dict model of the OCI rules ----

SEGMENTS = st.sampled_from(["a", "b", "c", ".wh.a", ".wh.b", ".wh..wh..opq"])
PATHS = st.lists(SEGMENTS, min_size=1, max_size=3).map("/".join)
KINDS = st.sampled_from(["file", "dir", "link"])
LAYER = st.lists(st.tuples(PATHS, KINDS), max_size=8)


def model_layer(members: list[tuple[str, str]]) -> tuple[dict[str, str], set[str]]:
    """Per-layer tree as an extractor builds it: path -> kind, parents implied;
    and which directories were only implied (synthesised). A whiteout below an
    existing non-directory is dropped (nothing below a file to white out)."""
    tree: dict[str, str] = {}
    synth: set[str] = set()
    for path, kind in members:
        parts = path.split("/")
        if parts[-1].startswith(".wh."):
            below_file = False
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent not in tree:
                    break
                if tree[parent] != "dir":
                    below_file = True
                    break
            if below_file:
                continue
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if tree.get(parent) != "dir":
                for p in [p for p in tree if p.startswith(parent + "/")]:
                    del tree[p]
                tree[parent] = "dir"
                synth.add(parent)
        if kind != "dir" or tree.get(path) != "dir":
            for p in [p for p in tree if p.startswith(path + "/")]:
                del tree[p]
        tree[path] = kind if tree.get(path) != "dir" or kind != "dir" else "dir"
        if kind == "dir":
            synth.discard(path)
    return tree, synth & {p for p, k in tree.items() if k == "dir"}


def model_merge(layers: list[tuple[dict[str, str], set[str]]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for layer, synth in layers:
        for path in sorted(layer, key=lambda p: p.count("/")):
            d, base = posixpath.split(path)
            if base == ".wh..wh..opq":
                for p in [p for p in merged if p.startswith(d + "/" if d else "")]:
                    del merged[p]
            elif base.startswith(".wh."):
                victim = posixpath.join(d, base[4:])
                for p in [p for p in merged if p == victim or p.startswith(victim + "/")]:
                    del merged[p]
        skipped: list[str] = []
        for path in sorted(layer, key=lambda p: p.count("/")):
            if any(part.startswith(".wh.") for part in path.split("/")):
                continue
            if any(path.startswith(s + "/") for s in skipped):
                continue
            kind = layer[path]
            if kind == "dir" and path in synth and merged.get(path) != "dir":
                below = [p[len(path) + 1 :] for p in layer if p.startswith(path + "/")]
                if all(
                    any(part.startswith(".wh.") for part in rel.split("/"))
                    or (layer[path + "/" + rel] == "dir" and path + "/" + rel in synth)
                    for rel in below
                ):
                    skipped.append(path)  # only whiteouts, and no lower directory here
                    continue
            if not (kind == "dir" and merged.get(path) == "dir"):
                for p in [p for p in merged if p.startswith(path + "/")]:
                    del merged[p]
            merged[path] = kind
    return merged


def member(path: str, kind: str) -> tb.Member:
    if kind == "dir":
        return tb.Dir(path)
    if kind == "link":
        return tb.Symlink(path, target="x")
    return tb.File(path, b"")


@settings(max_examples=150, deadline=None)
@given(st.lists(LAYER, min_size=1, max_size=4))
def test_merge_matches_model(layers: list[list[tuple[str, str]]]) -> None:
    indexes = [index_of(tb.build([member(p, k) for p, k in layer])) for layer in layers]
    tree = merge(indexes)
    got: dict[str, str] = {}
    kinds = {Kind.FILE: "file", Kind.DIR: "dir", Kind.SYMLINK: "link"}
    for path, (kind, _) in listing(tree, indexes).items():
        got[path] = kinds[Kind[kind]]
    per_layer = [model_layer(layer) for layer in layers]
    for idx, (model, _synth) in zip(indexes, per_layer, strict=True):
        reachable = {}
        stack = [0]
        while stack:
            node = stack.pop()
            for child in (idx.children[node] or {}).values():
                reachable[idx.path(child)] = kinds[idx.entries[child].kind]
                if idx.children[child] is not None:
                    stack.append(child)
        assert reachable == model
    assert got == model_merge(per_layer)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", ".", "..", "", "/"]), max_size=8).map("/".join))
def test_normalise_matches_posixpath(name: str) -> None:
    path, _escaped = normalise(name)
    expected = posixpath.normpath("/" + name).lstrip("/")
    assert path == ("" if expected == "." else expected)
    assert ".." not in path.split("/") and not path.startswith("/")
    assert normalise(path) == (path, False)
