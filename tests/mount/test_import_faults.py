"""Issue 16: `.import/` and the mount's changing files under faults the tests make themselves.

After each case the layout is checked by `tests.helpers.layoutcheck`, which shares
no code with ocifs: index.json valid, every blob hashes to its name, every
reference present, no staging left.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tools
from tests.helpers import layoutcheck
from tests.mount.test_import import sh


def invariants(layout: Path) -> None:
    layoutcheck.check(str(layout))
    assert layoutcheck.staging_leftovers(str(layout)) == []


def read_via_tools(path: Path) -> tuple[bytes, int, int]:
    """What `cat`, `stat -c %s` and `wc -c` say about a file in the mount."""
    cat = subprocess.run(["cat", str(path)], capture_output=True, check=True, timeout=60).stdout
    size = int(sh("stat", "-c", "%s", path, check=True).stdout)
    wc = int(sh("wc", "-c", path, check=True).stdout.split()[0])
    return cat, size, wc


def assert_current(mounted: Path, on_disk: Path) -> None:
    cat, size, wc = read_via_tools(mounted)
    assert cat == on_disk.read_bytes()
    assert size == wc == len(cat)


def jq_ok(path: Path) -> None:
    cat = subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE)
    jq = subprocess.run(["jq", "-e", ".manifests"], stdin=cat.stdout, capture_output=True,
                        timeout=60)
    cat.wait()
    assert jq.returncode == 0, jq.stderr


# -- readers see the file as it is now ---------------------------------------------


def test_index_json_is_current_after_imports_and_outside_rewrites(
    mount_image: Any, layout: Path, images: dict[str, Path], tmp_path: Path
) -> None:
    m = mount_image(layout)
    # skopeo truncates index.json and then writes it: a check in between reports it
    # (once), and the next check reads the whole file
    m.expect_log("index.json changed but cannot be used")
    index = m.path / "index.json"
    held = open(index, "rb")  # noqa: SIM115 (a reader keeping its descriptor across changes)
    first = held.read()
    assert_current(index, layout / "index.json")
    assert sh("cp", images["oci"], m.path / ".import/").returncode == 0
    jq_ok(index)
    assert_current(index, layout / "index.json")
    assert b"v1" in index.read_bytes()
    # an outside tool rewrites index.json while mounted (and makes it longer)
    result = sh("skopeo", "copy", f"oci:{images['layout']}:v2", f"oci:{layout}:v2")
    assert result.returncode == 0, result.stderr
    jq_ok(index)
    assert_current(index, layout / "index.json")
    assert sorted(os.listdir(m.path / "refs")) == ["v1", "v2"]
    # ... and shorter: a smaller index written in place by hand
    small = {"schemaVersion": 2, "manifests": json.loads(
        (layout / "index.json").read_bytes())["manifests"][:1]}
    tmp = layout / "index.json.new"
    tmp.write_text(json.dumps(small))
    tmp.rename(layout / "index.json")
    jq_ok(index)
    assert_current(index, layout / "index.json")
    kept = small["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    assert os.listdir(m.path / "refs") == [kept]
    # the held descriptor still reads the version it opened, whole
    held.seek(0)
    assert held.read() == first
    held.close()
    invariants(layout)


def test_status_is_current_and_followable(
    mount_image: Any, layout: Path, tmp_path: Path
) -> None:
    m = mount_image(layout)
    status = m.path / ".import/.status"
    assert_current_report(status)
    follower = subprocess.Popen(["tail", "-s", "0.1", "-n", "+1", "-f", str(status)],
                                stdout=subprocess.PIPE)
    try:
        for n in range(3):
            blob = tmp_path / f"blob{n}"
            blob.write_bytes(os.urandom(1000 + n))
            assert sh("cp", blob, m.path / ".import/").returncode == 0
            digest = hashlib.sha256(blob.read_bytes()).hexdigest()
            last = sh("tail", "-n", "1", status).stdout
            assert f"OK blob{n}: committed sha256:{digest}" in last
            assert_current_report(status)
            assert f"OK blob{n}:" in read_line(follower)
    finally:
        follower.kill()
        follower.wait()
    invariants(layout)


def read_line(proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    """The next line `proc` prints (fails instead of hanging if none comes)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"no line from {proc.args} (got {line!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            raise AssertionError(f"{proc.args} ended (got {line!r})")
        line += chunk
    return line.decode()


