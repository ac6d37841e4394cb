"""Issue 11, removal: untag (rmdir), retag (mv), blob deletion (rm), `ocifs gc`, `ocifs init`,
through real mounts; checked with umoci, skopeo and an independent layout checker."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import copy_layout, ocifs, require_tools
from tests.helpers import layoutcheck
from tests.mount.test_import import _concurrent_worker

OLD = time.time() - 7200  # older than gc's default grace period (one hour)


def sh(*cmd: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=check,
                          timeout=120)


def umoci_ls(layout: Path) -> list[str]:
    return sorted(sh("umoci", "ls", "--layout", layout, check=True).stdout.split())


def skopeo_ok(layout: Path, ref: str) -> bool:
    return sh("skopeo", "inspect", f"oci:{layout}:{ref}").returncode == 0


def age_blobs(layout: Path) -> None:
    for name in os.listdir(layout / "blobs/sha256"):
        os.utime(layout / "blobs/sha256" / name, (OLD, OLD))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A umoci layout: refs a, b, x/y, x/z, each an image with one real layer."""
    require_tools("umoci", "skopeo")
    path = str(tmp_path_factory.mktemp("removal") / "layout")
    for tag in ("a", "b", "x/y", "x/z"):
        layoutcheck.make_layout(path, tag, {f"{tag.replace('/', '_')}.txt": tag.encode() * 1000})
    age_blobs(Path(path))
    return Path(path)


@pytest.fixture
def layout(base: Path, tmp_path: Path) -> Path:
    return copy_layout(base, tmp_path / "layout")


def test_rmdir_untags_exactly_that_ref(mount_image: Any, layout: Path) -> None:
    m = mount_image(layout)
    blobs = {p: p.read_bytes() for p in (layout / "blobs/sha256").iterdir()}
    os.rmdir(m.path / "refs/a")
    assert sorted(os.listdir(m.path / "refs")) == ["b", "x"]  # at once, no waiting
    assert not (m.path / "refs/a").exists()
    os.rmdir(m.path / "refs/x/y")  # a nested name: only that ref
    assert os.listdir(m.path / "refs/x") == ["z"]
    os.rmdir(m.path / "refs/x/z")  # x held nothing else: it disappears
    assert os.listdir(m.path / "refs") == ["b"]
    assert umoci_ls(layout) == ["b"]
    assert skopeo_ok(layout, "b") and not skopeo_ok(layout, "a")
    layoutcheck.check(str(layout))
    # blobs stay until gc, byte for byte; index.json in the mount follows
    assert {p: p.read_bytes() for p in (layout / "blobs/sha256").iterdir()} == blobs
    assert (m.path / "index.json").read_bytes() == (layout / "index.json").read_bytes()
    status = (m.path / ".import/.status").read_text()
    assert "OK refs/x/y: untagged" in status
    with pytest.raises(FileNotFoundError):
        os.rmdir(m.path / "refs/a")


def test_duplicate_names_all_go_and_groups_are_not_removed(mount_image: Any,
                                                            layout: Path) -> None:
    index = json.loads((layout / "index.json").read_bytes())
    dup = dict(index["manifests"][1], annotations={
        "org.opencontainers.image.ref.name": index["manifests"][0]["annotations"][
            "org.opencontainers.image.ref.name"]})
    index["manifests"].append(dup)  # two entries named "a"
    (layout / "index.json").write_text(json.dumps(index))
    m = mount_image(layout)
    m.expect_log("duplicate ref name")
    with pytest.raises(OSError) as err:
        os.rmdir(m.path / "refs/x")  # a group of refs, not a ref
    assert err.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as err:
        os.rmdir(m.path / "refs/b/layers")  # the inside of an image is read-only
    assert err.value.errno == errno.EROFS
    with pytest.raises(OSError) as err:
        os.unlink(m.path / "refs/b/manifest.json")
    assert err.value.errno == errno.EROFS
    os.rmdir(m.path / "refs/a")
    assert layoutcheck.refs(str(layout)).keys() == {"b", "x/y", "x/z"}
    assert len(json.loads((layout / "index.json").read_bytes())["manifests"]) == 3


