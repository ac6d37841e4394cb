"""LayerStore: compression kinds, single-flight, persistent cache, damage, limits, umoci."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))
import tarbuilder as tb

from ocifs.cache import DiskCache
from ocifs.codec.blobio import BytesReader
from ocifs.codec.limits import Limits
from ocifs.codec.seekable import open_gzip
from ocifs.errors import BlobUnavailable, LayerCorrupt, LimitExceeded
from ocifs.layers import indexer
from ocifs.layers import store as store_mod
from ocifs.layers.entry import Entry, Kind
from ocifs.layers.store import LayerStore
from ocifs.model.descriptor import Descriptor
from ocifs.tree.layertree import checked_merge
from tests.conftest import require_tools

FILES = {f"usr/share/d{i % 7}/f{i}": random.Random(i).randbytes(i * 997) for i in range(60)}
BIG = random.Random(0).randbytes(3 << 20)


def members() -> list[tb.Member]:
    out: list[tb.Member] = [tb.File(n, d) for n, d in FILES.items()]
    return [*out, tb.File("big", BIG), tb.Hardlink("big-link", target="big")]


async def read_all(st: LayerStore, desc: Descriptor, e: Entry, step: int = 65536) -> bytes:
    parts, off = [], 0
    while off < e.size:
        part = await st.read(desc, e, off, step)
        parts.append(part)
        off += len(part)
    return b"".join(parts)


@pytest.mark.parametrize("how", ["tar", "gz", "zst", "docker-gz"])
@pytest.mark.parametrize("unpack_limit", [None, 0])
def test_reads_match_for_every_scheme(tmp_path: Path, how: str, unpack_limit: int | None) -> None:
    src = tb.BlobSource(tmp_path)
    desc = src.layer(members(), how)

    async def main() -> None:
        st = LayerStore(src, DiskCache(tmp_path / "cache"), unpack_limit=unpack_limit)
        idx = await st.index(desc)
        assert idx.complete
        for name, data in [*FILES.items(), ("big", BIG), ("big-link", BIG)]:
            node = idx.lookup(name)
            assert node is not None
            assert await read_all(st, desc, idx.entries[node]) == data
        e = idx.entries[idx.lookup("big") or 0]
        assert await st.read(desc, e, len(BIG) - 10, 100) == BIG[-10:]
        assert await st.read(desc, e, len(BIG), 100) == b""
        st.close()

    trio.run(main)


def test_single_flight_and_second_mount_reuses_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tb.BlobSource(tmp_path)
    desc = src.layer(members(), "gz")
    builds = []
    real = indexer.build

    def counting(*args: object, **kw: object):  # type: ignore[no-untyped-def]
        builds.append(1)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(indexer, "build", counting)
    cache = DiskCache(tmp_path / "cache")

    async def first() -> None:
        st = LayerStore(src, cache)
        assert not st.cached(desc)
        results = []

        async def one() -> None:
            results.append(await st.index(desc))

        async with trio.open_nursery() as n:
            for _ in range(5):
                n.start_soon(one)
        assert len(builds) == 1 and all(r is results[0] for r in results)
        assert st.cached(desc)

    async def second() -> None:
        st = LayerStore(src, cache)  # a new mount: same cache directory
        assert st.cached(desc)
        idx = await st.index(desc)
        e = idx.entries[idx.lookup("big") or 0]
        assert await read_all(st, desc, e) == BIG
        st.close()

    trio.run(first)
    opened = src.opened
    trio.run(second)
    assert len(builds) == 1  # the second mount indexed nothing
    assert src.opened == opened + 1  # opened once, for the read


def test_corrupt_cache_entries_are_rebuilt(tmp_path: Path) -> None:
    src = tb.BlobSource(tmp_path)
    desc = src.layer(members(), "zst")
    cache = DiskCache(tmp_path / "cache")
    key = str(desc.digest)

    async def run() -> bytes:
        st = LayerStore(src, cache)
        idx = await st.index(desc)
        data = await read_all(st, desc, idx.entries[idx.lookup("big") or 0])
        st.close()
        return data

    assert trio.run(run) == BIG
    index_file = cache.path_for(store_mod.INDEX_KIND, key)
    index_file.write_bytes(index_file.read_bytes()[:-100])  # truncated index
    copy = cache.path_for(store_mod.DATA_KIND, key)
    raw = bytearray(copy.read_bytes())
    raw[len(raw) - 5000] ^= 0xFF  # silent damage inside the unpacked copy
    copy.write_bytes(bytes(raw))
    assert trio.run(run) == BIG
    copy.unlink()  # evicted copy: rebuilt on the next read
    assert trio.run(run) == BIG


def test_blob_problems_raise_blob_unavailable(tmp_path: Path) -> None:
    src = tb.BlobSource(tmp_path)
    good = src.layer([tb.File("a", b"a")], "gz")
    cache = DiskCache(tmp_path / "cache")
    wrong_size = Descriptor(good.media_type, good.digest, good.size + 1)
    missing = Descriptor(good.media_type, tb.digest_of(b"nothing"), 7)
    tampered = src.layer([tb.File("b", b"b")], "tar")
    src.blobs[tampered.digest] = tb.build([tb.File("b", b"c")])  # same size, other bytes
    (tmp_path / tampered.digest.hex).write_bytes(src.blobs[tampered.digest])

    async def main() -> None:
        st = LayerStore(src, cache)
        for desc, text in [(wrong_size, "bytes"), (missing, "missing"), (tampered, "digest")]:
            with pytest.raises(BlobUnavailable, match=text):
                await st.index(desc)
        assert not st.cached(tampered)  # never cached unverified

    trio.run(main)


@pytest.mark.parametrize("how", ["gz", "zst", "tar"])
def test_truncated_layer_shows_entries_before_damage(tmp_path: Path, how: str) -> None:
    data = tb.build([tb.File("first", b"1" * 5000), tb.File("second", os.urandom(200_000)),
                     tb.File("third", b"3")])
    blob = tb.compress(data, how)
    cut = blob[: len(blob) * 2 // 3] if how != "tar" else data[:100_000]
    src = tb.BlobSource(tmp_path)
    desc = src.add(cut, how)  # digest of the damaged bytes: verifies, but is broken inside

    async def main() -> None:
        st = LayerStore(src, DiskCache(tmp_path / "cache"))
        idx = await st.index(desc)
        assert not idx.complete and str(desc.digest) in (idx.error or "")
        assert idx.lookup("third") is None
        first = idx.entries[idx.lookup("first") or 0]
        assert await st.read(desc, first, 0, 10_000) == b"1" * 5000
        second = idx.entries[idx.lookup("second") or 0]
        with pytest.raises(LayerCorrupt):
            await read_all(st, desc, second)

    trio.run(main)


def test_media_type_mismatch_uses_magic(tmp_path: Path) -> None:
    src = tb.BlobSource(tmp_path)
    lying = src.add(tb.compress(tb.build([tb.File("x", b"x")]), "zst"), media_type=tb.MEDIA["gz"])

    async def main() -> None:
        st = LayerStore(src, DiskCache(tmp_path / "cache"))
        idx = await st.index(lying)
        assert idx.lookup("x") is not None

    trio.run(main)


@pytest.mark.parametrize("how", ["gz", "zst"])
def test_zeros_are_not_a_bomb(tmp_path: Path, how: str) -> None:
    """No ratio limit: a real layer of zeros is served, and 256 MiB of zeros behind a
    tiny tar are accepted; zeros cost no disk in the unpacked copy; the absolute
    decompressed-bytes limit and the time limit still hold."""
    src = tb.BlobSource(tmp_path)
    zeros = src.layer([tb.File("zeros", bytes(32 << 20)), tb.File("after", b"after")], how)
    tail = src.add(tb.compress(tb.build([tb.File("x", b"x")]) + bytes(256 << 20), how), how)

    async def main() -> None:
        st = LayerStore(src, DiskCache(tmp_path / "cache"))
        idx = await st.index(zeros)
        big = idx.entries[idx.lookup("zeros") or 0]
        assert await st.read(zeros, big, 20 << 20, 4096) == bytes(4096)
        after = idx.entries[idx.lookup("after") or 0]
        assert await st.read(zeros, after, 0, 100) == b"after"
        small = await st.index(tail)
        assert small.complete and small.lookup("x") is not None
        copy = next((tmp_path / "cache" / "layer-data").rglob(f"*{zeros.digest.hex}*"), None)
        if copy is not None and copy.stat().st_size > 32 << 20:  # the unpacked copy
            assert copy.stat().st_blocks * 512 < 8 << 20  # zeros are holes, not written
        capped = LayerStore(src, DiskCache(tmp_path / "cache2"),
                            limits=Limits(max_uncompressed=8 << 20))
        with pytest.raises(LimitExceeded):
            await capped.index(zeros)
        out_of_time = LayerStore(src, DiskCache(tmp_path / "cache3"),
                                 limits=Limits(max_index_seconds=-1))
        with pytest.raises(LimitExceeded, match="took longer than"):
            await out_of_time.index(zeros)

    trio.run(main)


def test_merged_is_memoised(tmp_path: Path) -> None:
    src = tb.BlobSource(tmp_path)
    lower = src.layer([tb.File("etc/a", b"a"), tb.File("etc/b", b"b")], "gz")
    upper = src.layer([tb.File("etc/.wh.a"), tb.File("etc/c", b"c")], "zst")

    async def main() -> None:
        st = LayerStore(src, DiskCache(tmp_path / "cache"))
        tree = await st.merged([lower, upper])
        assert tree is await st.merged([lower, upper])
        etc = tree.lookup("etc")
        assert etc is not None and set(tree.children(etc)) == {"b", "c"}
        layer, entry = tree.source(tree.lookup("etc/c") or 0)
        idx = await st.index([lower, upper][layer])
        assert await st.read(upper, idx.entries[entry], 0, 10) == b"c"

    trio.run(main)


@pytest.mark.parametrize("listed_first", [False, True], ids=["cold", "merged-before"])
def test_a_merge_whose_diff_id_check_fails_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed_first: bool
) -> None:
    src = tb.BlobSource(tmp_path)
    lower = src.layer([tb.File("etc/a", b"a")], "gz")
    upper = src.layer([tb.File("etc/c", b"c")], "zst")
    made: list[object] = []
    real_merge = store_mod.merge

    def counting_merge(*args: Any) -> Any:
        made.append(real_merge(*args))
        return made[-1]

    async def main() -> None:
        st = LayerStore(src, DiskCache(tmp_path / "cache"))
        monkeypatch.setattr(store_mod, "merge", counting_merge)
        if listed_first:  # an earlier rootfs of the same layers merged them
            await st.merged([lower, upper])
        wrong = ["sha256:" + "1" * 64] * 2
        with pytest.raises(BlobUnavailable, match="decompresses to"):
            await checked_merge(st, [lower, upper], wrong, "image config x")
        before = len(made)
        tree = await st.merged([lower, upper])  # merged anew, not the refused one
        assert len(made) == before + 1 and tree is made[-1]
        right = [await st.diff_id(lower), await st.diff_id(upper)]
        assert await checked_merge(st, [lower, upper], right, "image config x") is tree

    trio.run(main)


def test_open_gzip_seek_points_cached_and_validated(tmp_path: Path) -> None:
    raw = random.Random(5).randbytes(1 << 20) * 3 + os.urandom(500_000)
    blob = gzip.compress(raw[:1_000_000]) + gzip.compress(raw[1_000_000:])  # two members
    cache = DiskCache(tmp_path)
    reader = open_gzip(BytesReader(blob), cache, "k")
    assert reader.size == len(raw)
    rng = random.Random(1)
    for _ in range(30):
        off, n = rng.randrange(len(raw)), rng.randrange(70_000)
        assert reader.pread(off, n) == raw[off : off + n]
    again = open_gzip(BytesReader(blob), cache, "k")  # loaded from the cache
    assert again.pread(2_500_000, 1000) == raw[2_500_000:2_501_000]
    entry = cache.path_for("gzip-seek", "k")
    entry.write_bytes(entry.read_bytes()[:-10])  # damaged entry: rebuilt, never served
    assert open_gzip(BytesReader(blob), cache, "k").pread(10, 10) == raw[10:20]
    with pytest.raises(BlobUnavailable):
        open_gzip(BytesReader(b"not gzip at all" * 100), cache, "bad")


# ---- umoci as the oracle --------------------------------------------------------


def _umoci(*args: str | Path) -> None:
    subprocess.run(["umoci", *map(str, args)], check=True, capture_output=True)


def test_rootfs_matches_umoci_unpack(tmp_path: Path) -> None:
    require_tools("umoci")
    img = tmp_path / "img"
    _umoci("init", "--layout", img)
    _umoci("new", "--image", f"{img}:t")
    l1 = tmp_path / "l1"
    (l1 / "etc" / "opq").mkdir(parents=True)
    (l1 / "etc" / "opq" / "old").write_bytes(b"old")
    (l1 / "etc" / "gone").write_bytes(b"gone")
    (l1 / "etc" / "keep").write_bytes(b"keep" * 1000)
    os.chmod(l1 / "etc" / "keep", 0o640)
    os.symlink("keep", l1 / "etc" / "sym")
    os.link(l1 / "etc" / "keep", l1 / "etc" / "keep-hl")
    (l1 / "dirfile").mkdir()
    (l1 / "dirfile" / "x").write_bytes(b"x")
    _umoci("insert", "--image", f"{img}:t", l1, "/")
    _umoci("insert", "--image", f"{img}:t", "--whiteout", "/etc/gone")
    l3 = tmp_path / "l3"
    l3.mkdir()
    (l3 / "new").write_bytes(b"new")
    _umoci("insert", "--image", f"{img}:t", "--opaque", l3, "/etc/opq")
    (tmp_path / "f").write_bytes(b"file replaces dir")
    _umoci("insert", "--image", f"{img}:t", tmp_path / "f", "/dirfile")
    bundle = tmp_path / "bundle"
    _umoci("unpack", "--rootless", "--image", f"{img}:t", bundle)

    index = json.loads((img / "index.json").read_text())
    mdesc = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((img / "blobs/sha256" / mdesc).read_text())
    src = tb.BlobSource(tmp_path / "blobs")
    (tmp_path / "blobs").mkdir()
    descs = [src.add((img / "blobs/sha256" / lay["digest"].split(":")[1]).read_bytes(),
                     media_type=lay["mediaType"]) for lay in manifest["layers"]]

    async def main() -> dict[str, tuple[str, int, int, str]]:
        st = LayerStore(src, DiskCache(tmp_path / "cache"))
        tree = await st.merged(descs)
        indexes = [await st.index(d) for d in descs]
        out: dict[str, tuple[str, int, int, str]] = {}
        stack = [(0, "")]
        while stack:
            node, path = stack.pop()
            for name, child in tree.children(node).items():
                p = f"{path}/{name}" if path else name
                layer, i = tree.source(child)
                e = indexes[layer].entries[i]
                extra = e.link
                if e.kind is Kind.FILE:
                    data = await st.read(descs[layer], e, 0, e.size)
                    extra = hashlib.sha256(data).hexdigest()
                out[p] = (e.kind.name, e.mode, e.size if e.kind is Kind.FILE else 0, extra)
                if tree.is_dir(child):
                    stack.append((child, p))
        return out

    ours = trio.run(main)
    root = bundle / "rootfs"
    native: dict[str, tuple[str, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            s = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                native[rel] = ("SYMLINK", s.st_mode & 0o7777, 0, os.readlink(p))
            elif p.is_dir():
                native[rel] = ("DIR", s.st_mode & 0o7777, 0, "")
            else:
                native[rel] = ("FILE", s.st_mode & 0o7777, s.st_size,
                               hashlib.sha256(p.read_bytes()).hexdigest())
    assert ours == native
    assert "etc/gone" not in ours and "etc/opq/old" not in ours and ours["dirfile"][0] == "FILE"


def test_cache_temp_files_commit_whole_and_leave_nothing_behind(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "cache")
    temp, sink = cache.new_temp("layer-data")
    with sink:  # written through mkstemp's descriptor, never reopened with O_TRUNC
        sink.write(b"x" * 4096)
    assert temp.parent == tmp_path / "cache" / "layer-data" and temp.stat().st_size == 4096
    final = cache.commit_file(temp, "layer-data", "sha256:abc")
    assert final == cache.path_for("layer-data", "sha256:abc") and final.read_bytes() == b"x" * 4096
    assert not temp.exists()
    assert [p.name for p in (tmp_path / "cache" / "layer-data").iterdir()] == [final.parent.name]
