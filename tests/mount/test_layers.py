"""Issue 3: per-layer trees and the merged rootfs, against `tar -x` and `umoci unpack`."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REPO, copy_layout
from tests.helpers.treecompare import diff, snapshot

TARBALLS = FIXTURES / "go-containerregistry/pkg/v1"


@pytest.fixture(scope="session")
def hard_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """umoci-built corner cases, plus a zstd copy made by skopeo."""
    root = tmp_path_factory.mktemp("hard")
    build = root / "build"
    subprocess.run([str(REPO / "tests/data/make-hard-image"), str(build), "hard"], check=True)
    layout = root / "layout"
    subprocess.run(["skopeo", "copy", "-q", f"oci:{build}:hard", f"oci:{layout}:hard"], check=True)
    subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            "--dest-compress-format",
            "zstd",
            f"oci:{build}:hard",
            f"oci:{root / 'zstd'}:hard",
        ],
        check=True,
    )
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci:{root / 'zstd'}:hard", f"oci:{layout}:hard-zstd"], check=True
    )
    return layout


@pytest.fixture(scope="session")
def docker_fixture_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """go-containerregistry docker-save images (whiteouts, overwrites) as one OCI layout."""
    layout = tmp_path_factory.mktemp("gcr") / "layout"
    for tar in [
        "mutate/testdata/whiteout_image.tar",
        "mutate/testdata/overwritten_file.tar",
        "tarball/testdata/test_image_1.tar",
    ]:
        name = Path(tar).stem.replace("_", "-")
        subprocess.run(
            ["skopeo", "copy", "-q", f"docker-archive:{TARBALLS / tar}", f"oci:{layout}:{name}"],
            check=True,
        )
    return layout


def umoci_unpack(layout: Path, ref: str, dest: Path) -> Path:
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{ref}", str(dest)],
        check=True,
        capture_output=True,
    )
    return dest / "rootfs"


def layer_blobs(layout: Path, ref: str) -> list[Path]:
    index = json.loads((layout / "index.json").read_text())
    desc = next(
        d
        for d in index["manifests"]
        if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref
    )
    manifest = json.loads((layout / "blobs/sha256" / desc["digest"][7:]).read_text())
    return [layout / "blobs/sha256" / layer["digest"][7:] for layer in manifest["layers"]]


def tar_extract(blob: Path, dest: Path) -> Path:
    """`tar -x` of a layer blob. The stream gets end-of-archive blocks appended
    first: umoci 0.4.7 omits them (and the last member's padding), which makes
    GNU tar stop with "Unexpected EOF" and leave the last file empty."""
    dest.mkdir(parents=True)
    head = blob.read_bytes()[:4]
    decompress = {b"\x1f\x8b": ["gzip", "-dc"], b"\x28\xb5": ["zstd", "-qdc"]}.get(head[:2])
    data = (
        subprocess.run([*decompress, str(blob)], capture_output=True, check=True).stdout
        if decompress
        else blob.read_bytes()
    )
    subprocess.run(
        [
            "tar",
            "-xf",
            "-",
            "-C",
            str(dest),
            "--numeric-owner",
            "--same-permissions",
            "--xattrs",
            "--xattrs-include=*",
            "--warning=no-unknown-keyword",
        ],
        input=data + b"\0" * 10240,
        check=True,
        capture_output=True,
    )
    return dest


def refs_of(layout: Path) -> list[str]:
    index = json.loads((layout / "index.json").read_text())
    return [d["annotations"]["org.opencontainers.image.ref.name"] for d in index["manifests"]]


@pytest.mark.parametrize("which", ["sample", "hard", "docker"])
def test_rootfs_and_layer_trees_match_umoci_and_tar(
    mount_image, sample_layout, hard_layout, docker_fixture_layout, tmp_path, which
) -> None:
    layout = {"sample": sample_layout, "hard": hard_layout, "docker": docker_fixture_layout}[which]
    m = mount_image(layout)
    m.expect_log(r"points outside the layer root")
    for ref in refs_of(layout):
        # umoci 0.4.7 cannot read zstd layers: "<x>-zstd" is skopeo's zstd copy of "<x>",
        # so the same files are expected.
        oracle_ref = ref.removesuffix("-zstd")
        expected_root = umoci_unpack(layout, oracle_ref, tmp_path / f"unpack-{ref}")
        mounted_root = m.path / "refs" / ref / "rootfs"
        problems = diff(snapshot(expected_root), snapshot(mounted_root))
        assert not problems, f"rootfs of {ref} differs from umoci unpack:\n" + "\n".join(problems)
        for n, blob in enumerate(layer_blobs(layout, ref)):
            expected = tar_extract(blob, tmp_path / f"tar-{ref}-{n}")
            problems = diff(snapshot(expected), snapshot(m.path / "refs" / ref / "layers" / str(n)))
            assert not problems, f"layer {n} of {ref} differs from tar -x:\n" + "\n".join(problems)


def test_hard_image_details(mount_image, hard_layout) -> None:
    m = mount_image(hard_layout)
    for ref in ("hard", "hard-zstd"):
        root = m.path / "refs" / ref / "rootfs"
        assert os.readlink(root / "links/escaping-link") == "../../../../../../etc/shadow"
        assert os.readlink(root / "links/abs-link") == "/dir/file"
        assert (root / "dir/file").read_text() == "replaced\n"
        hl = root / "links/hardlink-elsewhere"
        assert hl.read_text() == "file\n"  # the lower layer's file, still linked in layer 0
        l0 = m.path / "refs" / ref / "layers/0"
        st = os.stat(l0 / "dir/file")
        assert st.st_nlink == 3 and os.stat(l0 / "dir/hardlink").st_ino == st.st_ino
        assert os.getxattr(root / "xattr-file", "user.comment") == b"hello xattr"
        assert os.getxattr(root / "xattr-file", "user.binary") == b"\x00\xff\x10"
        _assert_xattr_errno(root / "xattr-file", "user.absent", errno.ENODATA)
        assert os.stat(root / "modes/setuid").st_mode & 0o7777 == 0o4755
        assert os.stat(root / "modes/owned").st_uid == 1234
        assert not (root / "gone").exists() and not (root / "opaque/old").exists()
        assert (root / "type/file-then-dir").is_dir() and (
            root / "type/was-file-then-dir"
        ).is_file()
        # whiteouts are shown as they are in layer trees, never in rootfs
        names = [
            p.name
            for layer in (m.path / "refs" / ref / "layers").iterdir()
            if layer.is_dir()
            for p in layer.rglob(".wh.*")
        ]
        assert ".wh.gone" in names and ".wh..wh..opq" in names
        assert not list(root.rglob(".wh.*"))
        # device nodes are shown with their numbers but the mount is nodev
        dev = root / "special/null"
        assert os.major(os.stat(dev).st_rdev) == 1
        with pytest.raises(OSError) as err:
            open(dev, "rb").close()
        assert err.value.errno in (errno.EACCES, errno.EPERM)
        # symlinks are never followed by ocifs: the escaping one resolves on the host side only
        assert not (root / "links/dangling").exists()


def test_block_sizes_size_client_buffers(mount_image, sample_layout) -> None:
    """Files report 1 MiB (big `cp`/`cat` reads); directories one page, because
    glibc sizes its getdents buffer, and so every READDIRPLUS request, from it."""
    m = mount_image(sample_layout)
    ref = m.path / "refs" / "sample:1.0"
    for directory in (m.path, ref, ref / "layers/0", ref / "rootfs", ref / "rootfs/etc"):
        assert os.stat(directory).st_blksize == 4096, directory
    for file in (ref / "manifest.json", ref / "rootfs/etc/os-release", ref / "layers/0/bin/hello"):
        assert os.stat(file).st_blksize == 1 << 20, file


def _assert_xattr_errno(path: Path, name: str, expected: int) -> None:
    with pytest.raises(OSError) as err:
        os.getxattr(path, name, follow_symlinks=False)
    assert err.value.errno == expected, (path, name, err.value)


def test_ls_l_is_not_asked_about_labels_and_acls_per_file(mount_image, sample_layout) -> None:
    """Absent SELinux labels and ACLs answer "not supported", which coreutils
    remembers per device, so `ls -l` stops sending two requests per entry;
    other absent names stay ENODATA."""
    m = mount_image(sample_layout)
    root = m.path / "refs" / "sample:1.0" / "rootfs"
    for path in (root / "etc/os-release", root / "etc", m.path / ".import", m.path):
        for name in ("security.selinux", "system.posix_acl_access", "system.posix_acl_default"):
            _assert_xattr_errno(path, name, errno.EOPNOTSUPP)
        _assert_xattr_errno(path, "user.absent", errno.ENODATA)
    listing = subprocess.run(
        ["ls", "-l", str(root / "etc")], check=True, capture_output=True, text=True
    ).stdout.splitlines()[1:]
    assert listing and all(line[10] == " " for line in listing), listing  # no "." or "+"


def test_second_mount_reuses_the_layer_cache(mount_image, sample_layout, cache_dir) -> None:
    m1 = mount_image(sample_layout)
    first = sorted(
        p.relative_to(m1.path / "refs/sample:1.0") for p in (m1.path / "refs/sample:1.0").rglob("*")
    )
    assert m1.log_text().count("indexing layer") == 4
    cached = list((cache_dir / "layer-index").rglob("*"))
    assert cached, "no layer index was cached"
    m2 = mount_image(sample_layout)
    second = sorted(
        p.relative_to(m2.path / "refs/sample:1.0") for p in (m2.path / "refs/sample:1.0").rglob("*")
    )
    assert second == first
    assert "indexing layer" not in m2.log_text()


def test_corrupt_cache_entries_are_rebuilt(mount_image, sample_layout, cache_dir) -> None:
    m1 = mount_image(sample_layout)
    expected = (m1.path / "refs/sample:1.0/rootfs/etc/os-release").read_bytes()
    for entry in (cache_dir / "layer-index").rglob("*"):
        if entry.is_file():
            entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    m2 = mount_image(sample_layout)
    m2.expect_log(r"corrupt or truncated")
    assert (m2.path / "refs/sample:1.0/rootfs/etc/os-release").read_bytes() == expected
    assert m2.log_text().count("indexing layer") >= 1


def test_truncated_layer_shows_what_it_can(mount_image, hard_layout, tmp_path) -> None:
    layout = copy_layout(hard_layout, tmp_path / "layout")
    blob = layer_blobs(layout, "hard")[0]
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) // 2])
    m = mount_image(layout)
    m.expect_log(blob.name)
    layer0 = m.path / "refs/hard/layers/0"
    with pytest.raises(OSError) as err:
        os.listdir(layer0)
    assert err.value.errno == errno.EIO
    assert blob.name in m.log_text()
    # other layers and other images keep working
    assert (m.path / "refs/hard/layers/1").is_dir()
    assert (m.path / "refs/hard-zstd/rootfs/dir/file").read_text() == "replaced\n"


def test_cp_a_out_of_a_layer(mount_image, hard_layout, tmp_path) -> None:
    m = mount_image(hard_layout)
    dest = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(m.path / "refs/hard/layers/0/dir"), str(dest)], check=True)
    assert (dest / "file").read_text() == "file\n"
    assert os.stat(dest / "file").st_ino == os.stat(dest / "hardlink").st_ino
    assert os.readlink(dest / "rel-link") == "file"
    shutil.rmtree(dest)


def test_rsync_aHAX_out_of_rootfs(mount_image, hard_layout, tmp_path) -> None:
    """A backup's usual flags copy the tree whole and quietly: hard links, xattrs,
    symlinks, devices, fifos, modes, owners, mtimes (absent ACLs read as none)."""
    m = mount_image(hard_layout)
    src = m.path / "refs/hard/rootfs"
    dest = tmp_path / "rsync"
    done = subprocess.run(
        ["rsync", "-aHAX", f"{src}/", str(dest)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert diff(snapshot(src, mtimes=True), snapshot(dest, mtimes=True)) == []
    assert os.getxattr(dest / "xattr-file", "user.comment") == b"hello xattr"


def test_tar_of_a_layer_tree_sees_stable_attributes(mount_image, sample_layout, tmp_path) -> None:
    """The top of layers/<n>/ and rootfs/ is shown before indexing; it must not change after."""
    m = mount_image(sample_layout)
    ref = m.path / "refs/sample:1.0"
    before = [os.stat(ref / p) for p in ("layers/0", "rootfs")]
    for where in ("layers/0", "rootfs"):
        result = subprocess.run(
            ["tar", "-C", str(ref / where), "-cf", str(tmp_path / "out.tar"), "."],
            capture_output=True, text=True, check=False,
        )
        assert result.returncode == 0, result.stderr
    after = [os.stat(ref / p) for p in ("layers/0", "rootfs")]
    assert [(s.st_mode, s.st_mtime_ns, s.st_nlink) for s in before] == [
        (s.st_mode, s.st_mtime_ns, s.st_nlink) for s in after
    ]