def assert_current_report(path: Path) -> None:
    cat, size, wc = read_via_tools(path)
    assert size == wc == len(cat)
    assert cat == path.read_bytes()


# -- one final status line per import -------------------------------------------------


def status_lines(m: Any) -> list[str]:
    return (m.path / ".import/.status").read_text().splitlines()


def test_zero_byte_write_to_a_digest_name_gets_a_line(
    mount_image: Any, layout: Path, tmp_path: Path
) -> None:
    m = mount_image(layout)
    wrong = "sha256:" + hashlib.sha256(b"x").hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    result = sh("cp", empty, m.path / ".import" / wrong)
    assert result.returncode != 0 and "Bad message" in result.stderr
    line = wait_for_line(m, f" {wrong}:")
    assert f"FAILED {wrong}: nothing was written" in line
    assert len(status_lines(m)) == 1
    invariants(layout)


def test_index_waiting_for_blobs_ends_with_one_line(
    mount_image: Any, layout: Path, images: dict[str, Path]
) -> None:
    m = mount_image(layout)
    src = images["layout"]
    imp = m.path / ".import"
    assert sh("cp", src / "index.json", imp / "index.json").returncode == 0
    pending = (imp / ".pending").read_text()
    assert "waits for" in pending
    assert status_lines(m) == []
    assert_current_report(imp / ".pending")
    assert sh("cp", "-r", f"{src}/blobs", f"{imp}/").returncode == 0
    assert (imp / ".pending").read_text() == ""
    assert_current_report(imp / ".pending")  # shrunk: a new inode, size 0
    lines = [line for line in status_lines(m) if " index.json:" in line]
    assert len(lines) == 1 and " OK index.json: 2 entries merged" in lines[0]
    assert not any("PENDING" in line for line in status_lines(m))
    invariants(layout)


# -- users are told the real reason ---------------------------------------------------