def test_mv_retags(mount_image: Any, layout: Path) -> None:
    m = mount_image(layout)
    digest_a = layoutcheck.refs(str(layout))["a"]
    os.rename(m.path / "refs/a", m.path / "refs/c")
    assert sorted(os.listdir(m.path / "refs")) == ["b", "c", "x"]
    assert json.loads((m.path / "refs/c/descriptor.json").read_bytes())["annotations"] == {
        "org.opencontainers.image.ref.name": "c"}
    assert umoci_ls(layout) == ["b", "c", "x/y", "x/z"]
    assert skopeo_ok(layout, "c") and not skopeo_ok(layout, "a")
    # mv -T replaces an existing ref; plain mv moves into the directory (tags b/c)
    assert sh("mv", "-T", m.path / "refs/c", m.path / "refs/b").returncode == 0
    assert layoutcheck.refs(str(layout))["b"] == digest_a
    assert sh("mv", m.path / "refs/b", m.path / "refs/x").returncode == 0
    assert umoci_ls(layout) == ["x/b", "x/y", "x/z"]
    # a directory of refs moves whole, in one index.json rewrite
    assert sh("mv", "-T", m.path / "refs/x", m.path / "refs/w").returncode == 0
    assert umoci_ls(layout) == ["w/b", "w/y", "w/z"]
    assert sorted(os.listdir(m.path / "refs/w")) == ["b", "y", "z"]
    assert skopeo_ok(layout, "w/y")
    assert "cannot" in sh("mv", m.path / "refs/w/b/manifest.json", m.path / "refs/q").stderr
    before = (layout / "index.json").read_bytes()
    sh("mv", "-n", "-T", m.path / "refs/w/y", m.path / "refs/w/z")  # RENAME_NOREPLACE
    assert (layout / "index.json").read_bytes() == before
    with pytest.raises(OSError) as err:  # not a valid OCI ref name: refused, as imports do
        os.rename(m.path / "refs/w/y", m.path / "refs/w/Bad Name!")
    assert err.value.errno == errno.EINVAL
    assert (layout / "index.json").read_bytes() == before
    layoutcheck.check(str(layout))


def test_rm_r_and_file_manager_delete_untag_without_walking(mount_image: Any, layout: Path,
                                                             cache_dir: Path) -> None:
    m = mount_image(layout)
    assert sorted(os.listdir(m.path / "refs/a")) == [
        "config.json", "descriptor.json", "image.tar", "layers", "manifest.json", "rootfs"]
    result = sh("rm", "-r", m.path / "refs/a")
    assert (result.returncode, result.stderr) == (0, "")
    assert sh("rm", "-r", m.path / "refs/x/y").returncode == 0
    # what file managers are told (access(W_OK) on the parent): refs can be deleted,
    # the files of an image cannot
    assert os.access(m.path / "refs", os.W_OK) and os.access(m.path / "refs/x", os.W_OK)
    assert os.access(m.path / "blobs/sha256", os.W_OK)
    assert not os.access(m.path / "refs/b", os.W_OK)
    assert not os.access(m.path / "refs/b/rootfs", os.W_OK)
    if shutil.which("gio"):
        info = sh("gio", "info", "-a", "access::can-delete", m.path / "refs/b").stdout
        assert "access::can-delete: TRUE" in info
        result = sh("gio", "remove", m.path / "refs/b")  # GIO's delete: rmdir first
        assert (result.returncode, result.stderr) == (0, "")
    else:
        os.rmdir(m.path / "refs/b")
    assert umoci_ls(layout) == ["x/z"]
    assert "indexing layer" not in m.log_text()  # no rootfs/ or layers/<n>/ was listed
    assert os.listdir(m.path / "refs/x/z/rootfs")  # other refs still browse normally
    layoutcheck.check(str(layout))


