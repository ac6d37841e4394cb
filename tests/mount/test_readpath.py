"""Reading every file of a layer: exact bytes, and the requests that may be saved.

Two things make a read-all cheaper (docs/layers.md "FUSE requests per file"):
a mount without `.import/` answers FLUSH with ENOSYS, so the kernel stops
sending it, and `open` stores a small file's bytes in the kernel's page cache
before answering, so its reads never reach the daemon. The tests check the
bytes against the layer's own tar, and count requests in libfuse's `-o debug`
log or ocifs's `--debug` log; never a time.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from ocifs.fuse import PUSH_LIMIT
from tests.conftest import OCIFS, REPO, _is_mounted, require_fuse, unmount
from tests.helpers import tarbuilder
from tests.helpers.layoutbuilder import Layout


def _members() -> tuple[list[tarbuilder.Member], dict[str, bytes]]:
    """Files of many sizes (empty, a page, just under/at/over PUSH_LIMIT, 3 MiB),
    a hard link and a symlink; and the bytes each regular file must read as."""
    rng = random.Random(14)
    sizes = [0, 1, 4095, 4096, 4097, 65_536, 200_000, PUSH_LIMIT - 1, PUSH_LIMIT,
             PUSH_LIMIT + 1, 3 << 20]
    sizes += [rng.randrange(0, 40_000) for _ in range(120)]
    members: list[tarbuilder.Member] = [tarbuilder.Dir("d"), tarbuilder.Dir("d/e")]
    files: dict[str, bytes] = {}
    for n, size in enumerate(sizes):
        name = f"d/f{n}" if n % 2 else f"d/e/f{n}"
        files[name] = rng.randbytes(size)
        members.append(tarbuilder.File(name, data=files[name]))
    members.append(tarbuilder.Hardlink("d/hard", target="d/f1"))
    files["d/hard"] = files["d/f1"]
    members.append(tarbuilder.Symlink("d/link", target="f1"))
    return members, files


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """A layout whose refs gz, zst and tar hold the same layer, compressed three ways."""
    members, files = _members()
    layout = Layout(tmp_path_factory.mktemp("readpath") / "layout")
    for how in ("gz", "zst", "tar"):
        layout.tag(layout.image([layout.layer(members, how)]), how)
    return layout.path, files


def _tar_all(directory: Path) -> dict[str, bytes]:
    """Every regular file under `directory` as `tar -cf -` read it."""
    out = subprocess.run(
        ["tar", "-C", str(directory), "-cf", "-", "."], capture_output=True, check=True, timeout=120
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        return {
            m.name.removeprefix("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile() or m.islnk()
        }


def _files_equal(got: dict[str, bytes], want: dict[str, bytes]) -> None:
    assert sorted(got) == sorted(want)
    bad = [name for name in want if got[name] != want[name]]
    assert not bad, f"{len(bad)} files differ, e.g. {bad[:5]}"


@pytest.mark.parametrize("how", ["gz", "zst", "tar"])
@pytest.mark.parametrize("mode", ["--read-only", "writable"])
def test_every_file_reads_its_exact_bytes(
    mount_image: Any, image: tuple[Path, dict[str, bytes]], how: str, mode: str
) -> None:
    """On read-only and writable mounts, fresh (first open pushes the bytes) and
    again on the same mount (the kernel's page cache, or READ where nothing was pushed)."""
    layout, files = image
    m = mount_image(layout, *([mode] if mode != "writable" else []))
    layer = m.path / "refs" / how / "layers/0"
    for _ in range(2):
        _files_equal(_tar_all(layer), files)
    assert os.readlink(layer / "d/link") == "f1"


def test_small_files_are_read_without_read_requests(
    mount_image: Any, image: tuple[Path, dict[str, bytes]]
) -> None:
    """A file of at most PUSH_LIMIT bytes is in the kernel's page cache once opened:
    reading it sends no READ (ocifs's debug log has one line per READ); a bigger
    one is read through READ requests. The first file read from a layer opens the
    layer's reader, so it alone goes through READ."""
    layout, files = image
    m = mount_image(layout, "--debug", "--read-only")
    layer = m.path / "refs/gz/layers/0"
    first = layer / "d/f1"
    assert first.read_bytes() == files["d/f1"]  # opens the layer's reader
    small = [n for n, data in files.items() if 0 < len(data) <= PUSH_LIMIT and n != "d/hard"]
    before = m.log_text().count(" read fh=")
    for name in small:
        if layer / name != first:
            assert (layer / name).read_bytes() == files[name]
    assert m.log_text().count(" read fh=") == before
    big = "d/e/f10"
    assert len(files[big]) > PUSH_LIMIT
    assert (layer / big).read_bytes() == files[big]
    assert m.log_text().count(" read fh=") > before


def test_nothing_is_pushed_from_a_copy_that_is_not_in_the_page_cache(
    mount_image: Any, image: tuple[Path, dict[str, bytes]]
) -> None:
    """The push runs on the request loop for bytes nobody asked for yet, so it
    only takes what the page cache holds (RWF_NOWAIT): with the unpacked copy
    evicted, small files are read through READ requests, with exact bytes."""
    if os.geteuid() != 0:
        pytest.fail("needs root: the page cache is emptied through /proc/sys/vm/drop_caches")
    layout, files = image
    m = mount_image(layout, "--debug", "--read-only")
    layer = m.path / "refs/zst/layers/0"
    first = layer / "d/f1"
    assert first.read_bytes() == files["d/f1"]  # the layer is indexed, its reader open
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("1\n")  # clean page-cache pages
    small = [
        n for n, data in files.items()
        if 0 < len(data) <= PUSH_LIMIT and n not in ("d/hard", "d/f1")
    ][:20]
    before = m.log_text().count(" read fh=")
    for name in small:
        assert (layer / name).read_bytes() == files[name]
    assert m.log_text().count(" read fh=") > before


def test_a_file_held_open_is_not_pushed_again(
    mount_image: Any, image: tuple[Path, dict[str, bytes]]
) -> None:
    """Pushing while another handle of the inode is open could wait on pages locked
    for that handle's READ: a second opener then reads through READ, with the same
    bytes, while the first still reads."""
    layout, files = image
    m = mount_image(layout, "--read-only")
    layer = m.path / "refs/zst/layers/0"
    name = "d/e/f6"  # 200,000 bytes
    with open(layer / name, "rb") as held:
        assert held.read(4096) == files[name][:4096]
        for _ in range(3):
            assert (layer / name).read_bytes() == files[name]
        assert held.read() == files[name][4096:]


def test_many_readers_of_the_same_files_at_once(
    mount_image: Any, image: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    """Eight processes read the same files at the same time, on fresh inodes (an
    open racing another's READ is the case a push must not deadlock on)."""
    layout, files = image
    m = mount_image(layout, "--read-only")
    layer = m.path / "refs/tar/layers/0"
    names = sorted(n for n, data in files.items() if data)
    listing = tmp_path / "names"
    listing.write_bytes(b"".join(os.fsencode(n) + b"\0" for n in names))
    script = (
        f"cd {layer} && for i in 1 2 3 4 5 6 7 8; do "
        f"xargs -0 sha256sum < {listing} > {tmp_path}/sums.$i & done; wait"
    )
    subprocess.run(["bash", "-c", script], check=True, timeout=120)
    import hashlib

    want = "".join(f"{hashlib.sha256(files[n]).hexdigest()}  {n}\n" for n in names)
    for i in range(1, 9):
        assert (tmp_path / f"sums.{i}").read_text() == want


def _fuse_requests(layout: Path, tmp_path: Path, *args: str) -> dict[str, int]:
    """Requests per opcode that `tar -cf` of refs/gz/layers/0 sent, from libfuse's
    `-o debug` log of a foreground mount (after a first `ls`, which opens the layer)."""
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir(parents=True)
    log = tmp_path / "fuse.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [*OCIFS, "mount", "--foreground", "-o", "debug", "--cache-dir",
             str(tmp_path / "cache"), *args, str(layout), str(mnt)],
            stdout=subprocess.DEVNULL, stderr=err, cwd=REPO,
        )
    try:
        deadline = time.monotonic() + 30
        while not _is_mounted(mnt):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        layer = mnt / "refs/gz/layers/0"
        os.listdir(layer)
        start = log.read_text(errors="replace").count("opcode:")
        _tar_all(layer)
    finally:
        unmount(mnt)
        proc.wait(timeout=30)
    counts: dict[str, int] = {}
    text = log.read_text(errors="replace")
    for line in text.splitlines():
        if "opcode: " in line:
            if start:
                start -= 1
                continue
            op = line.split("opcode: ", 1)[1].split()[0]
            counts[op] = counts.get(op, 0) + 1
    return counts


