"""Issue 4: `.import/` through a real mount, driven by cp, dd, tar; read back by umoci/skopeo."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import multiprocessing
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ocifs
from tests.helpers import layoutcheck

EMPTY = "sha256:" + hashlib.sha256(b"").hexdigest()


def sh(*cmd: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=check,
                          timeout=120)


def empty_layout(path: Path) -> Path:
    path.mkdir()
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    return path


def check_tools(layout: Path, tag: str) -> None:
    """Third-party tools read what .import/ wrote."""
    layoutcheck.check(str(layout))
    sh("umoci", "stat", "--image", f"{layout}:{tag}", check=True)
    sh("skopeo", "inspect", f"oci:{layout}:{tag}", check=True)
    sh("oci-image-tool", "validate", "--type", "image", "--ref", f"name={tag}", layout, check=True)


def test_xattrs_while_importing(mount_image: Any, images: dict[str, Path],
                                tmp_path: Path) -> None:
    """The kernel asks security.capability before every write() into .import/
    (docs/import.md); the answer is "none" there, and the rest of the mount
    still shows its xattrs (the layer's virtual user.ocifs.layer) afterwards."""
    import shutil

    layout = tmp_path / "layout"
    shutil.copytree(images["layout"], layout)
    m = mount_image(layout)
    data = os.urandom(9 << 20)
    target = m.path / ".import" / f"sha256:{hashlib.sha256(data).hexdigest()}"
    with open(target, "wb") as f:
        for start in range(0, len(data), 3 << 20):  # several write()s, each asking
            f.write(data[start : start + (3 << 20)])
            f.flush()
            for name, number in (("security.capability", errno.ENODATA),
                                 ("security.selinux", errno.EOPNOTSUPP)):
                with pytest.raises(OSError) as caught:
                    os.getxattr(target, name)
                assert caught.value.errno == number, name
    assert (layout / "blobs/sha256" / target.name.split(":")[1]).read_bytes() == data
    layer_file = m.path / "refs/v1/rootfs/data/a.txt"
    assert os.getxattr(layer_file, "user.ocifs.layer").startswith(b"0 sha256:")
    assert layer_file.read_bytes() == b"a\n"


def test_cp_blob_by_content_and_by_digest_name(
    mount_image: Any, layout: Path, tmp_path: Path
) -> None:
    m = mount_image(layout)
    data = os.urandom(5_000_000)
    src = tmp_path / "layer.tar.gz"
    src.write_bytes(data)
    hex_ = hashlib.sha256(data).hexdigest()
    assert sh("cp", src, m.path / ".import/").returncode == 0
    assert (m.path / "blobs/sha256" / hex_).read_bytes() == data  # visible at once
    assert (layout / "blobs/sha256" / hex_).read_bytes() == data
    assert sh("cp", src, m.path / f".import/sha256:{hex_}").returncode == 0  # already present
    sha512 = hashlib.sha512(b"x").hexdigest()
    (m.path / ".import/blobs/sha512").mkdir(parents=True)
    (m.path / ".import/blobs/sha512" / sha512).write_bytes(b"x")
    assert (layout / "blobs/sha512" / sha512).read_bytes() == b"x"
    # dd flushes before writing; the empty blob imports from a flush with no data
    assert sh("dd", "if=/dev/null", f"of={m.path / '.import' / EMPTY}").returncode == 0
    assert (layout / "blobs/sha256" / EMPTY.split(":")[1]).read_bytes() == b""
    status = (m.path / ".import/.status").read_text()
    assert f"OK layer.tar.gz: committed sha256:{hex_}" in status
    layoutcheck.check(str(layout))


def test_sparse_source_with_holes(mount_image: Any, layout: Path, tmp_path: Path) -> None:
    m = mount_image(layout)
    src = tmp_path / "sparse"
    with open(src, "wb") as f:
        f.write(b"head")
        f.seek(8 << 20)
        f.write(b"tail")
    hex_ = hashlib.sha256(src.read_bytes()).hexdigest()
    assert sh("cp", "--sparse=always", src, m.path / f".import/sha256:{hex_}").returncode == 0
    assert (layout / "blobs/sha256" / hex_).stat().st_size == src.stat().st_size


@pytest.mark.parametrize("tool", ["cp", "tar"])
def test_copy_a_whole_layout(mount_image: Any, layout: Path, images: dict[str, Path],
                             tool: str) -> None:
    m = mount_image(layout)
    src = images["layout"]
    if tool == "cp":
        result = sh("cp", "-r", f"{src}/.", m.path / ".import/")
    else:
        tar = subprocess.Popen(["tar", "-C", str(src), "-cf", "-", "."], stdout=subprocess.PIPE)
        result = subprocess.run(
            ["tar", "-C", str(m.path / ".import"), "--no-same-owner", "-xf", "-"],
            stdin=tar.stdout, capture_output=True, text=True, timeout=120)
        tar.wait()
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(m.path / "refs")) == ["v1", "v2"]
    assert (m.path / "refs/v1/manifest.json").exists()
    for tag in ("v1", "v2"):
        check_tools(layout, tag)
    assert "PENDING" not in (m.path / ".import/.status").read_text().splitlines()[-1]