def tar_member(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def cp_error(src: Path, dst: Path) -> str:
    result = sh("cp", src, dst)
    assert result.returncode != 0, "the import should have failed"
    return result.stderr


def one_failure(m: Any, name: str, reason: str) -> None:
    """Exactly one line for the import, in .status and .errors, naming the reason."""
    lines = [line for line in status_lines(m) if f" {name}:" in line]
    assert len(lines) == 1 and f"FAILED {name}: " in lines[0] and reason in lines[0], lines
    errors = (m.path / ".import/.errors").read_text()
    assert reason in errors
    assert "closed before it could be verified" not in errors
    assert reason in m.log_text()


def test_json_member_over_the_limit_is_efbig(
    mount_image: Any, layout: Path, tmp_path: Path
) -> None:
    m = mount_image(layout)
    src = tmp_path / "big-index.tar"
    with open(src, "wb") as f:
        f.write(tar_member("index.json", (64 << 20) + 1))
        f.write(bytes(24 << 20))  # the writer keeps writing after the header
    err = cp_error(src, m.path / ".import/")
    assert "File too large" in err
    assert "Input/output error" not in err
    one_failure(m, "big-index.tar", "over the limit")
    invariants(layout)


@pytest.mark.parametrize("name", ["index.json", "refs/app"])
def test_document_over_the_limit_fails_while_writing(
    mount_image: Any, layout: Path, tmp_path: Path, name: str
) -> None:
    m = mount_image(layout)
    src = tmp_path / "huge.json"
    with open(src, "wb") as f:
        f.truncate((64 << 20) + 4096)
    (m.path / ".import/refs").mkdir(exist_ok=True)
    err = cp_error(src, m.path / ".import" / name)
    assert "File too large" in err
    one_failure(m, name, "document limit")
    invariants(layout)


def test_digest_mismatch_early_in_a_long_archive_is_ebadmsg(
    mount_image: Any, layout: Path, tmp_path: Path
) -> None:
    m = mount_image(layout)
    src = tmp_path / "lying.tar"
    wrong = hashlib.sha256(b"something else").hexdigest()
    data = os.urandom(1 << 20)
    with open(src, "wb") as f:
        f.write(tar_member(f"blobs/sha256/{wrong}", len(data)))
        f.write(data)
        tail = bytes(32 << 20)
        f.write(tar_member("blobs/sha256/" + hashlib.sha256(tail).hexdigest(), len(tail)))
        f.write(tail)
    err = cp_error(src, m.path / ".import/")
    assert "Bad message" in err
    assert "Input/output error" not in err
    one_failure(m, "lying.tar", f"its name says sha256:{wrong}")
    invariants(layout)
    assert not (layout / "blobs/sha256" / hashlib.sha256(data).hexdigest()).exists()


def test_disk_full_while_staging_is_enospc(
    mount_image: Any, layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")
    monkeypatch.setenv("OCIFS_TEST_FAIL_AT", "staging-write:ENOSPC")
    m = mount_image(layout)
    src = tmp_path / "blob"
    src.write_bytes(os.urandom(8 << 20))
    err = cp_error(src, m.path / ".import/")
    assert "No space left on device" in err
    one_failure(m, "blob", "No space left on device")
    invariants(layout)
    assert layoutcheck.refs(str(layout)) == {}


def test_eio_at_the_final_directory_fsync_reports_what_is_true(
    mount_image: Any, layout: Path, images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")
    monkeypatch.setenv("OCIFS_TEST_FAIL_AT", "index-dirsync:EIO")
    m = mount_image(layout)
    result = sh("cp", images["oci"], m.path / ".import/")
    assert result.returncode != 0 and "Input/output error" in result.stderr
    lines = [line for line in status_lines(m) if " oci.tar:" in line]
    assert len(lines) == 1 and "UNSYNCED oci.tar: committed: " in lines[0], lines
    assert "may not survive a crash" in lines[0]
    assert "v1" in layoutcheck.refs(str(layout))  # it is in index.json ...
    assert (m.path / "refs/v1/manifest.json").exists()  # ... and the mount shows it
    assert_current(m.path / "index.json", layout / "index.json")
    invariants(layout)


def test_eio_at_the_blob_directory_fsync_says_the_blob_is_there(
    mount_image: Any, layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")
    monkeypatch.setenv("OCIFS_TEST_FAIL_AT", "blob-dirsync:EIO")
    m = mount_image(layout)
    src = tmp_path / "blob"
    src.write_bytes(os.urandom(10000))
    err = cp_error(src, m.path / ".import/")
    assert "Input/output error" in err
    line = wait_for_line(m, " blob:")
    assert "UNSYNCED blob: 1 new blob(s) are in" in line and "may not survive" in line
    hex_ = hashlib.sha256(src.read_bytes()).hexdigest()
    assert (m.path / "blobs/sha256" / hex_).read_bytes() == src.read_bytes()
    invariants(layout)


def test_unnamed_file_whose_writer_was_killed_is_reported_unverified(
    mount_image: Any, layout: Path
) -> None:
    m = mount_image(layout)
    target = m.path / ".import/partial.bin"
    writer = subprocess.run(
        [sys.executable, "-c",
         "import os, signal, sys\n"
         "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n"
         "os.write(fd, b'x' * 100000)\n"
         "os.kill(os.getpid(), signal.SIGKILL)\n",
         str(target)],
        capture_output=True, timeout=60)
    assert writer.returncode == -signal.SIGKILL
    digest = hashlib.sha256(b"x" * 100000).hexdigest()
    line = wait_for_line(m, " partial.bin:")
    assert f"UNVERIFIED partial.bin: committed sha256:{digest}" in line
    assert "cannot be checked for completeness" in line
    invariants(layout)


def test_writer_closing_from_another_thread_is_verified_as_usual(
    mount_image: Any, layout: Path
) -> None:
    """Only the process going away makes an import UNVERIFIED, not the thread that
    opened the file ending before the file is closed."""
    m = mount_image(layout)
    target = m.path / ".import/threads.bin"
    writer = subprocess.run(
        [sys.executable, "-c",
         "import os, sys, threading\n"
         "fds = []\n"
         "t = threading.Thread(target=lambda: fds.append(os.open(sys.argv[1], "
         "os.O_WRONLY | os.O_CREAT)))\n"
         "t.start(); t.join()\n"
         "os.write(fds[0], b'y' * 5000)\n"
         "os.close(fds[0])\n",
         str(target)],
        capture_output=True, text=True, timeout=60)
    assert writer.returncode == 0, writer.stderr
    line = wait_for_line(m, " threads.bin:")
    assert "OK threads.bin: committed sha256:" in line
    invariants(layout)


def wait_for_line(m: Any, needle: str) -> str:
    """The .status line containing `needle` (RELEASE reaches the daemon after close())."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [line for line in status_lines(m) if needle in line]
        if found:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no .status line with {needle!r}: {status_lines(m)}")


def test_changing_a_finished_import_imports_the_changed_content(
    mount_image: Any, layout: Path, tmp_path: Path
) -> None:
    """Not five zero bytes: `truncate -s 5` imports the first five bytes, `>>` appends."""
    m = mount_image(layout)
    src = tmp_path / "data"
    src.write_bytes(b"finished content\n")
    dst = m.path / ".import/data"
    assert sh("cp", src, dst).returncode == 0
    assert sh("truncate", "-s", "5", dst).returncode == 0
    assert dst.read_bytes() == b"finis"
    assert (layout / "blobs/sha256" / hashlib.sha256(b"finis").hexdigest()).read_bytes() \
        == b"finis"
    with open(dst, "ab") as f:
        f.write(b"hed")
    assert dst.read_bytes() == b"finished"
    assert dst.stat().st_size == len(b"finished")
    assert (layout / "blobs/sha256" / hashlib.sha256(b"finished").hexdigest()).exists()
    assert [line.split(" ", 1)[1] for line in status_lines(m)] == [
        f"OK data: committed sha256:{hashlib.sha256(c).hexdigest()} ({len(c)} bytes)"
        for c in (b"finished content\n", b"finis", b"finished")]
    # by name there is no close() to commit at: refused
    with pytest.raises(PermissionError):
        os.truncate(dst, 3)
    # a digest name keeps its promise: changed content no longer matches it
    name = "sha256:" + hashlib.sha256(b"finished content\n").hexdigest()
    assert sh("cp", src, m.path / ".import" / name).returncode == 0
    result = sh("truncate", "-s", "5", m.path / ".import" / name)
    assert result.returncode != 0 and "Bad message" in result.stderr
    invariants(layout)


# -- inputs are taken for what they are ------------------------------------------------


@pytest.mark.parametrize("tool", ["gzip", "zstd"])
@pytest.mark.parametrize("cut", [1, 5])
def test_truncated_compressed_archive_fails(
    mount_image: Any, layout: Path, images: dict[str, Path], tmp_path: Path, tool: str,
    cut: int
) -> None:
    m = mount_image(layout)
    packed = subprocess.run([tool, "-c", str(images["oci"])], capture_output=True,
                            check=True, timeout=120).stdout
    src = tmp_path / f"image.tar.{tool}"
    src.write_bytes(packed[:-cut])
    err = cp_error(src, m.path / ".import/")
    assert "Invalid argument" in err
    one_failure(m, src.name, "truncated")
    assert layoutcheck.refs(str(layout)) == {}
    invariants(layout)
    # the whole stream imports
    src.write_bytes(packed)
    assert sh("cp", src, m.path / ".import/").returncode == 0
    assert "v1" in layoutcheck.refs(str(layout))
    invariants(layout)


@pytest.mark.parametrize("name", [
    "SHA256:{hex}", "sha256:", "sha256:{hex} ", " sha256:{hex}", "sha256:{HEX}",
    "sha256:{hex}0", "sha512:{hex}", "Sha256:{hex}",
])
def test_digest_looking_invalid_names_are_refused_at_create(
    mount_image: Any, layout: Path, name: str
) -> None:
    m = mount_image(layout)
    hex_ = hashlib.sha256(b"data").hexdigest()
    bad = name.format(hex=hex_, HEX=hex_.upper())
    with pytest.raises(OSError) as caught:
        (m.path / ".import" / bad).write_bytes(b"data")
    assert caught.value.errno == errno.EINVAL
    assert not (layout / "blobs").exists() or not any((layout / "blobs").rglob("*"))
    # ordinary names with a colon are still names
    (m.path / ".import/image:latest").write_bytes(b"data")
    assert (layout / "blobs/sha256" / hex_).exists()
    invariants(layout)


def oci_archive(path: Path, extra_first: list[tuple[str, bytes]] | None = None,
                zeros: int = 24 << 20) -> str:
    """An OCI archive built with tarfile alone; its layer holds `zeros` zero bytes,
    so the archive has long zero runs (holes once copied sparsely)."""
    def blob(data: bytes) -> tuple[str, dict[str, Any]]:
        hex_ = hashlib.sha256(data).hexdigest()
        return hex_, {"digest": f"sha256:{hex_}", "size": len(data)}

    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as t:
        info = tarfile.TarInfo("zeros")
        info.size = zeros
        t.addfile(info, io.BytesIO(bytes(zeros)))
    layer = layer_buf.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [
                             "sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
    lhex, ldesc = blob(layer)
    chex, cdesc = blob(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cdesc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **ldesc}],
    }).encode()
    mhex, mdesc = blob(manifest)
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **mdesc,
        "annotations": {"org.opencontainers.image.ref.name": "sparse"}}]}).encode()
    members = [*(extra_first or []), ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
               (f"blobs/sha256/{lhex}", layer), (f"blobs/sha256/{chex}", config),
               (f"blobs/sha256/{mhex}", manifest), ("index.json", index)]
    with tarfile.open(path, "w") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return "sparse"


def make_sparse(path: Path) -> None:
    """Punch holes where the file has zeros (as `cp --sparse=always` would)."""
    sparse = path.with_suffix(".sparse")
    assert sh("cp", "--sparse=always", path, sparse).returncode == 0
    sparse.rename(path)
    assert path.stat().st_blocks * 512 < path.stat().st_size  # really has holes


def test_sparse_archive_copied_with_plain_cp_is_an_archive(
    mount_image: Any, layout: Path, tmp_path: Path
) -> None:
    m = mount_image(layout)
    src = tmp_path / "image.tar"
    ref = oci_archive(src)
    make_sparse(src)
    result = sh("cp", src, m.path / ".import/")
    assert result.returncode == 0, result.stderr
    assert ref in layoutcheck.refs(str(layout))
    assert f"OK {src.name}: oci-archive" in wait_for_line(m, f" {src.name}:")
    invariants(layout)


WRITER = """
import os, sys
src, dst = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
fd = os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644)
os.ftruncate(fd, len(data))          # extend first, as some writers do
block = 1 << 16
for off in range(0, len(data), block):
    chunk = data[off:off + block]
    if chunk.count(0) != len(chunk):  # leave zero blocks as holes
        os.pwrite(fd, chunk, off)
os.close(fd)
"""


def test_writer_that_extends_with_ftruncate_first_gets_an_archive(
    mount_image: Any, layout: Path, tmp_path: Path
) -> None:
    m = mount_image(layout)
    src = tmp_path / "image.tar"
    ref = oci_archive(src)
    result = subprocess.run([sys.executable, "-c", WRITER, str(src),
                             str(m.path / ".import/image.tar")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert ref in layoutcheck.refs(str(layout))
    invariants(layout)


def test_unknown_members_are_ignored_in_classification_and_import(
    mount_image: Any, layout: Path, tmp_path: Path
) -> None:
    m = mount_image(layout)
    src = tmp_path / "odd.tar"
    ref = oci_archive(src, [("README", b"not part of an image\n"),
                            ("blobs/sha256/not-hex", b"junk")], zeros=1000)
    result = sh("cp", src, m.path / ".import/")
    assert result.returncode == 0, result.stderr
    assert ref in layoutcheck.refs(str(layout))
    assert "2 unknown member(s) ignored" in wait_for_line(m, " odd.tar:")
    log = m.log_text()
    assert "member 'README' is not part of an image archive; ignored" in log
    assert "member 'blobs/sha256/not-hex' is not part of an image archive; ignored" in log
    invariants(layout)


def with_repo_tags(src: Path, dst: Path, tags: list[str]) -> None:
    """A copy of a docker-save tar whose manifest.json names `tags`."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name.lstrip("./") == "manifest.json":
                items = json.loads(data or b"")
                items[0]["RepoTags"] = tags
                data = json.dumps(items).encode()
                member.size = len(data)
            tout.addfile(member, io.BytesIO(data) if data is not None else None)


@pytest.mark.parametrize("bad", ["", "BusyBox:1", "../../etc:passwd", "with space:1",
                                 "busybox:", "x@sha256:" + "a" * 64])
def test_invalid_repo_tags_refuse_the_whole_import(
    mount_image: Any, layout: Path, images: dict[str, Path], tmp_path: Path, bad: str
) -> None:
    m = mount_image(layout)
    src = tmp_path / "tags.tar"
    with_repo_tags(images["docker"], src, ["busybox:1", bad])
    before = layoutcheck.snapshot(str(layout))
    err = cp_error(src, m.path / ".import/")
    assert "Invalid argument" in err
    line = wait_for_line(m, " tags.tar:")
    assert "FAILED tags.tar:" in line and f"RepoTags {bad!r}" in line
    assert layoutcheck.snapshot(str(layout)) == before  # nothing partly tagged
    assert os.listdir(m.path / "refs") == []
    invariants(layout)
    with_repo_tags(images["docker"], src, ["busybox:1", "quay.io/x/y:2"])
    assert sh("cp", src, m.path / ".import/").returncode == 0
    assert {"docker.io/library/busybox:1", "quay.io/x/y:2"} <= set(
        layoutcheck.refs(str(layout)))


def test_invalid_ref_names_in_an_index_are_refused(
    mount_image: Any, layout: Path, images: dict[str, Path], tmp_path: Path
) -> None:
    m = mount_image(layout)
    src = images["layout"]
    index = json.loads((src / "index.json").read_text())
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = "../x y"
    bad = tmp_path / "index.json"
    bad.write_text(json.dumps(index))
    assert sh("cp", "-r", f"{src}/blobs", f"{m.path}/.import/").returncode == 0
    err = cp_error(bad, m.path / ".import/index.json")
    assert "Invalid argument" in err
    assert "'../x y'" in wait_for_line(m, " index.json:")
    assert layoutcheck.refs(str(layout)) == {}
    (m.path / ".import/refs").mkdir(exist_ok=True)
    with pytest.raises(OSError) as caught:
        (m.path / ".import/refs/bad name").write_bytes(b"{}")
    assert caught.value.errno == errno.EINVAL
    invariants(layout)


# -- write-to-temp-then-rename writers: a failed import commits nothing ----------------


def blobs_on_disk(layout: Path) -> set[str]:
    return {p.name for p in (layout / "blobs").rglob("*") if p.is_file()} \
        if (layout / "blobs").exists() else set()


@pytest.mark.parametrize("tool", ["gio", "rsync"])
def test_temp_then_rename_writer_that_fails_commits_nothing(
    mount_image: Any, layout: Path, tmp_path: Path, tool: str
) -> None:
    require_tools(tool)
    m = mount_image(layout)
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_bytes(b"good content\n")
    bad.write_bytes(b"other content\n")
    name = "sha256:" + hashlib.sha256(good.read_bytes()).hexdigest()
    dst = m.path / ".import" / name
    assert sh("cp", good, dst).returncode == 0  # the name exists, imported
    before = blobs_on_disk(layout)
    copy = ["gio", "copy"] if tool == "gio" else ["rsync"]
    result = sh(*copy, bad, dst)
    assert result.returncode != 0
    assert blobs_on_disk(layout) == before  # the temporary was not committed
    assert hashlib.sha256(bad.read_bytes()).hexdigest() not in blobs_on_disk(layout)
    lines = [line for line in status_lines(m) if f" {name}:" in line]
    assert len(lines) == 2 and f"FAILED {name}: content is" in lines[1], lines
    assert not any(".goutputstream" in line or "/." in line for line in status_lines(m))
    invariants(layout)
    # ... and the same writer with the right content imports, with one line
    assert sh(*copy, good, m.path / ".import/copied").returncode == 0
    line = wait_for_line(m, " copied:")
    assert "OK copied: committed" in line
    invariants(layout)


def test_temporary_rewritten_before_its_rename_drops_the_first_staging(
    mount_image: Any, layout: Path
) -> None:
    """A held temporary written again (O_TRUNC) starts a new import; the first one's
    staging is discarded (in a worker thread) and only the second content commits."""
    m = mount_image(layout)
    temp = m.path / ".import/.layer.bin.XXXXXX"
    first, second = os.urandom(5 << 20), os.urandom(3 << 20)
    temp.write_bytes(first)  # held: a hidden unnamed file is kept staged at close
    temp.write_bytes(second)
    os.rename(temp, m.path / ".import/layer.bin")
    assert "OK layer.bin: committed" in wait_for_line(m, " layer.bin:")
    on_disk = blobs_on_disk(layout)
    assert hashlib.sha256(second).hexdigest() in on_disk
    assert hashlib.sha256(first).hexdigest() not in on_disk
    invariants(layout)  # no staging left, from either content


def test_rsync_of_an_archive_imports_it_under_its_real_name(
    mount_image: Any, layout: Path, images: dict[str, Path]
) -> None:
    m = mount_image(layout)
    result = sh("rsync", images["oci"], f"{m.path}/.import/")
    assert result.returncode == 0, result.stderr
    assert "v1" in layoutcheck.refs(str(layout))
    assert "OK oci.tar: oci-archive" in wait_for_line(m, " oci.tar:")
    invariants(layout)