def test_read_only_mount_stops_flush_writable_mount_keeps_it(
    image: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    """A mount without `.import/` answers the first FLUSH with ENOSYS and the
    kernel sends no other; a writable mount gets one per close (imports verify
    and commit there)."""
    layout, files = image
    opened = len(files) - 1  # tar stores d/hard as a link to d/f1, without opening it
    ro = _fuse_requests(layout, tmp_path / "ro", "--read-only")
    assert ro.get("OPEN", 0) >= opened
    assert ro.get("FLUSH", 0) <= 1
    assert ro.get("GETATTR", 0) == 0
    rw = _fuse_requests(layout, tmp_path / "rw")
    assert rw.get("FLUSH", 0) >= opened
    # bytes pushed at open: READs only for the files too big to push
    big = sum(1 for data in files.values() if len(data) > PUSH_LIMIT)
    assert ro.get("READ", 0) < opened and ro.get("READ", 0) >= big
    print(f"requests, read-only: {ro}; writable: {rw}", file=sys.stderr)


def test_a_corrupt_unpacked_copy_is_rebuilt_when_its_files_are_pushed(
    mount_image: Any, tmp_path: Path, cache_dir: Path
) -> None:
    """A block of the cache's unpacked copy damaged between two mounts: a push that
    meets it leaves the file to READ, which rebuilds the copy; every file reads right."""
    rng = random.Random(9)
    files = {f"f{i:02d}": rng.randbytes(100_000) for i in range(40)}  # ~4 MiB: 4 blocks
    layout = Layout(tmp_path / "layout")
    layout.tag(layout.image([layout.layer(
        [tarbuilder.File(n, data=d) for n, d in files.items()], "gz")]), "img")
    first = mount_image(layout.path, "--read-only")
    assert (first.path / "refs/img/layers/0/f00").read_bytes() == files["f00"]
    unmount(first.path)
    (copy,) = [p for p in (cache_dir / "layer-data").rglob("*") if p.is_file()]
    with open(copy, "r+b") as f:  # a byte in the third MiB: files read later meet it
        f.seek((2 << 20) + 4321)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    m = mount_image(layout.path, "--read-only")
    m.expect_log(r"unpacked copy of layer .* is corrupt")
    _files_equal(_tar_all(m.path / "refs/img/layers/0"), files)
    assert "is corrupt" in m.log_text() and "rebuilding" in m.log_text()
