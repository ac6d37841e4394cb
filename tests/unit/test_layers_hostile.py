"""Hostile and odd layer tars, below the mount: what is shown, what is hidden, what is read.

Every case is built here (GNU tar, tarfile, hand-patched headers) and checked
against `tar -x` where tar has an opinion. The mount-level counterparts are in
tests/mount/test_hostile_layers.py.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import trio
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from ocifs.cache import DiskCache
from ocifs.codec.decode import OUT_SIZE, LayerPass
from ocifs.codec.limits import DEFAULT, Limits
from ocifs.errors import LimitExceeded
from ocifs.layers.entry import Kind, LayerIndex
from ocifs.layers.store import LayerStore
from ocifs.layers.tarindex import IndexBuilder
from ocifs.layers.tarwalk import ChunkStream, TarDamaged, walk
from ocifs.model import naming
from ocifs.model.mediatypes import Compression
from tests.helpers import tarbuilder as tb

SPARSE_FORMATS = {
    "gnu": ["--format=gnu"],
    "pax-1.0": ["--format=pax"],
    "pax-0.1": ["--format=pax", "--sparse-version=0.1"],
    "pax-0.0": ["--format=pax", "--sparse-version=0.0"],
}


def index_of(data: bytes, limits: Limits = DEFAULT) -> LayerIndex:
    builder = IndexBuilder("test", limits)
    complete, error = True, None
    try:
        for m in walk(ChunkStream(iter([data])), limits, "test"):
            builder.add(m)
    except TarDamaged as exc:
        complete, error = False, str(exc)
    return builder.finish(complete, error, len(data))


def names(idx: LayerIndex, node: int = 0) -> set[str]:
    return set(idx.children[node] or {})


def make_sparse_tree(src: Path) -> dict[str, bytes]:
    """Files with holes at the start, middle and end, all hole, and none."""
    src.mkdir()
    chunk = os.urandom(100_000)
    files = {
        "sparse": (8 << 20, [(0, b"head"), (3 << 20, chunk), ((8 << 20) - 4, b"tail")]),
        "hole-first": (5 << 20, [(4 << 20, chunk)]),
        "hole-last": (6 << 20, [(0, chunk)]),
        "all-hole": (2 << 20, []),
        "many": (4 << 20, [(i * 65536, b"x" * 100) for i in range(0, 64, 2)]),
    }
    for name, (size, pieces) in files.items():
        with open(src / name, "wb") as f:
            f.truncate(size)
            for off, data in pieces:
                f.seek(off)
                f.write(data)
    (src / "plain").write_bytes(b"plain")
    return {name: (src / name).read_bytes() for name in [*files, "plain"]}


@pytest.mark.parametrize("fmt", list(SPARSE_FORMATS))
def test_sparse_members_read_as_tar_extracts_them(tmp_path: Path, fmt: str) -> None:
    expected = make_sparse_tree(tmp_path / "src")
    out = tmp_path / "s.tar"
    subprocess.run(["tar", "--sparse", *SPARSE_FORMATS[fmt], "-C", tmp_path / "src",
                    "-cf", out, "."], check=True)
    assert out.stat().st_size < 2 << 20  # really stored sparse
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["tar", "-C", dest, "-xf", out], check=True)
    src = tb.BlobSource(tmp_path)
    desc = src.add(out.read_bytes(), "tar")

    async def main() -> None:
        st = LayerStore(src, DiskCache(tmp_path / "cache"))
        idx = await st.index(desc)
        assert idx.complete and names(idx) == set(expected), names(idx)
        for name, data in expected.items():
            assert (dest / name).read_bytes() == data  # tar agrees with the source
            entry = idx.entries[idx.lookup(name) or 0]
            assert entry.kind is Kind.FILE and entry.size == len(data), name
            whole = bytearray()
            step = 128 << 10
            for off in range(0, entry.size, step):
                whole += await st.read(desc, entry, off, step)
            assert bytes(whole) == data, name
            for off, n in [(3, 70_000), ((3 << 20) - 5, 20), ((8 << 20) - 6, 100)]:
                assert await st.read(desc, entry, off, n) == data[off : off + n], (name, off)

    trio.run(main)


def test_corrupt_sparse_maps_hide_only_that_member() -> None:
    def sparse_member(name: str, pax: dict[str, str], data: bytes) -> tb.Raw:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.pax_headers = pax
        return tb.Raw(info, data)

    data = tb.build([
        sparse_member("out-of-range", {"GNU.sparse.map": "0,10,5,10", "GNU.sparse.size": "12"},
                      b"x" * 20),
        sparse_member("too-much", {"GNU.sparse.map": "0,100", "GNU.sparse.size": "100"}, b"x"),
        sparse_member("ok", {"GNU.sparse.map": "2,3", "GNU.sparse.size": "10"}, b"abc"),
        tb.File("after", b"after"),
    ])
    idx = index_of(data)
    assert idx.complete and names(idx) == {"ok", "after"}
    ok = idx.entries[idx.lookup("ok") or 0]
    assert ok.size == 10 and ok.sparse == (2, 3)


BAD_FIELDS = {
    "uid negative": {"uid": tb.base256(-5, 8)},
    "uid 2^32": {"uid": tb.base256(1 << 32, 8)},
    "gid 2^40": {"gid": tb.base256(1 << 40, 8)},
    "mode negative": {"mode": tb.base256(-1, 8)},
    "mode not octal": {"mode": b"0000999\0"},
    "mtime 2^80": {"mtime": tb.base256(1 << 80, 12)},
    "devmajor 2^40": {"devmajor": tb.base256(1 << 40, 8)},
    "devmajor 4096": {"devmajor": b"0010000\0"},
    "devminor 2^20": {"devminor": b"4000000\0"},
    "devminor negative": {"devminor": tb.base256(-7, 8)},
}


@pytest.mark.parametrize("case", list(BAD_FIELDS))
def test_out_of_range_fields_hide_only_that_member(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    info = tarfile.TarInfo("dir/bad")
    if "dev" in case:
        info.type = tarfile.CHRTYPE
    data = tb.build([
        tb.File("dir/before", b"before"),
        tb.RawBytes(tb.header(info, **BAD_FIELDS[case])),
        tb.File("dir/after", b"after"),
    ])
    with caplog.at_level(logging.WARNING):
        idx = index_of(data)
    assert idx.complete, idx.error
    assert names(idx, idx.lookup("dir") or 0) == {"before", "after"}
    hidden = [r.getMessage() for r in caplog.records if "hidden" in r.getMessage()]
    assert len(hidden) == 1 and "'dir/bad'" in hidden[0], hidden


@pytest.mark.parametrize("pax", [{"uid": "-1"}, {"gid": "4294967296"}, {"mtime": "1e9"},
                                 {"mtime": "99999999999999999999999"}, {"uid": "abc"}])
def test_bad_pax_values_hide_only_that_member(pax: dict[str, str]) -> None:
    info = tarfile.TarInfo("bad")
    info.pax_headers = pax
    data = tb.build([tb.File("before"), tb.Raw(info), tb.File("after")])
    idx = index_of(data)
    assert idx.complete and names(idx) == {"before", "after"}


@pytest.mark.parametrize("how", ["header 2^63", "header 2^70", "pax 2^63", "pax -1"])
def test_sizes_of_2_63_and_above_are_damage_not_a_crash(how: str) -> None:
    """Nothing after a size that cannot be true can be found: the members before it stay."""
    info = tarfile.TarInfo("huge")
    if how.startswith("header"):
        bad = tb.RawBytes(tb.header(info, size=tb.base256(1 << int(how[-2:]), 12)))
    else:
        info.pax_headers = {"size": "9223372036854775808" if "63" in how else "-1"}
        bad = tb.Raw(info)
    data = tb.build([tb.File("before", b"before"), bad, tb.File("after")])
    idx = index_of(data)
    assert not idx.complete and "huge" not in names(idx) and "before" in names(idx)
    assert "out of range" in (idx.error or "") or "invalid size" in (idx.error or "")


def test_nul_long_and_unencodable_names_are_hidden(caplog: pytest.LogCaptureFixture) -> None:
    def pax_file(path: str, **extra: str) -> tb.Raw:
        info = tarfile.TarInfo("placeholder")
        info.pax_headers = {"path": path, **extra}
        if "linkpath" in extra:
            info.type = tarfile.SYMTYPE
        return tb.Raw(info, b"")

    long_component = "d/" + "n" * 256
    long_path = "/".join(["p" * 200] * 21)  # 4220 bytes, every component fine
    data = tb.build([
        pax_file("a\0b"),
        pax_file("a\0c"),
        pax_file("dir\0x/child"),
        tb.File(long_component),
        tb.File(long_path),
        pax_file("link", linkpath="tar\0get"),
        tb.File("d/ok", b"ok"),
        tb.File("a", b"the real a"),
        tb.File("n" * 255, b"255 bytes is fine"),
    ])
    with caplog.at_level(logging.WARNING):
        idx = index_of(data)
    assert idx.complete
    assert names(idx) == {"a", "d", "n" * 255}
    assert names(idx, idx.lookup("d") or 0) == {"ok"}
    hidden = [r.getMessage() for r in caplog.records if "hidden" in r.getMessage()]
    assert len(hidden) == 6, hidden


def test_name_rule() -> None:
    ok = ["a", "é", "name\udcff", "n" * 255, ".wh..", "-"]
    bad = ["", ".", "..", "a/b", "a\0b", "n" * 256, "é" * 128, "\ud800",
           "\udcc3\udca9"]  # the last one spells the bytes of "é" differently
    assert [n for n in ok if naming.name_problem(n)] == []
    assert [n for n in bad if not naming.name_problem(n)] == []
    assert naming.ref_path("a/b") == ("a", "b")
    assert naming.ref_path("a/\0") is None and naming.ref_path("x\ud800") is None


def test_zstd_output_per_step_is_bounded(tmp_path: Path) -> None:
    """RLE blocks: 16 KiB of input used to decode to ~512 MiB in one decoder call."""
    payload = tb.build([tb.File("zeros", bytes(64 << 20)), tb.File("after", b"after")])
    blob = zstandard.ZstdCompressor(level=3).compress(payload)
    del payload
    src = tb.BlobSource(tmp_path)
    desc = src.add(blob, "zst")
    lp = LayerPass(src.open_blob(desc.digest), desc.digest, Compression.ZSTD, "t", DEFAULT)
    try:
        biggest = max(len(chunk) for chunk in lp.chunks())
        lp.finish()
    finally:
        lp.close()
    assert biggest <= 2 * OUT_SIZE
    assert lp.produced > 64 << 20


def test_dir_replaced_by_file_with_whiteouts_below_keeps_the_file() -> None:
    """What `umoci repack` writes when a directory became a file: the file, then
    whiteouts under its name. The whiteouts must not turn the file into a directory."""
    from ocifs.layers.merge import merge

    lower = index_of(tb.build([tb.Dir("d"), tb.File("d/x", b"x"), tb.File("keep", b"k")]))
    upper = index_of(tb.build([tb.File("d", b"now a file"), tb.File("d/.wh.x")]))
    upper_first = index_of(tb.build([tb.File("d/.wh.x"), tb.File("d", b"now a file")]))
    for top in (upper, upper_first):
        assert top.entries[top.lookup("d") or 0].kind is Kind.FILE
        tree = merge([lower, top])
        node = tree.lookup("d")
        assert node is not None and not tree.is_dir(node)
        assert tree.lookup("keep") is not None
    # across layers: a later layer's whiteouts below what is now a file
    later = index_of(tb.build([tb.File("d/.wh.x"), tb.File("d/.wh..wh..opq")]))
    tree = merge([lower, upper, later])
    node = tree.lookup("d")
    assert node is not None and not tree.is_dir(node)


def test_invalid_whiteouts_and_paths_through_symlinks_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ocifs.layers.merge import merge

    lower = index_of(tb.build([tb.File("f"), tb.Symlink("loop", target="loop"),
                               tb.Symlink("up", target="../../etc")]))
    upper = index_of(tb.build([tb.File(".wh."), tb.File(".wh.."), tb.File("sub/.wh..."),
                               tb.File("sub/y"), tb.File("loop/x"), tb.File("up/z")]))
    with caplog.at_level(logging.WARNING):
        tree = merge([lower, upper], ["lower", "upper"])
    text = [r.getMessage() for r in caplog.records]
    assert sum("names nothing" in t for t in text) == 3, text
    assert any("'loop'" in t and "symlink" in t for t in text)
    assert any("'up'" in t and "symlink" in t for t in text)
    assert tree.lookup("f") is not None and tree.lookup("sub/y") is not None
    assert tree.lookup("loop/x") is not None


def _fix_checksums(data: bytearray) -> None:
    """Recompute every header checksum the walker will meet (mutations stay 'valid')."""
    pos = 0
    while pos + 512 <= len(data):
        block = data[pos : pos + 512]
        if block.count(0) == 512:
            return
        block[148:156] = b"        "
        data[pos + 148 : pos + 156] = b"%06o\0 " % sum(block)
        try:
            size = int(bytes(data[pos + 124 : pos + 136]).split(b"\0")[0].strip() or b"0", 8)
        except ValueError:
            return
        pos += 512 + size + (-size % 512)


def _seed_tar() -> bytes:
    info = tarfile.TarInfo("sp")
    info.size = 3
    info.pax_headers = {"GNU.sparse.map": "2,3", "GNU.sparse.size": "10"}
    return tb.build([
        tb.Dir("d"), tb.File("d/f", b"data" * 100), tb.Symlink("d/l", target="f"),
        tb.Hardlink("d/h", target="d/f"), tb.Char("c"), tb.File("n" * 120, b"long"),
        tb.Raw(info, b"abc"), tb.File("z", b"z", xattrs={"user.a": b"1"}),
    ], fmt=tarfile.GNU_FORMAT) + tb.build([tb.File("p" * 150, b"pax")])


SEED = _seed_tar()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.integers(0, 255)), max_size=12),
       st.booleans())
def test_mutated_headers_never_escape_the_typed_errors(
    edits: list[tuple[int, int]], fix: bool
) -> None:
    """Any bytes: the walk ends, or stops with TarDamaged/LimitExceeded; whatever it
    shows has fields the kernel can take and names the naming rule accepts."""
    data = bytearray(SEED)
    for pos, value in edits:
        data[pos] = value
    if fix:
        _fix_checksums(data)
    try:
        idx = index_of(bytes(data))
    except LimitExceeded:
        return
    for i in range(1, len(idx.entries)):
        e = idx.entries[i]
        if idx.lookup(idx.path(i)) != i:
            continue  # replaced by a later member
        assert all(naming.name_problem(part) is None for part in idx.path(i).split("/"))
        assert 0 <= e.uid < 1 << 32 and 0 <= e.gid < 1 << 32 and 0 <= e.mode <= 0o7777
        assert -(1 << 63) <= e.mtime_ns < 1 << 63 and 0 <= e.size < 1 << 63
        assert os.major(e.rdev) < 1 << 12 and os.minor(e.rdev) < 1 << 20 and "\0" not in e.link