def test_rm_blob(mount_image: Any, layout: Path) -> None:
    m = mount_image(layout)
    os.rmdir(m.path / "refs/a")
    reachable = layoutcheck.closure(str(layout))
    orphans = sorted(layoutcheck.blobs(str(layout)) - reachable)
    assert orphans
    for digest in orphans:
        os.unlink(m.path / "blobs/sha256" / digest[7:])
        assert not (layout / "blobs/sha256" / digest[7:]).exists()
    assert sorted(os.listdir(m.path / "blobs/sha256")) == sorted(d[7:] for d in reachable)
    in_use = layoutcheck.refs(str(layout))["x/y"]
    result = sh("rm", m.path / "blobs/sha256" / in_use[7:])
    assert result.returncode == 1 and "Device or resource busy" in result.stderr
    status = (m.path / ".import/.status").read_text()
    assert "still referenced by ref 'x/y'" in status
    assert "still referenced by ref 'x/y'" in m.log_text()
    assert layoutcheck.blobs(str(layout)) == reachable
    assert umoci_ls(layout) == ["b", "x/y", "x/z"]
    assert all(skopeo_ok(layout, r) for r in ("b", "x/y", "x/z"))
    layoutcheck.check(str(layout))


def test_gc_while_mounted(mount_image: Any, layout: Path) -> None:
    m = mount_image(layout)
    os.rmdir(m.path / "refs/a")
    os.rename(m.path / "refs/x/y", m.path / "refs/y")
    listed = set(os.listdir(m.path / "blobs/sha256"))
    for name in listed:  # every blob's dentry and attributes now cached by the kernel
        os.stat(m.path / "blobs/sha256" / name)
    reachable = layoutcheck.closure(str(layout))
    doomed = layoutcheck.blobs(str(layout)) - reachable  # a's image and umoci's leftovers
    before = layoutcheck.snapshot(str(layout))
    dry = ocifs("gc", str(layout), "--dry-run")
    assert dry.returncode == 0 and f"would remove {len(doomed)} blob(s)" in dry.stdout
    assert layoutcheck.snapshot(str(layout)) == before
    sizes = sum((layout / "blobs/sha256" / d[7:]).stat().st_size for d in doomed)
    umoci_copy = copy_layout(layout, layout.parent / "umoci-gc")
    sh("umoci", "gc", "--layout", umoci_copy, check=True)  # the third-party answer
    result = ocifs("gc", str(layout))
    assert result.returncode == 0, result.stderr
    for digest in doomed:
        assert f"removed {digest} (" in result.stdout
    assert f"removed {len(doomed)} blob(s), freed {sizes} bytes" in result.stdout
    assert layoutcheck.blobs(str(layout)) == reachable == layoutcheck.blobs(str(umoci_copy))
    assert set(os.listdir(m.path / "blobs/sha256")) == listed - {d[7:] for d in doomed}
    # their dentries, cached for a day, are dropped (the notifications are queued)
    assert _eventually(lambda: not any((m.path / "blobs/sha256" / d[7:]).exists()
                                       for d in doomed))
    assert umoci_ls(layout) == ["b", "x/z", "y"]
    assert all(skopeo_ok(layout, r) for r in ("b", "x/z", "y"))
    layoutcheck.check(str(layout))
    # the mount still reads what is left (the gc'd view was picked up)
    assert os.listdir(m.path / "refs/y/rootfs")
    assert "removed 0 blob(s)" in ocifs("gc", str(layout)).stdout


