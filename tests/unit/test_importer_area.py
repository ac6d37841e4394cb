"""`.import/` driven like the kernel would (create/write/flush/release), without FUSE."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import subprocess
from collections.abc import Awaitable, Callable
from functools import wraps
from pathlib import Path
from typing import Any

import pytest
import trio

from ocifs.errors import (
    DigestMismatch,
    InvalidInput,
    LockTimeout,
    NotFound,
    OcifsError,
    Unsupported,
)
from ocifs.importer import ImportDir
from ocifs.model.digest import of_bytes
from tests.helpers import layoutcheck

EMPTY = "sha256:" + hashlib.sha256(b"").hexdigest()


def trio_test(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    @wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        trio.run(lambda: fn(*args, **kwargs))

    return run


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("src")
    src = str(base / "layout")
    layoutcheck.make_layout(src, "v1", {"a.txt": b"a\n", "big.bin": os.urandom(2_500_000)})
    out = {"layout": Path(src)}
    out["oci"] = Path(layoutcheck.to_archive(src, "v1", str(base / "oci.tar"), "oci-archive"))
    out["docker"] = Path(layoutcheck.to_archive(
        src, "v1", str(base / "d.tar"), "docker-archive", "busybox:1"))
    return out


async def run_tool(*cmd: str) -> None:
    await trio.run_process(cmd, capture_stdout=True, capture_stderr=True)


def files_under(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*") if p.is_file())


class Area:
    """An ImportDir plus path-based helpers that act like `cp`."""

    def __init__(self, layout: str, **kw: Any) -> None:
        self.changes = 0
        self.area = ImportDir(layout, self._changed, **kw)
        self.layout = layout

    def _changed(self) -> None:
        self.changes += 1

    async def dir(self, path: str) -> int:
        inode = self.area.root_inode
        for part in [p for p in path.split("/") if p]:
            try:
                inode = (await self.area.lookup(inode, part)).inode
            except NotFound:
                inode = (await self.area.mkdir(inode, part, 0o755)).inode
        return inode

    async def cp(self, path: str, data: bytes, chunk: int = 1 << 20,
                 order: list[int] | None = None) -> None:
        parent, _, name = path.rpartition("/")
        fh, _ = await self.area.create(await self.dir(parent), name, 0o644, os.O_WRONLY)
        try:
            with contextlib.suppress(OcifsError):
                # like dd / shell redirection: flush (close a duplicate) before writing,
                # ignoring its result
                await self.area.flush(fh)
            offsets = list(range(0, len(data), chunk))
            for off in order or offsets:
                await self.area.write(fh, off, data[off : off + chunk])
            await self.area.flush(fh)
        finally:
            await self.area.release(fh)

    async def read(self, path: str) -> bytes:
        parent, _, name = path.rpartition("/")
        inode = (await self.area.lookup(await self.dir(parent), name)).inode
        fh = await self.area.open(inode, os.O_RDONLY)
        try:
            return await self.area.read(fh, 0, 1 << 24)
        finally:
            await self.area.release(fh)


@pytest.fixture
def layout(tmp_path: Path) -> str:
    path = str(tmp_path / "dst")
    subprocess.run(["umoci", "init", "--layout", path], check=True)
    return path


def committed(layout: str) -> list[str]:
    d = Path(layout, "blobs", "sha256")
    return sorted(os.listdir(d)) if d.exists() else []


def blob_bytes(layout: str, digest: str) -> bytes:
    return Path(layout, "blobs", *digest.split(":")).read_bytes()


@trio_test
async def test_plain_file_is_committed_under_its_digest(layout: str) -> None:
    a = Area(layout)
    data = os.urandom(3_000_001)
    await a.cp("layer.tar.gz", data)
    digest = str(of_bytes(data))
    assert blob_bytes(layout, digest) == data
    assert a.changes == 1
    assert f"OK layer.tar.gz: committed {digest}" in (await a.read(".status")).decode()
    assert await a.read("layer.tar.gz") == data
    layoutcheck.check(layout)


@trio_test
async def test_digest_mismatch_fails_and_changes_nothing(layout: str) -> None:
    a = Area(layout)
    before = layoutcheck.snapshot(layout)
    wrong = "sha256:" + hashlib.sha256(b"other").hexdigest()
    with pytest.raises(DigestMismatch):
        await a.cp(wrong, b"content")
    with pytest.raises(DigestMismatch):
        await a.cp("blobs/sha512/" + hashlib.sha512(b"x").hexdigest(), b"y")
    assert layoutcheck.snapshot(layout) == before
    errors = (await a.read(".errors")).decode()
    assert f"FAILED {wrong}: content is {of_bytes(b'content')}" in errors
    layoutcheck.check(layout)  # no staging left


@trio_test
async def test_bad_names_fail_at_create(layout: str) -> None:
    a = Area(layout)
    root = a.area.root_inode
    for name, err in [("sha256:xyz", InvalidInput), ("sha256:" + "A" * 64, InvalidInput),
                      ("md5:" + "a" * 32, Unsupported)]:
        with pytest.raises(err):
            await a.area.create(root, name, 0o644, os.O_WRONLY)
    blobs = await a.dir("blobs")
    with pytest.raises(Unsupported):
        await a.area.mkdir(blobs, "md5", 0o755)
    sha = await a.dir("blobs/sha256")
    with pytest.raises(InvalidInput):
        await a.area.create(sha, "abc", 0o644, os.O_WRONLY)
    with pytest.raises(InvalidInput):
        await a.area.create(await a.dir("refs"), "..", 0o644, os.O_WRONLY)


@trio_test
async def test_empty_blob_and_prewrite_flush(layout: str) -> None:
    a = Area(layout)
    await a.cp(EMPTY, b"")
    assert blob_bytes(layout, EMPTY) == b""
    await a.cp("touched", b"")  # a non-digest empty file: nothing to import, no error
    assert sorted(os.listdir(Path(layout, "blobs", "sha256"))) == [EMPTY.split(":")[1]]


@trio_test
async def test_holes_and_out_of_order_writes(layout: str) -> None:
    a = Area(layout)
    data = os.urandom(100_000) + bytes(300_000) + os.urandom(50_000)
    name = "sha256:" + hashlib.sha256(data).hexdigest()
    await a.cp(name, data, chunk=65536, order=[393216, 0, 65536, 327680])  # holes left unwritten
    assert blob_bytes(layout, name) == data


@trio_test
async def test_duplicated_descriptor_flushes_each_state(layout: str) -> None:
    a = Area(layout)
    fh, attr = await a.area.create(a.area.root_inode, "dup", 0o644, os.O_WRONLY)
    fh2 = await a.area.open(attr.inode, os.O_WRONLY)
    await a.area.write(fh, 0, b"first")
    await a.area.flush(fh)
    await a.area.write(fh2, 5, b"+second")
    await a.area.flush(fh2)
    await a.area.release(fh)
    await a.area.release(fh2)
    assert blob_bytes(layout, str(of_bytes(b"first"))) == b"first"
    assert blob_bytes(layout, str(of_bytes(b"first+second"))) == b"first+second"
    layoutcheck.check(layout)


async def copy_layout(a: Area, src: Path, index_first: bool) -> None:
    files = files_under(src)
    files.sort(key=lambda p: (p.name != "index.json") if index_first else p.name == "index.json")
    for p in files:
        await a.cp(str(p.relative_to(src)), p.read_bytes())


@pytest.mark.parametrize("index_first", [True, False])
@trio_test
async def test_layout_tree_merges_in_any_order(
    layout: str, source: dict[str, Path], index_first: bool
) -> None:
    a = Area(layout)
    await copy_layout(a, source["layout"], index_first)
    assert layoutcheck.refs(layout) == layoutcheck.refs(str(source["layout"]))
    status = (await a.read(".status")).decode()
    assert "PENDING" not in status.splitlines()[-1]
    layoutcheck.check(layout)
    await run_tool("umoci", "stat", "--image", f"{layout}:v1")


@trio_test
async def test_missing_layer_is_never_merged(layout: str, source: dict[str, Path]) -> None:
    a = Area(layout)
    src = source["layout"]
    index = json.loads((src / "index.json").read_bytes())
    manifest = json.loads(blob_bytes(str(src), index["manifests"][0]["digest"]))
    missing = max(manifest["layers"], key=lambda x: x["size"])["digest"]
    for p in files_under(src):
        if p.name != missing.split(":")[1]:
            await a.cp(str(p.relative_to(src)), p.read_bytes())
    assert layoutcheck.refs(layout) == {}
    assert f"waits for {missing}" in (await a.read(".pending")).decode()
    layoutcheck.check(layout)


@trio_test
async def test_refs_tag_and_retag(layout: str, source: dict[str, Path]) -> None:
    a = Area(layout)
    src = source["layout"]
    await copy_layout(a, src, False)
    digest = json.loads((src / "index.json").read_bytes())["manifests"][0]["digest"]
    manifest = blob_bytes(str(src), digest)
    await a.cp("refs/example.com/app:1", manifest)
    await a.cp("refs/v1", manifest)  # retag: replaces the existing v1 entry
    refs = layoutcheck.refs(layout)
    assert refs == {"example.com/app:1": digest, "v1": digest}
    before = layoutcheck.snapshot(layout)
    orphan = json.dumps({"schemaVersion": 2, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": str(of_bytes(b"nope")), "size": 4}, "layers": []}).encode()
    with pytest.raises(InvalidInput, match="missing blob"):
        await a.cp("refs/broken", orphan)
    with pytest.raises(InvalidInput):
        await a.cp("refs/notjson", b"{")
    assert layoutcheck.snapshot(layout) == before
    await run_tool("skopeo", "inspect", f"oci:{layout}:example.com/app:1")


@pytest.mark.parametrize(
    ("kind", "ref"), [("oci", "v1"), ("docker", "docker.io/library/busybox:1")]
)
@trio_test
async def test_archives_import_through_the_area(
    layout: str, source: dict[str, Path], kind: str, ref: str
) -> None:
    a = Area(layout)
    data = source[kind].read_bytes()
    before = layoutcheck.snapshot(layout)
    with pytest.raises(InvalidInput, match="truncated"):
        await a.cp("cut.tar", data[: len(data) // 2])
    assert layoutcheck.snapshot(layout) == before
    await a.cp("image.tar", data)
    assert ref in layoutcheck.refs(layout)
    layoutcheck.check(layout)


@trio_test
async def test_archive_tolerates_resent_pages_and_refuses_changed_ones(
    layout: str, source: dict[str, Path]
) -> None:
    a = Area(layout)
    data = source["oci"].read_bytes()
    fh, _ = await a.area.create(a.area.root_inode, "img.tar", 0o644, os.O_WRONLY)
    await a.area.write(fh, 0, data[:10000])
    await a.area.write(fh, 8192, data[8192:20000])  # the kernel re-sends a partial page
    # the write is accepted (it comes from writeback), the error is kept for the
    # writer's next write() (getattr) and its close() (flush)
    await a.area.write(fh, 4096, b"x" * 100)
    inode = (await a.area.lookup(a.area.root_inode, "img.tar")).inode
    with pytest.raises(Unsupported):
        await a.area.getattr(inode)
    with pytest.raises(Unsupported):
        await a.area.flush(fh)
    await a.area.release(fh)
    errors = (await a.read(".errors")).decode().splitlines()
    assert len(errors) == 1 and "archive rewritten at offset 4096" in errors[0]
    layoutcheck.check(layout)


@trio_test
async def test_rm_aborts_and_mv_reinterprets(layout: str) -> None:
    a = Area(layout)
    root = a.area.root_inode
    fh, _ = await a.area.create(root, "partial", 0o644, os.O_WRONLY)
    await a.area.write(fh, 0, b"abc")
    await a.area.unlink(root, "partial")
    with pytest.raises(NotFound):
        await a.area.write(fh, 3, b"def")
    await a.area.release(fh)
    assert "ABORTED partial" in (await a.read(".status")).decode()
    # rsync-style: temp name, then rename to the real name
    sha = await a.dir("blobs/sha256")
    await a.cp("blobs/sha256/.tmp1", b"payload")
    with pytest.raises(DigestMismatch):
        await a.area.rename(sha, ".tmp1", sha, hashlib.sha256(b"other").hexdigest())
    await a.area.rename(sha, ".tmp1", sha, hashlib.sha256(b"payload").hexdigest())
    assert [n for n, _ in await a.area.readdir(sha)] == [hashlib.sha256(b"payload").hexdigest()]
    with pytest.raises(OSError) as info:
        await a.area.rmdir(await a.dir("blobs"), "sha256")
    assert info.value.errno == errno.ENOTEMPTY
    layoutcheck.check(layout)


@trio_test
async def test_lock_timeout_fails_close_and_changes_nothing(
    layout: str, source: dict[str, Path]
) -> None:
    a = Area(layout, lock_timeout=0.3)
    src = source["layout"]
    for p in files_under(src):
        if p.name != "index.json":
            await a.cp(str(p.relative_to(src)), p.read_bytes())
    before = layoutcheck.snapshot(layout)
    fd = os.open(os.path.join(layout, ".ocifs.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with trio.fail_after(5):
            # the trio loop keeps running while the importer waits for the lock
            async with trio.open_nursery() as nursery:
                ticks = []

                async def tick() -> None:
                    while True:
                        ticks.append(1)
                        await trio.sleep(0.01)

                nursery.start_soon(tick)
                with pytest.raises(LockTimeout):
                    await a.cp("index.json", (src / "index.json").read_bytes())
                nursery.cancel_scope.cancel()
        assert len(ticks) > 5
    finally:
        os.close(fd)
    assert layoutcheck.snapshot(layout) == before


@trio_test
async def test_enospc_while_staging(layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")
    monkeypatch.setenv("OCIFS_TEST_FAIL_AT", "staging-write:ENOSPC")
    a = Area(layout)
    before = layoutcheck.snapshot(layout)
    with pytest.raises(OSError) as info:
        await a.cp("big", os.urandom(10_000))
    assert info.value.errno == errno.ENOSPC
    assert layoutcheck.snapshot(layout) == before
    layoutcheck.check(layout)


@trio_test
async def test_concurrent_imports_in_one_area(layout: str) -> None:
    a = Area(layout)
    blobs = [os.urandom(200_000 + i) for i in range(8)]
    async with trio.open_nursery() as nursery:
        for i, data in enumerate(blobs):
            nursery.start_soon(a.cp, f"f{i}", data, 65536)
        nursery.start_soon(a.cp, "same1", blobs[0])
        nursery.start_soon(a.cp, "same2", blobs[0])
    for data in blobs:
        assert blob_bytes(layout, str(of_bytes(data))) == data
    layoutcheck.check(layout)


@trio_test
async def test_a_readers_close_commits_nothing(layout: str) -> None:
    a = Area(layout)
    fh, attr = await a.area.create(a.area.root_inode, "growing", 0o644, os.O_WRONLY)
    await a.area.write(fh, 0, b"partial")
    reader = await a.area.open(attr.inode, os.O_RDONLY)
    assert await a.area.read(reader, 0, 100) == b"partial"
    await a.area.flush(reader)
    await a.area.release(reader)
    assert committed(layout) == []
    await a.area.write(fh, 7, b"+rest")
    await a.area.flush(fh)
    await a.area.release(fh)
    assert blob_bytes(layout, str(of_bytes(b"partial+rest"))) == b"partial+rest"


@trio_test
async def test_hidden_temporaries_are_imported_only_under_their_real_name(layout: str) -> None:
    a = Area(layout)
    root = a.area.root_inode
    data = os.urandom(10000)
    digest = of_bytes(data)
    await a.cp(".goutputstream-ABC", data)
    assert str(digest.hex) not in committed(layout)  # held, not committed
    assert await a.read(".goutputstream-ABC") == data
    assert (await a.read(".status")) == b""
    # renamed onto a digest name it does not match: refused, nothing committed
    wrong = "sha256:" + of_bytes(b"other").hex
    with pytest.raises(DigestMismatch):
        await a.area.rename(root, ".goutputstream-ABC", root, wrong)
    assert committed(layout) == []
    await a.area.unlink(root, ".goutputstream-ABC")
    assert committed(layout) == []
    # the same with the right name: imported as that name, one line
    await a.cp(".x.tmp", data)
    await a.area.rename(root, ".x.tmp", root, str(digest))
    assert committed(layout) == [digest.hex]
    status = (await a.read(".status")).decode().splitlines()
    assert len(status) == 2 and f"OK {digest}: committed {digest}" in status[1]
    # renamed while still open: to a plain name it becomes an ordinary import,
    # to a name with a meaning it must wait for close()
    fh, _ = await a.area.create(root, ".open.tmp", 0o644, os.O_WRONLY)
    await a.area.write(fh, 0, b"open data")
    with pytest.raises(OSError) as caught:
        await a.area.rename(root, ".open.tmp", root, str(of_bytes(b"open data")))
    assert caught.value.errno == errno.EBUSY
    await a.area.rename(root, ".open.tmp", root, "plain")
    await a.area.flush(fh)
    await a.area.release(fh)
    assert of_bytes(b"open data").hex in committed(layout)
    layoutcheck.check(layout)
