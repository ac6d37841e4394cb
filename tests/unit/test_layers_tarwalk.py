"""The tar walker and per-layer index against tarfile-built and GNU-tar-built tars."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))
import tarbuilder as tb

from ocifs.codec.limits import DEFAULT, Limits
from ocifs.errors import LimitExceeded
from ocifs.layers.entry import Kind, LayerIndex
from ocifs.layers.tarindex import IndexBuilder
from ocifs.layers.tarwalk import ChunkStream, TarDamaged, walk


def chunked(data: bytes, size: int = 777) -> ChunkStream:
    return ChunkStream(iter([data[i : i + size] for i in range(0, len(data), size)]))


def index_of(data: bytes, limits: Limits = DEFAULT) -> LayerIndex:
    builder = IndexBuilder("test", limits)
    complete, error = True, None
    try:
        for m in walk(chunked(data), limits, "test"):
            builder.add(m)
    except TarDamaged as exc:
        complete, error = False, str(exc)
    return builder.finish(complete, error, len(data))


def entry(idx: LayerIndex, path: str):  # type: ignore[no-untyped-def]
    node = idx.lookup(path)
    assert node is not None, path
    return idx.entries[node]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_formats_and_long_names(fmt: int) -> None:
    long_dir = "d" * 120
    long_name = f"{long_dir}/{'f' * 150}"
    members: list[tb.Member] = [
        tb.Dir("./etc", mode=0o750, uid=5, gid=6),
        tb.File("./etc/os-release", b"ID=test\n", mode=0o4755, mtime=1234),
        tb.Symlink("etc/link", target="/abs/target/../x"),
        tb.Fifo("run/fifo", mode=0o600),
        tb.Char("dev/null", mode=0o666, major=1, minor=3),
        tb.Block("dev/sda", major=8, minor=1),
    ]
    if fmt != tarfile.USTAR_FORMAT:
        members += [tb.File(long_name, b"long"), tb.Symlink("l2", target="t" * 200)]
    idx = index_of(tb.build(members, fmt))
    assert idx.complete
    assert entry(idx, "etc").mode == 0o750 and entry(idx, "etc").uid == 5
    osr = entry(idx, "etc/os-release")
    assert (osr.kind, osr.mode, osr.size, osr.mtime_ns) == (Kind.FILE, 0o4755, 8, 1234 * 10**9)
    assert entry(idx, "etc/link").link == "/abs/target/../x"
    assert entry(idx, "run/fifo").kind is Kind.FIFO
    assert entry(idx, "run").synthetic and entry(idx, "run").mode == 0o755
    assert entry(idx, "dev/null").rdev == os.makedev(1, 3)
    assert entry(idx, "dev/sda").kind is Kind.BLOCK
    if fmt != tarfile.USTAR_FORMAT:
        assert entry(idx, long_name).size == 4
        assert entry(idx, "l2").link == "t" * 200


def test_data_offsets_point_at_contents() -> None:
    files = {f"dir{i % 3}/file{i}": os.urandom(i * 37) for i in range(20)}
    data = tb.build([tb.File(n, d) for n, d in files.items()])
    idx = index_of(data)
    for name, content in files.items():
        e = entry(idx, name)
        assert data[e.data_offset : e.data_offset + e.size] == content


def test_pax_xattrs_mtime_and_global_header() -> None:
    ti = tarfile.TarInfo("g")
    members: list[tb.Member] = [
        tb.File("x", b"1", xattrs={"user.a": b"va", "security.capability": b"\x01\x00"}),
    ]
    data = tb.build(members)
    idx = index_of(data)
    assert entry(idx, "x").xattrs == {"user.a": b"va", "security.capability": b"\x01\x00"}
    # A global header's mtime/uid apply to later members; its path never does.
    out = tarfile.TarFile
    assert out is not None and ti.name == "g"
    buf = tb.build([tb.File("y", b"2")])
    import io

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"uid": "77", "mtime": "5.5", "path": "evil"}) as tf:
        ti2 = tarfile.TarInfo("z")
        ti2.size = 1
        tf.addfile(ti2, io.BytesIO(b"3"))
    idx2 = index_of(raw.getvalue())
    z = entry(idx2, "z")
    assert (z.uid, z.mtime_ns) == (77, 5_500_000_000)
    assert idx2.lookup("evil") is None and index_of(buf).complete


def test_base256_size_over_8_gib() -> None:
    ti = tarfile.TarInfo("huge")
    ti.size = 9 * 1024**3
    data = tb.build([tb.Raw(ti)], fmt=tarfile.GNU_FORMAT)  # header only: data cut short
    idx = index_of(data)
    assert entry(idx, "huge").size == 9 * 1024**3
    assert not idx.complete and "cut short" in (idx.error or "")


def test_truncated_and_corrupt_streams_keep_earlier_members() -> None:
    data = tb.build([tb.File("a", b"x" * 3000), tb.File("b", b"y" * 3000), tb.File("c", b"z")])
    cut = index_of(data[:2000])
    assert not cut.complete and cut.lookup("a") is not None and cut.lookup("b") is None
    bad = bytearray(data)
    second = data.index(b"b\0")
    bad[second + 10] ^= 0xFF  # checksum mismatch in the second header
    idx = index_of(bytes(bad))
    assert not idx.complete and "checksum" in (idx.error or "")
    assert idx.lookup("a") is not None and idx.lookup("c") is None


def test_names_are_clamped_inside_the_root(caplog: pytest.LogCaptureFixture) -> None:
    members: list[tb.Member] = [
        tb.File("../../etc/passwd", b"p"),
        tb.File("/abs/file", b"a"),
        tb.File(".//x//y/./z", b"z"),
        tb.Hardlink("hl", target="../../etc/passwd"),
        tb.Hardlink("dangling", target="missing/file"),
    ]
    idx = index_of(tb.build(members, tarfile.GNU_FORMAT))
    assert entry(idx, "etc/passwd").size == 1
    assert entry(idx, "abs/file").size == 1
    assert entry(idx, "x/y/z").size == 1
    assert entry(idx, "hl").identity == idx.lookup("etc/passwd")
    assert idx.lookup("dangling") is None
    assert "outside the layer root" in caplog.text and "dropped" in caplog.text


def test_replacement_rules_within_one_layer() -> None:
    members: list[tb.Member] = [
        tb.Dir("d", mode=0o700),
        tb.File("d/inner", b"i"),
        tb.File("d", b"now a file"),  # a file replaces the dir and its subtree
        tb.File("f", b"file"),
        tb.Dir("f", mode=0o711),  # a dir replaces the file
        tb.Dir("keep", mode=0o700),
        tb.File("keep/child", b"c"),
        tb.Dir("keep", mode=0o750),  # dir over dir: attributes updated, children kept
        tb.File("dup", b"old"),
        tb.File("dup", b"newer"),
    ]
    idx = index_of(tb.build(members))
    assert entry(idx, "d").kind is Kind.FILE and idx.lookup("d/inner") is None
    assert entry(idx, "f").kind is Kind.DIR and entry(idx, "f").mode == 0o711
    assert entry(idx, "keep").mode == 0o750 and idx.lookup("keep/child") is not None
    assert entry(idx, "dup").size == 5


def test_hardlinks_share_identity_and_count() -> None:
    members: list[tb.Member] = [
        tb.File("a/f", b"data", mode=0o640),
        tb.Hardlink("b/g", target="a/f"),
        tb.Hardlink("h", target="./b/g"),
        tb.Dir("a/sub"),
    ]
    idx = index_of(tb.build(members))
    f, g, h = entry(idx, "a/f"), entry(idx, "b/g"), entry(idx, "h")
    assert f.identity == g.identity == h.identity == idx.lookup("a/f")
    assert (g.size, g.data_offset, g.mode) == (4, f.data_offset, 0o640)
    assert f.nlink == g.nlink == h.nlink == 3
    assert entry(idx, "a").nlink == 3  # 2 + one subdirectory
    assert idx.entries[0].nlink == 4  # a, b + 2


def test_limits_raise() -> None:
    data = tb.build([tb.File(f"f{i}") for i in range(10)])
    with pytest.raises(LimitExceeded):
        index_of(data, Limits(max_members=5))
    idx = index_of(tb.build([tb.File("x" * 300), tb.File("ok")]))  # hidden, not fatal
    assert idx.complete and list(idx.children[0] or {}) == ["ok"]


def test_matches_gnu_tar_listing_and_extraction(tmp_path: Path) -> None:
    """A tree made with odd modes, links, long names and xattrs, tarred by GNU tar."""
    src = tmp_path / "src"
    (src / "deep" / ("n" * 200)).mkdir(parents=True)
    (src / "deep" / ("n" * 200) / ("m" * 180)).write_bytes(b"long path content")
    (src / "bin").mkdir()
    (src / "bin" / "tool").write_bytes(os.urandom(100_000))
    os.chmod(src / "bin" / "tool", 0o4751)
    os.link(src / "bin" / "tool", src / "bin" / "tool-hl")
    os.symlink("../bin/tool", src / "bin" / "rel")
    os.symlink("/etc/passwd", src / "abs")
    os.symlink("nowhere/at/all", src / "dangling")
    (src / "x").write_bytes(b"xattr file")
    subprocess.run(["setfattr", "-n", "user.comment", "-v", "hello", src / "x"], check=False)
    (src / "name\udcff".encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
     ).write_bytes(b"bad utf8")
    out = tmp_path / "l.tar"
    subprocess.run(["tar", "--xattrs", "--format=posix", "--numeric-owner", "-C", src,
                    "-cf", out, "."], check=True)
    idx = index_of(out.read_bytes())
    assert idx.complete
    cmd = ["tar", "--quoting-style=literal", "-tf", out]
    listed = subprocess.run(cmd, check=True, capture_output=True).stdout
    names = {os.path.normpath(n.decode("utf-8", "surrogateescape")).lstrip("./")
             for n in listed.splitlines()} - {""}
    ours = {idx.path(i) for i in range(1, len(idx.entries))}
    assert ours == names
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["tar", "--xattrs", "-C", dest, "-xf", out], check=True)
    data = out.read_bytes()
    for i, e in enumerate(idx.entries[1:], 1):
        native = dest / idx.path(i)
        st = os.lstat(native)
        assert (st.st_mode & 0o7777) == e.mode, idx.path(i)
        if e.kind is Kind.FILE:
            content = data[e.data_offset : e.data_offset + e.size]
            assert hashlib.sha256(content).digest() == hashlib.sha256(native.read_bytes()).digest()
            assert st.st_nlink == e.nlink
        elif e.kind is Kind.SYMLINK:
            assert os.readlink(native) == e.link
    x = entry(idx, "x")
    if x.xattrs:
        assert x.xattrs == {"user.comment": b"hello"}


def test_missing_final_padding_is_not_damage() -> None:
    """umoci 0.4.7 ends its tars right after the last member's data (no padding,
    no end-of-archive blocks); GNU tar extracts them, and so must ocifs."""
    data = tb.build([tb.Dir("d"), tb.File("d/last", b"eleven byte")])
    last = data.index(b"eleven byte") + len(b"eleven byte")
    idx = index_of(data[:last])
    assert idx.complete, idx.error
    assert entry(idx, "d/last").size == 11
    assert not index_of(data[: last - 1]).complete  # data itself cut: damage


def test_root_member_named_slash_is_not_an_escape(caplog: pytest.LogCaptureFixture) -> None:
    idx = index_of(tb.build([tb.Dir("/"), tb.Dir("./"), tb.File("/etc/x", b"x")]))
    assert entry(idx, "etc/x").size == 1
    assert caplog.text.count("outside the layer root") == 1  # only '/etc/x'