def _eventually(check: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _gc_loop(layout: str, stop: Any, runs: Any) -> None:
    while not stop.is_set():
        result = ocifs("gc", layout)
        assert result.returncode == 0, result.stderr
        runs.value += 1


def test_gc_during_concurrent_imports(mount_image: Any, layout: Path, tmp_path: Path) -> None:
    m = mount_image(layout)
    os.rmdir(m.path / "refs/a")  # old garbage for gc to find
    os.rmdir(m.path / "refs/b")
    garbage = layoutcheck.blobs(str(layout)) - layoutcheck.closure(str(layout))
    (m.path / ".import/refs").mkdir(exist_ok=True)
    other = tmp_path / "other"  # a whole layout, copied blob by blob while gc runs
    layoutcheck.make_layout(str(other), "fresh", {"f.bin": os.urandom(200_000)})
    ctx = multiprocessing.get_context("fork")
    stop, runs = ctx.Event(), ctx.Value("i", 0)
    gc = ctx.Process(target=_gc_loop, args=(str(layout), stop, runs))
    gc.start()
    try:
        with ctx.Pool(4) as pool:
            copy = pool.apply_async(sh, ("cp", "-r", f"{other}/.", m.path / ".import/"))
            results = pool.map(_concurrent_worker, [(str(m.path), w) for w in range(4)])
            assert copy.get().returncode == 0
    finally:
        stop.set()
        gc.join(60)
    assert gc.exitcode == 0 and runs.value >= 1
    assert "FAILED" not in (m.path / ".import/.status").read_text()
    expected = {n for names in results for n in names} | {"fresh", "x/y", "x/z"}
    assert set(layoutcheck.refs(str(layout))) == expected
    layoutcheck.check(str(layout))  # nothing referenced went missing
    assert garbage.isdisjoint(layoutcheck.blobs(str(layout)))  # the old garbage went
    assert sh("umoci", "stat", "--image", f"{layout}:fresh").returncode == 0
    assert skopeo_ok(layout, "w0-r4")


def _untag_all(args: tuple[str, list[str]]) -> None:
    mnt, names = args
    for name in names:
        os.rmdir(Path(mnt) / "refs" / name)


def _retag_chain(args: tuple[str, int]) -> None:
    mnt, rounds = args
    for n in range(rounds):
        os.rename(Path(mnt) / "refs" / (f"b{n}" if n else "b"), Path(mnt) / "refs" / f"b{n + 1}")


def test_untags_retags_and_imports_from_two_mounts_never_lose_changes(mount_image: Any,
                                                                      layout: Path) -> None:
    a = mount_image(layout)
    os.rename(a.path / "refs/a", a.path / "refs/t0")  # then 15 more names for that image
    digest = layoutcheck.refs(str(layout))["t0"]
    index = json.loads((layout / "index.json").read_bytes())
    t0 = next(e for e in index["manifests"] if e["digest"] == digest)
    for n in range(1, 16):
        index["manifests"].append(dict(t0, annotations={
            "org.opencontainers.image.ref.name": f"t{n}"}))
    (layout / "index.json").write_text(json.dumps(index))
    b = mount_image(layout)
    for m in (a, b):
        (m.path / ".import/refs").mkdir(exist_ok=True)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(6) as pool:
        untags = [pool.apply_async(_untag_all, ((str(m.path), [f"t{n}" for n in range(k, 16, 4)]),))
                  for k, m in enumerate((a, b, a, b))]
        retags = pool.apply_async(_retag_chain, ((str(b.path), 8),))
        imported = pool.map(_concurrent_worker, [(str((a, b)[w % 2].path), w) for w in range(2)])
        for u in untags:
            u.get()
        retags.get()
    expected = {n for names in imported for n in names} | {"b8", "x/y", "x/z"}
    assert set(layoutcheck.refs(str(layout))) == expected
    layoutcheck.check(str(layout))
    assert set(os.listdir(b.path / "refs")) == {"b8", "x", *(n for names in imported
                                                            for n in names)}


@pytest.mark.parametrize("step", ["index-write", "index-fsync", "index-rename", "index-dirsync"])
def test_kill9_during_untag(mount_image: Any, layout: Path, monkeypatch: pytest.MonkeyPatch,
                            step: str) -> None:
    old = (layout / "index.json").read_bytes()
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")
    monkeypatch.setenv("OCIFS_TEST_CRASH_AT", step)
    m = mount_image(layout)
    result = sh("rmdir", m.path / "refs/a")
    assert result.returncode != 0  # the daemon died at `step`
    _wait_dead(m.pid)
    sh("fusermount3", "-u", "-z", m.path)
    monkeypatch.delenv("OCIFS_TEST_CRASH_AT")
    now = (layout / "index.json").read_bytes()  # complete: the old or the new file
    assert now == old or (step in ("index-rename", "index-dirsync")
                          and set(layoutcheck.refs(str(layout))) == {"b", "x/y", "x/z"})
    m2 = mount_image(layout)  # the crash's temp file is cleaned, the untag can be redone
    layoutcheck.check(str(layout))  # valid JSON, every reference present, no leftovers
    if now == old:
        os.rmdir(m2.path / "refs/a")
    assert umoci_ls(layout) == ["b", "x/y", "x/z"]
    assert layoutcheck.staging_leftovers(str(layout)) == []


def test_kill9_at_random_instants_during_untags(mount_image: Any, layout: Path) -> None:
    index = json.loads((layout / "index.json").read_bytes())
    first = index["manifests"][0]
    index["manifests"] += [dict(first, annotations={"org.opencontainers.image.ref.name": f"r{n}"})
                           for n in range(200)]
    (layout / "index.json").write_text(json.dumps(index))
    rng = random.Random(11)
    left = 200
    for _ in range(4):
        m = mount_image(layout)
        script = f"cd {m.path}/refs && for r in r*; do rmdir $r || exit 0; done"
        rm = subprocess.Popen(["sh", "-c", script], stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(m.pid, signal.SIGKILL)
        rm.wait(30)
        _wait_dead(m.pid)
        sh("fusermount3", "-u", "-z", m.path)
        assert not layoutcheck.problems(str(layout))[1:]  # at most a stale temp file
        names = set(layoutcheck.refs(str(layout)))
        assert {"a", "b", "x/y", "x/z"} <= names
        assert len(names) <= left + 4
        left = len(names) - 4
    assert umoci_ls(layout)


@pytest.mark.parametrize("step", ["blob-unlink", "blob-unlink-dirsync"])
def test_kill9_during_gc(layout: Path, step: str) -> None:
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"] = index["manifests"][:1]
    (layout / "index.json").write_text(json.dumps(index))
    env = {**os.environ, "OCIFS_TEST_MODE": "1", "OCIFS_TEST_CRASH_AT": step}
    result = subprocess.run([*ocifs_cmd(), "gc", str(layout)], env=env, capture_output=True,
                            check=False)
    assert result.returncode == -signal.SIGKILL
    layoutcheck.check(str(layout))
    assert ocifs("gc", str(layout)).returncode == 0
    assert layoutcheck.blobs(str(layout)) == layoutcheck.closure(str(layout))


def ocifs_cmd() -> list[str]:
    from tests.conftest import OCIFS

    return list(OCIFS)


def _wait_dead(pid: int) -> None:
    from tests.conftest import _wait_gone

    assert _wait_gone(pid, timeout=10), f"daemon {pid} still alive"


def test_init_then_mount_and_import(mount_image: Any, tmp_path: Path, base: Path) -> None:
    target = tmp_path / "new"
    result = ocifs("init", str(target))
    assert (result.returncode, result.stderr) == (0, "")
    assert umoci_ls(target) == []
    layoutcheck.check(str(target))
    m = mount_image(target)
    archive = layoutcheck.to_archive(str(base), "a", str(tmp_path / "a.tar"), "oci-archive")
    assert sh("cp", archive, m.path / ".import/").returncode == 0
    assert os.listdir(m.path / "refs") == ["a"]
    assert umoci_ls(target) == ["a"] and skopeo_ok(target, "a")
    again = ocifs("init", str(target))
    assert again.returncode == 0 and "already an OCI image layout" in again.stderr
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes").write_text("x")
    refused = ocifs("init", str(busy))
    assert refused.returncode == 1
    assert refused.stderr == (f"ocifs: {busy}: directory is not empty and not an OCI image "
                              "layout (notes)\n")
    not_layout = ocifs("gc", str(busy))
    assert not_layout.returncode == 1 and len(not_layout.stderr.splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "mnt-empty").mkdir()
    refused = ocifs("mount", str(empty), str(tmp_path / "mnt-empty"))
    assert refused.returncode == 1 and f"ocifs init {empty}" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1


def test_rm_r_of_indexes_untags_without_walking_platforms(mount_image: Any,
                                                          tmp_path: Path) -> None:
    from tests.conftest import FIXTURES

    layout = copy_layout(FIXTURES / "go-containerregistry/pkg/v1/layout/testdata/test_index",
                         tmp_path / "layout")
    m = mount_image(layout)
    assert os.listdir(m.path / "refs/3/platforms")  # an OCI index and a Docker list
    for ref in ("3", "4"):
        result = sh("rm", "-r", m.path / "refs" / ref)
        assert (result.returncode, result.stderr) == (0, "")
    assert sorted(os.listdir(m.path / "refs")) == ["1", "2"]
    assert set(layoutcheck.refs(str(layout))) == {"1", "2"}
    assert "indexing layer" not in m.log_text()
    layoutcheck.check(str(layout))