@pytest.mark.parametrize(("kind", "ref"), [("oci", "v1"), ("oci.gz", "v1"),
                                           ("docker", "docker.io/library/busybox:1"),
                                           ("docker.zst", "docker.io/library/busybox:1")])
def test_cp_image_archive(mount_image: Any, layout: Path, images: dict[str, Path], kind: str,
                          ref: str) -> None:
    m = mount_image(layout)
    result = sh("cp", images[kind], m.path / ".import/")
    assert result.returncode == 0, result.stderr
    assert (m.path / "refs" / ref / "manifest.json").exists()
    if kind.startswith("docker"):  # Docker schema-2 manifests: umoci/skopeo's oci: skips them
        layoutcheck.check(str(layout))
        assert ref in layoutcheck.refs(str(layout))
    else:
        check_tools(layout, ref)
    if not kind.startswith("docker"):
        sh("skopeo", "copy", "-q", f"oci:{layout}:v1", f"oci:{layout.parent / 'copy'}:x",
           check=True)


def test_refs_name_tags_and_retags(mount_image: Any, layout: Path, images: dict[str, Path]) -> None:
    m = mount_image(layout)
    sh("cp", "-r", f"{images['layout']}/.", m.path / ".import/", check=True)
    index = json.loads((images["layout"] / "index.json").read_text())
    digests = {e["annotations"]["org.opencontainers.image.ref.name"]: e["digest"]
               for e in index["manifests"]}
    blob = images["layout"] / "blobs/sha256"
    (m.path / ".import/refs/example.com/app").mkdir(parents=True)
    sh("cp", blob / digests["v1"].split(":")[1], m.path / ".import/refs/example.com/app/1",
       check=True)
    assert (m.path / "refs/example.com/app/1/manifest.json").exists()
    sh("cp", blob / digests["v2"].split(":")[1], m.path / ".import/refs/v1", check=True)  # retag
    refs = layoutcheck.refs(str(layout))
    assert refs["v1"] == digests["v2"] and refs["example.com/app/1"] == digests["v1"]
    check_tools(layout, "example.com/app/1")


