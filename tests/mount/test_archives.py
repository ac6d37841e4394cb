"""Issue 5: OCI archives and docker-save tars mounted in place, compared with layouts."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, ocifs, require_fuse, unmount
from tests.helpers.treecompare import diff, snapshot

TARBALLS = FIXTURES / "go-containerregistry/pkg/v1/tarball/testdata"
MUTATE = FIXTURES / "go-containerregistry/pkg/v1/mutate/testdata"


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def archives(tmp_path_factory: pytest.TempPathFactory, sample_layout: Path) -> dict[str, Path]:
    """Archives made by skopeo from the sample layout, each also gzip'd and zstd'd."""
    d = tmp_path_factory.mktemp("archives")
    made = {}
    for kind, transport in (("oci", "oci-archive"), ("docker", "docker-archive")):
        path = d / f"sample-{kind}.tar"
        args = ["skopeo", "copy", "-q", f"oci:{sample_layout}:sample:1.0"]
        dest = f"{transport}:{path}:" + (
            "sample:1.0" if kind == "oci" else "example.com/sample:1.0"
        )
        subprocess.run([*args, dest], check=True)
        made[kind] = path
        gz = d / f"sample-{kind}.tar.gz"
        gz.write_bytes(gzip.compress(path.read_bytes(), compresslevel=6))
        made[f"{kind}-gz"] = gz
        subprocess.run(["zstd", "-q", "-f", str(path)], check=True)  # one frame, as zstd writes
        made[f"{kind}-zst"] = Path(f"{path}.zst")
    return made


def images(mnt: Path) -> dict[tuple[str, ...], Path]:
    """The config's diff_ids -> image directory, for every image under by-digest/.

    diff_ids identify an image's content across formats: skopeo rewrites the
    config (and recompresses layers) when it converts docker-save to OCI.
    """
    found = {}
    for d in (mnt / "by-digest").iterdir():
        if (d / "manifest.json").exists() and (d / "rootfs").exists():
            config = json.loads((d / "config.json").read_text())
            found[tuple(config["rootfs"]["diff_ids"])] = d
    return found


def compare_images(archive_dir: Path, layout_dir: Path, *, same_config: bool = True) -> None:
    if same_config:
        assert (archive_dir / "config.json").read_bytes() == (
            layout_dir / "config.json"
        ).read_bytes()
    problems = diff(snapshot(layout_dir / "rootfs"), snapshot(archive_dir / "rootfs"))
    assert not problems, "\n".join(problems)
    a_layers = sorted(p for p in (archive_dir / "layers").iterdir() if p.is_dir())
    l_layers = sorted(p for p in (layout_dir / "layers").iterdir() if p.is_dir())
    assert len(a_layers) == len(l_layers)
    for a, b in zip(a_layers, l_layers, strict=True):
        problems = diff(snapshot(b), snapshot(a))
        assert not problems, f"{a.name}:\n" + "\n".join(problems)


def as_layout(transport: str, archive: Path, dest: Path) -> Path:
    """`skopeo copy` every image of the archive into an OCI layout."""
    if transport == "docker-archive":
        with tarfile.open(archive) as tf:
            manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        sources = [f"docker-archive:{archive}:@{i}" for i in range(len(manifest))]
    else:
        sources = [f"oci-archive:{archive}"]
    for i, src in enumerate(sources):
        subprocess.run(["skopeo", "copy", "-q", src, f"oci:{dest}:img{i}"], check=True)
    return dest


@pytest.mark.parametrize("kind", ["oci", "oci-gz", "oci-zst", "docker", "docker-gz", "docker-zst"])
def test_skopeo_archives_equal_the_same_image_as_a_layout(
    mount_image, archives, sample_layout, tmp_path, kind
) -> None:
    archive = archives[kind]
    m = mount_image(archive)
    assert not (m.path / ".import").exists()
    layout = as_layout(
        "oci-archive" if kind.startswith("oci") else "docker-archive",
        archives[kind.removesuffix("-gz").removesuffix("-zst")],
        tmp_path / "layout",
    )
    lm = mount_image(layout)
    a_images, l_images = images(m.path), images(lm.path)
    assert set(a_images) == set(l_images) and a_images
    for key, directory in a_images.items():
        compare_images(directory, l_images[key], same_config=kind.startswith("oci"))
    if kind.startswith("oci"):
        # an OCI archive is a layout in a tar: every file is byte-identical
        archive_blobs = set(os.listdir(m.path / "blobs/sha256"))
        assert archive_blobs and archive_blobs <= set(os.listdir(sample_layout / "blobs/sha256"))
        for hex_ in os.listdir(m.path / "blobs/sha256"):
            assert sha256(m.path / "blobs/sha256" / hex_) == f"sha256:{hex_}"
        assert (m.path / "refs/sample:1.0/manifest.json").read_bytes() == (
            lm.path / "refs/img0/manifest.json"
        ).read_bytes()
    else:
        ref = m.path / "refs/example.com/sample:1.0"
        desc = json.loads((ref / "descriptor.json").read_text())
        assert "ocifs.synthesized" in desc
        assert sha256(ref / "manifest.json") == desc["digest"]
        manifest = json.loads((ref / "manifest.json").read_text())
        config = json.loads((ref / "config.json").read_text())
        assert [layer["digest"] for layer in manifest["layers"]] == config["rootfs"]["diff_ids"]
        for n, layer in enumerate(manifest["layers"]):
            assert sha256(ref / "layers" / f"{n}.tar") == layer["digest"]


@pytest.mark.parametrize(
    "fixture",
    [
        TARBALLS / "test_image_1.tar",
        TARBALLS / "test_bundle.tar",
        TARBALLS / "test_link.tar",
        TARBALLS / "hello-world-v25.tar",
        MUTATE / "whiteout_image.tar",
        MUTATE / "overwritten_file.tar",
        FIXTURES / "containers-image/docker/archive/fixtures/almostempty.tar",
    ],
    ids=lambda p: p.name,
)
def test_docker_save_fixtures(mount_image, tmp_path, fixture: Path) -> None:
    m = mount_image(fixture)
    layout = as_layout("docker-archive", fixture, tmp_path / "layout")
    lm = mount_image(layout)
    a_images, l_images = images(m.path), images(lm.path)
    assert set(a_images) == set(l_images) and a_images
    for key, directory in a_images.items():
        compare_images(directory, l_images[key], same_config=False)
    with tarfile.open(fixture) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    tags = [t for image in manifest for t in (image.get("RepoTags") or [])]
    for tag in tags:
        assert any((m.path / "refs").rglob("descriptor.json")), tag


def test_gzip_archive_seek_points_are_cached(mount_image, archives, cache_dir) -> None:
    m1 = mount_image(archives["docker-gz"])
    first = (m1.path / "refs/example.com/sample:1.0/rootfs/etc/os-release").read_bytes()
    entries = {p.name for p in cache_dir.rglob("*") if p.is_file()}
    assert entries
    m2 = mount_image(archives["docker-gz"])
    assert (m2.path / "refs/example.com/sample:1.0/rootfs/etc/os-release").read_bytes() == first
    assert {p.name for p in cache_dir.rglob("*") if p.is_file()} >= entries


def test_zstd_archive_is_decompressed_once_and_a_damaged_copy_rebuilt(
    mount_image, archives, cache_dir
) -> None:
    os_release = "refs/example.com/sample:1.0/rootfs/etc/os-release"

    def the_copy() -> Path:
        [copy] = [p for p in (cache_dir / "archive-data").rglob("*") if p.is_file()]
        return copy

    m1 = mount_image(archives["docker-zst"])
    first = (m1.path / os_release).read_bytes()
    built = the_copy().stat()
    unmount(m1.path)
    m2 = mount_image(archives["docker-zst"])  # the copy in the cache is reused
    assert (m2.path / os_release).read_bytes() == first
    assert (the_copy().stat().st_ino, the_copy().stat().st_size) == (built.st_ino, built.st_size)
    unmount(m2.path)
    with open(the_copy(), "r+b") as f:  # damage every MiB block of the copy
        for offset in range(0, built.st_size, 1 << 20):
            f.seek(offset)
            f.write(b"\xff" * 16)
    m3 = mount_image(archives["docker-zst"])  # detected on first use, rebuilt, retried
    assert (m3.path / os_release).read_bytes() == first
    assert the_copy().stat().st_ino != built.st_ino


def test_archive_mounts_are_read_only(mount_image, archives) -> None:
    m = mount_image(archives["oci"])
    for action in (
        lambda: (m.path / "index.json").write_text("{}"),
        lambda: (m.path / ".import").mkdir(),
        lambda: os.chmod(m.path / "refs", 0o777),
    ):
        with pytest.raises(OSError) as err:
            action()
        assert err.value.errno == errno.EROFS
    with open("/proc/self/mountinfo") as f:
        line = next(line for line in f if line.split()[4] == str(m.path))
    assert line.split()[5].startswith("ro,")


def _refused(source: Path, tmp_path: Path) -> str:
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir(exist_ok=True)
    result = ocifs("mount", str(source), str(mnt))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert not os.path.ismount(mnt)
    return lines[0]


def test_not_an_image_is_refused(tmp_path) -> None:
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tf:
        tf.add("/etc/hostname", "hostname")
    assert "not an image archive" in _refused(plain, tmp_path)
    assert str(plain) in _refused(plain, tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert str(text) in _refused(text, tmp_path)
    assert "content.tar" in _refused(TARBALLS / "content.tar", tmp_path)
    assert "null_manifest.tar" in _refused(TARBALLS / "null_manifest.tar", tmp_path)


def test_truncated_archives(mount_image, archives, tmp_path) -> None:
    for kind in ("oci", "docker", "docker-gz", "docker-zst"):
        data = archives[kind].read_bytes()
        cut = tmp_path / f"cut-{kind}.tar"
        cut.write_bytes(data[: len(data) // 2])
        line = _refused(cut, tmp_path)
        assert str(cut) in line


def test_traversal_member_names_are_never_used(mount_image, archives, tmp_path) -> None:
    evil = tmp_path / "evil.tar"
    shutil.copy(archives["oci"], evil)
    with tarfile.open(evil, "a") as tf:
        for name in ("../../outside", "/abs/blobs/sha256/" + "0" * 64, "blobs/sha256/../../x"):
            info = tarfile.TarInfo(name)
            info.size = 3
            import io

            tf.addfile(info, io.BytesIO(b"bad"))
    m = mount_image(evil)
    m.expect_log(r"ignor")
    assert (m.path / "refs/sample:1.0/rootfs/etc/os-release").read_text().startswith("NAME=")
    assert not (tmp_path / "outside").exists()
    for hex_ in os.listdir(m.path / "blobs/sha256"):
        assert sha256(m.path / "blobs/sha256" / hex_) == f"sha256:{hex_}"
