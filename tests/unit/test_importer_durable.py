"""Staging files, durable blob commit, crash points and stale-staging recovery (no FUSE)."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ocifs import durable
from ocifs.errors import LockTimeout
from ocifs.importer import staging
from ocifs.importer.commit import blob_path, commit_blobs
from ocifs.importer.staging import StagedFile
from ocifs.model.digest import Digest, of_bytes
from tests.conftest import require_tools
from tests.helpers import layoutcheck

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def layout(tmp_path: Path) -> str:
    path = tmp_path / "layout"
    path.mkdir()
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    return str(path)


def test_in_order_writes_hash_incrementally(layout: str) -> None:
    data = os.urandom(300_000)
    staged = StagedFile(layout)
    for off in range(0, len(data), 65536):
        staged.write(off, data[off : off + 65536])
        staged.hash_chunk(data[off : off + 65536])
    assert staged.in_order
    assert staged.hexdigest() == hashlib.sha256(data).hexdigest()
    staged.discard()
    assert os.listdir(staging.staging_dir(layout)) == []


def test_out_of_order_and_holes_rehash_from_file(layout: str) -> None:
    staged = StagedFile(layout)
    staged.write(4096, b"b" * 100)  # hole first, as a sparse cp does
    staged.write(0, b"a" * 10)
    assert not staged.in_order
    expected = b"a" * 10 + bytes(4086) + b"b" * 100
    assert staged.hexdigest() == hashlib.sha256(expected).hexdigest()
    staged.truncate(8192)  # hole at the end
    assert staged.hexdigest() == hashlib.sha256(expected + bytes(8192 - 4196)).hexdigest()
    assert staged.hexdigest("sha512") == hashlib.sha512(expected + bytes(3996)).hexdigest()
    staged.discard()


def test_commit_renames_and_skips_existing(layout: str) -> None:
    data = b"hello blob"
    digest = of_bytes(data)
    first = StagedFile(layout)
    first.append(data)
    assert commit_blobs(layout, [(digest, first)]) == [digest]
    assert Path(blob_path(layout, digest)).read_bytes() == data
    before = os.stat(blob_path(layout, digest))
    second = StagedFile(layout)
    second.append(data)
    assert commit_blobs(layout, [(digest, second)]) == []  # already present: not rewritten
    after = os.stat(blob_path(layout, digest))
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert os.listdir(staging.staging_dir(layout)) == []
    layoutcheck.check(layout)


def test_recover_removes_only_what_no_live_process_holds(layout: str) -> None:
    live = StagedFile(layout)  # locked by us
    sdir = staging.staging_dir(layout)
    Path(sdir, "ingest-999999999-dead").write_bytes(b"partial")  # creator gone
    Path(sdir, f"ingest-{os.getpid()}-young").write_bytes(b"x")  # maybe not locked yet
    assert staging.recover(layout) == ["ingest-999999999-dead"]
    assert os.path.exists(live.path)
    live.discard()
    os.utime(Path(sdir, f"ingest-{os.getpid()}-young"), (0, 0))  # old and unlocked: stale
    assert staging.recover(layout) == [f"ingest-{os.getpid()}-young"]


def test_layout_lock_times_out_when_held(layout: str) -> None:
    lock = os.path.join(layout, staging.LOCK_FILE)
    # a second open file description is excluded like another process
    with durable.layout_lock(lock, 1.0), pytest.raises(LockTimeout), durable.layout_lock(lock, 0.2):
        pass


def test_replace_file_is_atomic_and_cleans_temp(layout: str) -> None:
    path = os.path.join(layout, "index.json")
    durable.makedirs(staging.staging_dir(layout))
    durable.replace_file(path, b'{"new":1}', staging.staging_dir(layout))
    assert Path(path).read_bytes() == b'{"new":1}'
    assert os.listdir(staging.staging_dir(layout)) == []


def test_fault_injection_raises_chosen_errno(layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")
    monkeypatch.setenv("OCIFS_TEST_FAIL_AT", "index-fsync:ENOSPC")
    path = os.path.join(layout, "index.json")
    old = Path(path).read_bytes()
    durable.makedirs(staging.staging_dir(layout))
    with pytest.raises(OSError) as info:
        durable.replace_file(path, b"{}", staging.staging_dir(layout))
    assert info.value.errno == errno.ENOSPC
    assert Path(path).read_bytes() == old
    assert os.listdir(staging.staging_dir(layout)) == []


def test_crash_points_ignored_outside_test_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCIFS_TEST_MODE", raising=False)
    monkeypatch.setenv("OCIFS_TEST_CRASH_AT", "blob-rename")
    durable.checkpoint("blob-rename")  # still alive


_CRASHER = textwrap.dedent(
    """
    import sys
    from ocifs.importer.commit import commit_blobs
    from ocifs.importer import indexjson
    from ocifs.importer.staging import StagedFile
    from ocifs.model.digest import of_bytes
    layout = sys.argv[1]
    data = b"x" * 100000
    staged = StagedFile(layout)
    staged.append(data)
    d = of_bytes(data)
    commit_blobs(layout, [(d, staged)])
    entry = {"mediaType": "application/octet-stream", "digest": str(d), "size": len(data),
             "annotations": {"org.opencontainers.image.ref.name": "crash"}}
    indexjson.update(layout, [entry], 5.0)
    """
)


@pytest.mark.parametrize("step", durable.STEPS)
def test_sigkill_at_each_step_leaves_a_valid_layout(layout: str, step: str) -> None:
    env = {**os.environ, "OCIFS_TEST_MODE": "1", "OCIFS_TEST_CRASH_AT": step,
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _CRASHER, layout], env=env, check=False)
    assert proc.returncode == -9
    staging.recover(layout)  # the killed creator's files go at once
    layoutcheck.check(layout)  # index.json old or new, every blob matches its name
    digest = Digest("sha256", hashlib.sha256(b"x" * 100000).hexdigest())
    refs = layoutcheck.refs(layout)
    if "crash" in refs:
        assert os.path.exists(blob_path(layout, digest))


def test_syscall_order_stands_in_for_power_loss(layout: str, tmp_path: Path) -> None:
    """fsync file -> rename -> fsync dir, for blobs and for index.json (inside the lock)."""
    require_tools("strace")
    trace = tmp_path / "trace"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(
        ["strace", "-f", "-o", str(trace), "-e",
         "trace=openat,fsync,rename,renameat,renameat2,flock,close",
         sys.executable, "-c", _CRASHER, layout],
        env=env, check=True, capture_output=True,
    )
    fds: dict[str, str] = {}
    events: list[tuple[str, str]] = []
    for line in trace.read_text().splitlines():
        m = re.search(r'openat\(AT_FDCWD, "([^"]+)".*\) = (\d+)$', line)
        if m:
            fds[m.group(2)] = m.group(1)
        elif m := re.search(r"(fsync|flock)\((\d+)", line):
            events.append((m.group(1), fds.get(m.group(2), "?")))
        elif m := re.search(r'rename(?:at2?)?\((?:AT_FDCWD, )?"([^"]+)", (?:AT_FDCWD, )?"([^"]+)"',
                            line):
            events.append(("rename", f"{m.group(1)} -> {m.group(2)}"))

    def index(kind: str, needle: str) -> int:
        return next(i for i, (k, what) in enumerate(events) if k == kind and needle in what)

    staging_sync = index("fsync", "/.ocifs-staging/ingest-")
    blob_rename = index("rename", "/blobs/sha256/")
    dir_sync = next(i for i, (k, w) in enumerate(events)
                    if k == "fsync" and w.endswith("/blobs/sha256"))
    assert staging_sync < blob_rename < dir_sync
    lock = index("flock", ".ocifs.lock")
    tmp_sync = index("fsync", "/.ocifs-staging/index-")
    index_rename = index("rename", "/index.json")
    layout_sync = next(i for i, (k, w) in enumerate(events)
                       if k == "fsync" and w == layout and i > index_rename)
    assert dir_sync < lock < tmp_sync < index_rename < layout_sync