def _failure_cases(images: dict[str, Path], tmp: Path) -> list[tuple[str, Path, str, str]]:
    """(case, source file, name under .import/, expected strerror)."""
    def f(name: str, data: bytes) -> Path:
        p = tmp / name
        p.write_bytes(data)
        return p

    oci = images["oci"].read_bytes()
    missing = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + "0" * 64, "size": 2}, "layers": []})
    zst = subprocess.run(["zstd", "-q", "-c"], input=oci, capture_output=True, check=True).stdout
    return [
        ("digest mismatch", f("x", b"content"), "sha256:" + "1" * 64, "Bad message"),
        ("invalid digest name", f("y", b"c"), "sha256:xyz", "Invalid argument"),
        ("unsupported algorithm", f("z", b"c"), "md5:" + "a" * 32, "Operation not supported"),
        ("truncated archive", f("t.tar", oci[: len(oci) // 2]), "t.tar", "Invalid argument"),
        ("truncated gzip archive", f("t.tar.gz", gzip.compress(oci)[:-100]), "t.tar.gz",
         "Invalid argument"),
        ("truncated zstd archive", f("t.tar.zst", zst[: len(zst) // 2]), "t.tar.zst",
         "Invalid argument"),
        ("malformed json", f("m.json", b"{not json"), "refs/bad", "Invalid argument"),
        ("references never arrive", f("n.json", missing.encode()), "refs/never",
         "Invalid argument"),
    ]


def test_failures_fail_close_and_change_nothing(mount_image: Any, layout: Path,
                                                images: dict[str, Path], tmp_path: Path) -> None:
    m = mount_image(layout)
    m.expect_log("import failed")
    (m.path / ".import/refs").mkdir(exist_ok=True)
    before = layoutcheck.snapshot(str(layout))
    for case, src, name, strerror in _failure_cases(images, tmp_path):
        result = sh("cp", src, m.path / ".import" / name)
        assert result.returncode != 0, case
        assert strerror in result.stderr, (case, result.stderr)
        assert layoutcheck.snapshot(str(layout)) == before, case
    errors = (m.path / ".import/.errors").read_text()
    assert "its name says sha256:" + "1" * 64 in errors
    assert "truncated" in errors and "references missing blob" in errors
    assert "import failed" in m.log_text()
    layoutcheck.check(str(layout))


def test_size_mismatch_against_descriptor(mount_image: Any, layout: Path,
                                          images: dict[str, Path], tmp_path: Path) -> None:
    m = mount_image(layout)
    m.expect_log("import failed")
    src = images["layout"]
    sh("cp", "-r", f"{src}/blobs", m.path / ".import/", check=True)
    before = layoutcheck.snapshot(str(layout))
    index = json.loads((src / "index.json").read_text())
    index["manifests"][0]["size"] += 1
    bad = tmp_path / "index.json"
    bad.write_text(json.dumps(index))
    result = sh("cp", bad, m.path / ".import/index.json")
    assert result.returncode != 0 and "Bad message" in result.stderr
    assert layoutcheck.snapshot(str(layout)) == before


# A size-limited tmpfs needs root; without it only the injected ENOSPC runs (never a skip).
@pytest.mark.parametrize("how", ["injected", "tmpfs"] if os.geteuid() == 0 else ["injected"])
def test_disk_full(mount_image: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   how: str) -> None:
    if how == "tmpfs":
        fs = tmp_path / "small"
        fs.mkdir()
        sh("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", fs, check=True)
        layout = empty_layout(fs / "layout")
    else:
        monkeypatch.setenv("OCIFS_TEST_MODE", "1")
        monkeypatch.setenv("OCIFS_TEST_FAIL_AT", "staging-write:ENOSPC")
        layout = empty_layout(tmp_path / "layout")
    try:
        m = mount_image(layout)
        m.expect_log("import failed")
        before = layoutcheck.snapshot(str(layout))
        src = tmp_path / "big"
        src.write_bytes(os.urandom(4 << 20))
        result = sh("cp", src, m.path / ".import/")
        assert result.returncode != 0 and "No space left on device" in result.stderr
        assert layoutcheck.snapshot(str(layout)) == before
        sh("fusermount3", "-u", m.path)
        layoutcheck.check(str(layout))  # staging removed
    finally:
        if how == "tmpfs":
            sh("umount", "-l", tmp_path / "small")


def _takes_o_direct(directory: Path) -> bool:
    try:
        fd = os.open(directory / ".probe", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError as exc:
        assert exc.errno == errno.EINVAL
        return False
    os.close(fd)
    os.unlink(directory / ".probe")
    return True


# ramfs refuses O_DIRECT (EINVAL), as tmpfs did before Linux 6.6: the staging writes
# fall back to plain pwrite. Mounting it needs root; without, only the local disk runs.
@pytest.mark.parametrize("where", ["disk", "ramfs"] if os.geteuid() == 0 else ["disk"])
def test_import_where_o_direct_is_refused(mount_image: Any, tmp_path: Path, where: str) -> None:
    fs = tmp_path / "fs"
    fs.mkdir()
    if where == "ramfs":
        sh("mount", "-t", "ramfs", "ocifs-test-ramfs", fs, check=True)
    try:
        assert _takes_o_direct(fs) is (where == "disk")  # the path under test is taken
        layout = empty_layout(fs / "layout")
        m = mount_image(layout)
        # several direct-write chunks (importer.directio.CHUNK) and an unaligned tail
        data = os.urandom((9 << 20) + 12345)
        src = tmp_path / "layer.bin"
        src.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        assert sh("cp", src, m.path / ".import/").returncode == 0
        assert sh("cp", src, m.path / f".import/sha256:{digest}").returncode == 0
        assert (layout / "blobs/sha256" / digest).read_bytes() == data
        assert f"sha256:{digest}" in (m.path / ".import/.status").read_text()
        sh("fusermount3", "-u", m.path)
        layoutcheck.check(str(layout))  # no staging left
    finally:
        if where == "ramfs":
            sh("umount", "-l", fs)


def test_mkdir_rm_mv_ln_semantics(mount_image: Any, layout: Path) -> None:
    m = mount_image(layout)
    imp = m.path / ".import"
    (imp / "d/e").mkdir(parents=True)
    assert sh("rmdir", imp / "d").returncode != 0  # not empty
    (imp / "d/e/file").write_bytes(b"data")
    assert (layout / "blobs/sha256" / hashlib.sha256(b"data").hexdigest()).exists()
    assert sh("mv", imp / "d/e/file", imp / "d/renamed").returncode == 0
    assert sh("rm", imp / "d/renamed").returncode == 0
    assert (layout / "blobs/sha256" / hashlib.sha256(b"data").hexdigest()).exists()  # kept
    assert "Operation not permitted" in sh("ln", "-s", "x", imp / "link").stderr
    assert sh("ln", imp / ".status", imp / "hard").returncode != 0
    assert sh("rm", imp / ".status").returncode != 0
    assert "Read-only" in sh("touch", m.path / "blobs/new").stderr


def _concurrent_worker(args: tuple[str, int]) -> list[str]:
    """One process importing 5 small images, each as layer + config + refs/<name>."""
    mnt, worker = args
    imp = Path(mnt) / ".import"
    names = []
    for rnd in range(5):
        layer = os.urandom(10_000)
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        for blob in (layer, config):
            (imp / f"sha256:{hashlib.sha256(blob).hexdigest()}").write_bytes(blob)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": "sha256:" + hashlib.sha256(layer).hexdigest(),
                        "size": len(layer)}]}).encode()
        name = f"w{worker}-r{rnd}"
        (imp / "refs" / name).write_bytes(manifest)
        names.append(name)
    return names


def test_concurrent_imports_from_processes_and_two_daemons(mount_image: Any, layout: Path) -> None:
    a = mount_image(layout)
    b = mount_image(layout)  # a second ocifs process on the same layout
    for m in (a, b):
        (m.path / ".import/refs").mkdir(exist_ok=True)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(8) as pool:
        results = pool.map(_concurrent_worker, [(str((a, b)[w % 2].path), w) for w in range(8)])
    expected = sorted(n for names in results for n in names)
    assert sorted(layoutcheck.refs(str(layout))) == expected
    layoutcheck.check(str(layout))
    assert sorted(os.listdir(a.path / "refs")) == expected


def test_same_blob_from_two_writers(mount_image: Any, layout: Path, tmp_path: Path) -> None:
    m = mount_image(layout)
    src = tmp_path / "same"
    src.write_bytes(os.urandom(20 << 20))
    procs = [subprocess.Popen(["cp", str(src), str(m.path / f".import/copy{i}")]) for i in range(2)]
    assert [p.wait(60) for p in procs] == [0, 0]
    layoutcheck.check(str(layout))
    assert len(os.listdir(layout / "blobs/sha256")) == 1


def test_import_waits_for_a_lock_held_elsewhere(mount_image: Any, layout: Path,
                                                  images: dict[str, Path]) -> None:
    import fcntl

    m = mount_image(layout)  # EBUSY after the timeout: tests/unit/test_importer_area.py
    src = images["layout"]
    sh("cp", "-r", f"{src}/blobs", m.path / ".import/", check=True)
    fd = os.open(layout / ".ocifs.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        # meanwhile the mount keeps serving readers
        proc = subprocess.Popen(["cp", str(src / "index.json"), str(m.path / ".import/")],
                                stderr=subprocess.PIPE, text=True)
        assert sorted(os.listdir(m.path / "blobs/sha256"))
        assert proc.poll() is None  # waiting for the lock, not failed yet
    finally:
        os.close(fd)
    assert proc.wait(60) == 0  # lock released: the import went through
    assert "v1" in layoutcheck.refs(str(layout))


def test_lock_held_past_lock_timeout_fails_with_ebusy(
    mount_image: Any, layout: Path, images: dict[str, Path]
) -> None:
    import fcntl

    m = mount_image(layout, "--lock-timeout", "0.5")
    m.expect_log("import failed|layout lock held")
    src = images["layout"]
    sh("cp", "-r", f"{src}/blobs", m.path / ".import/", check=True)
    before = layoutcheck.snapshot(str(layout))
    fd = os.open(layout / ".ocifs.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        result = sh("cp", src / "index.json", m.path / ".import/")
    finally:
        os.close(fd)
    assert result.returncode != 0 and "Device or resource busy" in result.stderr, result.stderr
    assert layoutcheck.snapshot(str(layout)) == before
    status = (m.path / ".import/.status").read_text().splitlines()[-1]
    assert " FAILED index.json: " in status and "layout lock held" in status, status
    sh("cp", src / "index.json", m.path / ".import/", check=True)  # free again: it goes through
    assert "v1" in layoutcheck.refs(str(layout))


def test_lock_timeout_option_is_checked(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for bad in ("-1", "soon", "1e9"):
        result = ocifs("mount", str(tmp_path), str(mnt), "--lock-timeout", bad)
        assert result.returncode == 2 and "invalid seconds" in result.stderr, result.stderr


def test_writer_killed_mid_copy_commits_nothing(mount_image: Any, layout: Path,
                                                tmp_path: Path) -> None:
    m = mount_image(layout)
    m.expect_log("import failed")
    src = tmp_path / "big"
    with open(src, "wb") as f:
        for _ in range(32):
            f.write(os.urandom(4 << 20))
    hex_ = hashlib.sha256(src.read_bytes()).hexdigest()
    before = layoutcheck.snapshot(str(layout))
    # a slow writer (dd with small blocks) so the kill lands mid-copy
    dd = subprocess.Popen(["dd", f"if={src}", f"of={m.path / '.import' / ('sha256:' + hex_)}",
                           "bs=64k"], stderr=subprocess.DEVNULL)
    staging = layout / ".ocifs-staging"
    for _ in range(1000):
        if staging.exists() and any(p.stat().st_size > 1 << 20 for p in staging.iterdir()):
            break
        subprocess.run(["sleep", "0.005"], check=False)
    dd.kill()
    dd.wait()
    assert layoutcheck.staging_leftovers(str(layout)) == []
    assert layoutcheck.snapshot(str(layout)) == before  # the partial data was not committed
    assert f"sha256:{hex_}" in (m.path / ".import/.errors").read_text()


def test_external_tool_changes_index_while_mounted(mount_image: Any, layout: Path,
                                                   images: dict[str, Path]) -> None:
    m = mount_image(layout)
    (m.path / ".import/touched").touch()  # touch: create + empty flushes, no error
    sh("skopeo", "copy", "-q", f"oci:{images['layout']}:v2", f"oci:{layout}:external",
       check=True)
    sh("cp", images["oci"], m.path / ".import/", check=True)  # re-reads index.json under lock
    assert {"external", "v1"} <= set(layoutcheck.refs(str(layout)))
    layoutcheck.check(str(layout))
    assert sorted(os.listdir(m.path / "refs")) == ["external", "v1"]
