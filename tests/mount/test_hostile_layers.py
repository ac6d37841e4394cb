"""Issue 15 (inside layers): hostile and odd members through a real mount.

Each test builds its input (tar builder, GNU tar, umoci) and checks that the
mount keeps answering, shows only what can be shown (listing and lookup agree),
serves the right bytes, and logs one line per thing it hid or tolerated.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

from tests.conftest import require_tools
from tests.helpers import tarbuilder as tb
from tests.helpers.imagebuilder import Layout
from tests.helpers.treecompare import diff, snapshot


def pax_member(path: str, data: bytes = b"", **pax: str) -> tb.Raw:
    info = tarfile.TarInfo("placeholder")
    info.size = len(data)
    info.pax_headers = {"path": path, **pax}
    return tb.Raw(info, data)


def listing_agrees_with_lookup(directory: Path) -> list[bytes]:
    """Names listed (as bytes); each one looked up gives the inode the listing showed."""
    names = []
    with os.scandir(os.fsencode(directory)) as it:
        for entry in it:
            assert b"\0" not in entry.name and b"/" not in entry.name
            assert os.lstat(entry.path).st_ino == entry.inode(), entry.name
            names.append(entry.name)
    assert len(names) == len(set(names)), names  # no two entries with one visible name
    return sorted(names)


def log_lines(mounted, needle: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [line for line in mounted.log_text().splitlines() if needle in line]


def test_bad_members_are_hidden_and_the_rest_is_served(mount_image, tmp_path: Path) -> None:
    bad_uid = tarfile.TarInfo("d/bad-uid")
    bad_dev = tarfile.TarInfo("d/bad-dev")
    bad_dev.type = tarfile.CHRTYPE
    layer = tb.build([
        tb.Dir("d"),
        tb.File("d/first", b"first"),
        pax_member("d/a\0b", b"not me"),
        pax_member("d/a\0c", b"nor me"),
        tb.File("d/" + "n" * 256, b"long component"),
        tb.File("/".join(["d", *["p" * 200] * 21]), b"long path"),
        tb.RawBytes(tb.header(bad_uid, uid=tb.base256(-5, 8))),
        tb.RawBytes(tb.header(bad_dev, devmajor=tb.base256(1 << 40, 8))),
        pax_member("d/bad-mtime", mtime="1e9"),
        tb.File("d/a", b"the real a"),
        tb.File("d/" + "n" * 255, b"255 bytes is fine"),
        tb.File("d/last", b"last"),
        tb.RawBytes(tb.header(tarfile.TarInfo("d/1969"), mtime=tb.base256(-86400, 12))),
    ])
    layout = Layout(tmp_path / "layout")
    layout.tag(layout.image([(layer, "gz")]), "bad")
    m = mount_image(layout.root)
    expected = sorted([b"1969", b"a", b"first", b"last", b"n" * 255])
    for tree in ("layers/0/d", "rootfs/d"):
        d = m.path / "refs/bad" / tree
        assert listing_agrees_with_lookup(d) == expected, tree
        assert (d / "a").read_bytes() == b"the real a"
        assert (d / "last").read_bytes() == b"last"
        assert (d / ("n" * 255)).read_bytes() == b"255 bytes is fine"
        assert not (d / "a\udcff").exists()
        assert os.lstat(d / "1969").st_mtime == -86400  # negative times are valid
    assert (m.path / "oci-layout").read_bytes() == (layout.root / "oci-layout").read_bytes()
    hidden = log_lines(m, " hidden: ")
    assert len(hidden) == 7, hidden  # one line per hidden member, however often it is listed
    for needle in ["a\\x00b", "a\\x00c", "'d/bad-uid'", "'d/bad-dev'", "'d/bad-mtime'"]:
        assert sum(needle in line for line in hidden) == 1, needle
    assert "Traceback" not in m.log_text()


def test_sizes_of_2_63_and_above_fail_only_their_object(mount_image, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "layout")
    good = tb.build([tb.File("f", b"good")])
    layout.tag(layout.image([(good, "tar")]), "good")
    huge_layer = layout.blob(good, "application/vnd.oci.image.layer.v1.tar")
    huge_layer["size"] = 1 << 64
    manifest = layout.json_blob({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": layout.json_blob({"rootfs": {"type": "layers", "diff_ids": []}},
                                   "application/vnd.oci.image.config.v1+json"),
        "layers": [huge_layer],
    }, "application/vnd.oci.image.manifest.v1+json")
    layout.tag(manifest, "huge-layer")
    entry = layout.json_blob({"schemaVersion": 2}, "application/vnd.oci.image.manifest.v1+json")
    entry["size"] = 1 << 63
    layout.tag(entry, "huge-entry")
    tar_huge = tb.build([tb.File("before", b"before"),
                         tb.RawBytes(tb.header(tarfile.TarInfo("huge"),
                                               size=tb.base256(1 << 63, 12)))])
    layout.tag(layout.image([(tar_huge, "tar")]), "huge-member")
    m = mount_image(layout.root)
    m.expect_log(r"size 18446744073709551616 is out of range")
    refs = m.path / "refs"
    assert sorted(os.listdir(refs)) == ["good", "huge-layer", "huge-member"]
    assert (refs / "good/rootfs/f").read_bytes() == b"good"
    shown = sorted(os.listdir(refs / "huge-layer"))  # the manifest is unusable: error.txt
    assert "rootfs" not in shown and "manifest.json" in shown and "descriptor.json" in shown
    if "error.txt" in shown:
        assert "out of range" in (refs / "huge-layer/error.txt").read_text()
    assert (refs / "huge-member/rootfs/before").read_bytes() == b"before"
    assert os.listdir(refs / "huge-member/layers/0") == ["before"]
    assert len(log_lines(m, "size 9223372036854775808 is out of range")) == 1  # index.json
    assert len(log_lines(m, "member size 9223372036854775808 out of range")) == 1
    assert "Traceback" not in m.log_text()


def test_names_from_documents_follow_the_same_rule(mount_image, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "layout")
    image = layout.image([(tb.build([tb.File("f", b"f")]), "tar")])
    children = [
        {**image, "platform": {"os": "linux", "architecture": "amd64"}},
        {**image, "platform": {"os": "lin\0ux", "architecture": "arm64"}},
        {**image, "platform": {"os": "linux", "architecture": "arm", "variant": "v7/x"}},
        {**image, "platform": {"os": "linux", "architecture": "\ud800"}},
    ]
    index = layout.index(children)
    for name in ["multi", "byte\udcff", "lone\ud800", "spelt\udcc3\udca9", "nul\0", "ok/é"]:
        layout.tag(index, name)
    m = mount_image(layout.root)
    refs = m.path / "refs"
    assert listing_agrees_with_lookup(refs) == [b"byte\xff", b"multi", b"ok"]
    assert listing_agrees_with_lookup(refs / "ok") == ["é".encode()]
    platforms = refs / "multi/platforms"
    assert listing_agrees_with_lookup(platforms) == [b"linux-amd64"]
    assert (platforms / "linux-amd64/rootfs/f").read_bytes() == b"f"
    byte_ref = Path(os.fsdecode(os.fsencode(refs) + b"/byte\xff"))
    assert (byte_ref / "platforms/linux-amd64/rootfs/f").read_bytes() == b"f"
    assert listing_agrees_with_lookup(byte_ref / "platforms") == [b"linux-amd64"]
    exported = subprocess.run(["tar", "-tf", byte_ref / "image.tar"], capture_output=True)
    assert exported.returncode == 0 and b"index.json" in exported.stdout
    assert len(log_lines(m, "platform directory name")) == 3
    assert len(log_lines(m, "cannot be shown as a path")) == 3
    assert "Traceback" not in m.log_text()


SPARSE_FORMATS = {"gnu": ["--format=gnu"], "pax": ["--format=pax"],
                  "pax-0.1": ["--format=pax", "--sparse-version=0.1"]}


def test_sparse_files_read_as_tar_extracts_them(mount_image, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    chunk = os.urandom(300_000)
    with open(src / "disk.img", "wb") as f:
        f.truncate(64 << 20)
        for off in (0, 10 << 20, (64 << 20) - len(chunk)):
            f.seek(off)
            f.write(chunk)
    with open(src / "holes-only", "wb") as f:
        f.truncate(3 << 20)
    layout = Layout(tmp_path / "layout")
    for fmt, args in SPARSE_FORMATS.items():
        out = tmp_path / f"{fmt}.tar"
        subprocess.run(["tar", "--sparse", *args, "-C", src, "-cf", out, "."], check=True)
        how = "gz" if fmt == "pax" else "tar"  # the unpacked-copy path and the pread path
        layout.tag(layout.image([(out.read_bytes(), how)]), fmt)
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["tar", "-C", dest, "-xf", tmp_path / "gnu.tar"], check=True)
    m = mount_image(layout.root)
    for fmt in SPARSE_FORMATS:
        for tree in ("rootfs", "layers/0"):
            root = m.path / "refs" / fmt / tree
            for name in ("disk.img", "holes-only"):
                assert os.stat(root / name).st_size == os.stat(dest / name).st_size
                assert sha256(root / name) == sha256(dest / name), (fmt, tree, name)
            with open(root / "disk.img", "rb") as f:
                f.seek((10 << 20) - 10)
                assert f.read(20) == bytes(10) + chunk[:10]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def test_rootfs_matches_umoci_when_a_directory_became_a_file(mount_image, tmp_path: Path) -> None:
    """`umoci repack` writes `d` (a file) and then `d/.wh.x` whiteouts for a
    directory that became a file: `umoci unpack` shows the file, so must rootfs/."""
    require_tools("umoci")
    layout, bundle = tmp_path / "layout", tmp_path / "bundle"

    def umoci(*args: str | Path) -> None:
        subprocess.run(["umoci", *map(str, args)], check=True, capture_output=True)

    umoci("init", "--layout", layout)
    umoci("new", "--image", f"{layout}:t")
    umoci("unpack", "--image", f"{layout}:t", bundle)
    rootfs = bundle / "rootfs"
    (rootfs / "d/sub").mkdir(parents=True)
    (rootfs / "d/x").write_text("x")
    (rootfs / "d/sub/y").write_text("y")
    (rootfs / "keep").mkdir()
    os.symlink("d", rootfs / "link")
    os.symlink("keep", rootfs / "keep-link")
    umoci("repack", "--refresh-bundle", "--image", f"{layout}:t", bundle)
    subprocess.run(["rm", "-rf", rootfs / "d"], check=True)
    (rootfs / "d").write_text("now a file")
    os.unlink(rootfs / "keep-link")
    os.mkdir(rootfs / "keep-link")  # a symlink that became a directory
    umoci("repack", "--image", f"{layout}:t", bundle)
    umoci("unpack", "--image", f"{layout}:t", tmp_path / "oracle")
    expected = tmp_path / "oracle/rootfs"
    m = mount_image(layout)
    mounted = m.path / "refs/t/rootfs"
    assert (mounted / "d").read_text() == "now a file"
    problems = diff(snapshot(expected), snapshot(mounted))
    assert not problems, "\n".join(problems)
    for link in ("link",):
        assert stat.S_IMODE(os.lstat(mounted / link).st_mode) == 0o777
        assert os.lstat(mounted / link).st_mode == os.lstat(expected / link).st_mode
    assert stat.S_IMODE(os.lstat(m.path / "refs/t/layers/0/link").st_mode) == 0o777


def test_tolerated_oddities_are_logged_once(mount_image, tmp_path: Path) -> None:
    lower = tb.build([tb.File("f", b"f"), tb.Symlink("loop", target="loop"),
                      tb.Symlink("a", target="b"), tb.Symlink("b", target="a")])
    upper = tb.build([tb.File(".wh.", mode=0), tb.File(".wh..", mode=0),
                      tb.File("loop/x", b"x"), tb.File("a/y", b"y"), tb.File("g", b"g")])
    layout = Layout(tmp_path / "layout")
    layout.tag(layout.image([(lower, "tar"), (upper, "gz")]), "odd")
    m = mount_image(layout.root)
    root = m.path / "refs/odd/rootfs"
    assert sorted(os.listdir(root)) == ["a", "b", "f", "g", "loop"]
    assert (root / "loop/x").read_bytes() == b"x" and (root / "a/y").read_bytes() == b"y"
    assert os.readlink(root / "b") == "a"
    assert sorted(os.listdir(m.path / "refs/odd/layers/1")) == [".wh.", ".wh..", "a", "g", "loop"]
    assert len(log_lines(m, "names nothing")) == 2
    assert len(log_lines(m, "'loop' is used as a directory")) == 1
    assert len(log_lines(m, "'a' is used as a directory")) == 1
    json.dumps(m.log_text())  # the log is plain text


def test_many_members_and_many_hidden_ones(mount_image, tmp_path: Path) -> None:
    """The million-member case at a size the suite can afford (scripts/measure-layer-memory
    runs the big one): every member is listed, and hidden ones are logged one by one
    only up to a point, then summed up in one line."""
    members: list[tb.Member] = []
    for d in range(20):
        members.append(tb.Dir(f"d{d:02d}"))
        members.extend(tb.File(f"d{d:02d}/f{f:04d}") for f in range(1000))
    members.extend(pax_member(f"d00/bad\0{i}") for i in range(25))
    layout = Layout(tmp_path / "layout")
    layout.tag(layout.image([(tb.build(members, fmt=tarfile.PAX_FORMAT), "zst")]), "many")
    m = mount_image(layout.root)
    walked = sum(len(files) for _, _, files in os.walk(m.path / "refs/many/rootfs"))
    assert walked == 20_000
    assert len(listing_agrees_with_lookup(m.path / "refs/many/layers/0/d00")) == 1000
    assert len(log_lines(m, " hidden: ")) == 20
    assert len(log_lines(m, "5 more members hidden")) == 1
