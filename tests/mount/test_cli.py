"""Issue 13 (B): a CLI that is safe and says what it sees; a mount a file manager understands.

`ocifs umount` of non-ocifs and dead mounts, the mount's source in the mount
table, `ocifs list`/`status`, `.` and `..`, statfs figures, what `access()`
(and so GIO) says is writable, `-o symlinks=contained`, and relative path
options of a detached mount.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import (
    OCIFS,
    REPO,
    _is_mounted,
    _wait_gone,
    copy_layout,
    ocifs,
    require,
    require_fuse,
    require_tools,
)

SAMPLE_REF = "sample:1.0"


def _gio_info(path: Path, *attrs: str) -> dict[str, str]:
    out = subprocess.run(
        ["gio", "info", "-a", ",".join(attrs), str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        key, sep, value = line.strip().partition(": ")
        if sep and "::" in key:
            found[key] = value
    return found


def _gio_fs(path: Path) -> dict[str, str]:
    out = subprocess.run(
        ["gio", "info", "-f", "-a", "filesystem::*", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(
        line.strip().split(": ", 1) for line in out.splitlines() if "filesystem::" in line
    )


# ----- ocifs umount -----------------------------------------------------------


def test_umount_refuses_a_mount_that_is_not_ocifs(tmp_path: Path) -> None:
    require(None if os.geteuid() == 0 else "mounting a tmpfs needs root")
    target = tmp_path / "tmpfs"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "ocifs-test-tmpfs", str(target)], check=True)
    try:
        result = ocifs("umount", str(target))
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "not an ocifs mount" in lines[0] and "tmpfs" in lines[0]
        assert _is_mounted(target), "the tmpfs was unmounted"
        assert ocifs("umount", "-z", str(target)).returncode == 1
        assert _is_mounted(target)
    finally:
        subprocess.run(["umount", str(target)], check=False)


def test_umount_of_something_not_mounted_says_so(tmp_path: Path) -> None:
    result = ocifs("umount", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == f"ocifs: {tmp_path}: not mounted"


def _kill_daemon(m) -> None:
    pid = m.pid
    os.kill(pid, signal.SIGKILL)
    assert _wait_gone(pid)
    time.sleep(1.5)  # the window in which `ocifs umount` used to say "not mounted"
    with pytest.raises(OSError) as err:
        os.stat(m.path)
    assert err.value.errno == errno.ENOTCONN


@pytest.mark.parametrize("lazy", [False, True], ids=["umount", "umount-z"])
def test_umount_cleans_up_after_a_killed_daemon(mount_image, sample_layout, lazy) -> None:
    m = mount_image(sample_layout)
    _kill_daemon(m)
    result = ocifs("umount", *(["-z"] if lazy else []), str(m.path))
    assert result.returncode == 0, result.stderr
    assert not _is_mounted(m.path)
    assert os.listdir(m.path) == []


def test_umount_of_a_dead_mount_still_in_use_detaches_it(mount_image, sample_layout) -> None:
    m = mount_image(sample_layout)
    with open(m.path / "oci-layout", "rb") as held:
        holder = subprocess.Popen(["sleep", "600"], stdin=held, cwd=m.path / "refs")
    try:
        _kill_daemon(m)
        result = ocifs("umount", str(m.path))
        assert result.returncode == 0, result.stderr
        assert not _is_mounted(m.path)
    finally:
        holder.kill()
        holder.wait()


# ----- the mount table, ocifs list and ocifs status ---------------------------


def test_mount_table_shows_the_source(mount_image, sample_layout, tmp_path) -> None:
    """fsname is the absolute source path (escaped for libfuse), the type fuse.ocifs."""
    odd = copy_layout(sample_layout, tmp_path / "my images, v1")
    m = mount_image(odd)
    out = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE,FSTYPE", "--target", str(m.path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out.rsplit(None, 1) == [str(odd), "fuse.ocifs"]


def test_list_and_status(mount_image, sample_layout, tmp_path) -> None:
    rw = mount_image(sample_layout)
    archive = tmp_path / "sample.tar"
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci:{sample_layout}:{SAMPLE_REF}", f"oci-archive:{archive}"],
        check=True,
    )
    ro = mount_image(archive)

    listed = json.loads(ocifs("list", "--json", check=True).stdout)["mounts"]
    mine = {row["mountpoint"]: row for row in listed}
    assert mine[str(rw.path)]["source"] == str(sample_layout)
    assert mine[str(rw.path)]["pid"] == rw.pid
    assert mine[str(rw.path)]["read_only"] is False
    assert mine[str(ro.path)]["source"] == str(archive)
    assert mine[str(ro.path)]["pid"] == ro.pid
    assert mine[str(ro.path)]["read_only"] is True
    assert all(mine[str(m.path)]["state"] == "ok" for m in (rw, ro))
    table = ocifs("list", check=True).stdout
    assert any(line.split()[:3] == [str(rw.path), str(sample_layout), str(rw.pid)]
               for line in table.splitlines())

    before = json.loads(ocifs("status", "--json", str(rw.path), check=True).stdout)
    assert before["layers"] == []
    assert before["imports"] == {"active": [], "pending_entries": 0}
    assert (rw.path / "refs" / SAMPLE_REF / "rootfs/etc/os-release").read_bytes()
    after = json.loads(ocifs("status", "--json", str(rw.path), check=True).stdout)
    manifest = json.loads((rw.path / "refs" / SAMPLE_REF / "manifest.json").read_bytes())
    layers = {layer["digest"]: layer for layer in after["layers"]}
    assert set(layers) == {d["digest"] for d in manifest["layers"]}
    for desc in manifest["layers"]:
        layer = layers[desc["digest"]]
        assert layer["state"] == "indexed"
        assert layer["bytes_done"] == layer["bytes_total"] == desc["size"]
        assert layer["entries"] > 0 and layer["seconds"] is not None
    assert after["cache"]["used_bytes"] > 0
    assert after["cache"]["directory"] == str(Path(rw.log).parent / "cache")
    # the same report is a file inside the mount
    inside = json.loads((rw.path / ".ocifs/status.json").read_bytes())
    assert inside["pid"] == rw.pid and len(inside["layers"]) == len(manifest["layers"])
    # and the log says when each layer's indexing started and finished, with its time
    log = rw.log_text()
    for desc in manifest["layers"]:
        assert f"indexing layer {desc['digest']} ({desc['size']} bytes)" in log
        assert f"indexed layer {desc['digest']}: " in log

    text = ocifs("status", str(rw.path), check=True).stdout
    assert f"pid {rw.pid}" in text and "read-write" in text
    for desc in manifest["layers"]:
        assert desc["digest"][:19] in text
    # a second mount sharing the cache says where its indexes came from
    again = mount_image(sample_layout)
    assert (again.path / "refs" / SAMPLE_REF / "rootfs/etc/os-release").read_bytes()
    cached = json.loads(ocifs("status", "--json", str(again.path), check=True).stdout)
    assert {layer["state"] for layer in cached["layers"]} == {"cached"}


def test_status_shows_an_import_in_progress(mount_image, sample_layout, tmp_path) -> None:
    layout = copy_layout(sample_layout, tmp_path / "layout")
    m = mount_image(layout)
    with open(m.path / ".import" / "some-blob", "wb") as f:
        f.write(b"x" * 1000)
        f.flush()
        os.fsync(f.fileno())  # past the kernel's writeback cache
        status = json.loads(ocifs("status", "--json", str(m.path), check=True).stdout)
        assert status["imports"]["active"] == [{"path": "some-blob", "bytes_received": 1000}]
    status = json.loads(ocifs("status", "--json", str(m.path), check=True).stdout)
    assert status["imports"]["active"] == []


def test_status_and_list_of_a_dead_mount(mount_image, sample_layout) -> None:
    m = mount_image(sample_layout)
    _kill_daemon(m)
    result = ocifs("status", str(m.path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"ocifs: {m.path}: dead (its daemon is gone); run `ocifs umount {m.path}`"
    ]
    listed = json.loads(ocifs("list", "--json", check=True).stdout)["mounts"]
    assert {r["mountpoint"]: r["state"] for r in listed}[str(m.path)].startswith("dead")
    assert ocifs("umount", str(m.path)).returncode == 0


# ----- what listings, statfs and access() say --------------------------------


def test_listings_have_dot_and_dotdot(mount_image, sample_layout) -> None:
    m = mount_image(sample_layout)
    ref = m.path / "refs" / SAMPLE_REF
    for directory in (m.path, m.path / "refs", ref, ref / "rootfs", ref / "rootfs/etc",
                      ref / "layers/0", m.path / ".import", m.path / "blobs/sha256"):
        names = subprocess.run(
            ["ls", "-a1", str(directory)], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert names[:2] == [".", ".."], directory
        assert names.count(".") == names.count("..") == 1
    # `..` carries its parent's inode number, `.` the directory's own
    out = subprocess.run(
        ["ls", "-ai1", str(ref / "rootfs")], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    inodes = {line.split()[1]: int(line.split()[0]) for line in out[:2]}
    assert inodes["."] == os.stat(ref / "rootfs").st_ino
    assert inodes[".."] == os.stat(ref).st_ino


def test_statfs_of_a_writable_mount_is_the_layout_filesystem(mount_image, sample_layout) -> None:
    require_tools("gio")
    m = mount_image(sample_layout)
    mine, theirs = os.statvfs(m.path), os.statvfs(sample_layout)
    assert (mine.f_bsize, mine.f_frsize, mine.f_blocks) == (
        theirs.f_bsize,
        theirs.f_frsize,
        theirs.f_blocks,
    )
    # what pcmanfm and Nautilus show (GIO): the same total as the layout's disk
    assert _gio_fs(m.path)["filesystem::size"] == _gio_fs(sample_layout)["filesystem::size"]


def test_statfs_of_a_read_only_image_has_no_free_space(mount_image, sample_layout, tmp_path):
    require_tools("gio")
    archive = tmp_path / "sample.tar"
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci:{sample_layout}:{SAMPLE_REF}", f"oci-archive:{archive}"],
        check=True,
    )
    for m in (mount_image(archive), mount_image(sample_layout, "--read-only")):
        st = os.statvfs(m.path)
        assert st.f_bfree == st.f_bavail == 0
        assert st.f_bsize == st.f_frsize
        assert 0 < st.f_blocks * st.f_frsize < 64 << 20
        # GIO takes "nothing free, nothing available" as "size unknown": no figures shown
        fs = _gio_fs(m.path)
        assert fs["filesystem::readonly"] == "TRUE"
        assert "filesystem::free" not in fs and "filesystem::size" not in fs
    assert os.statvfs(mount_image(archive).path).f_blocks * 4096 >= archive.stat().st_size


ACCESS = ("access::can-write", "access::can-delete", "access::can-trash", "access::can-rename")


def test_only_import_looks_writable_to_a_file_manager(mount_image, sample_layout, tmp_path):
    require_tools("gio")
    layout = copy_layout(sample_layout, tmp_path / "layout")
    m = mount_image(layout)
    ref = m.path / "refs" / SAMPLE_REF
    (m.path / ".import/blob").write_bytes(b"some bytes")
    for path in (ref / "rootfs/etc/os-release", ref / "rootfs/etc", ref / "rootfs",
                 ref / "layers/0/bin/hello", ref / "manifest.json", m.path / "index.json"):
        info = _gio_info(path, "access::*")
        assert info["access::can-read"] == "TRUE", path
        for attr in ACCESS:
            assert info[attr] == "FALSE", (path, attr, info)
        assert not os.access(path, os.W_OK), path
        assert subprocess.run(["test", "-w", str(path)]).returncode == 1, path
    assert os.access(ref / "rootfs/bin/hello", os.X_OK)
    assert not os.access(ref / "rootfs/etc/os-release", os.X_OK)
    # .import/ and what is written there stay writable and deletable
    assert _gio_info(m.path / ".import", "access::can-write")["access::can-write"] == "TRUE"
    info = _gio_info(m.path / ".import/blob", *ACCESS)
    assert info["access::can-write"] == info["access::can-delete"] == "TRUE"
    assert subprocess.run(["test", "-w", str(m.path / ".import")]).returncode == 0
    assert subprocess.run(["test", "-w", str(m.path / ".import/.status")]).returncode == 1
    # a file manager's "delete" would fail anyway, with EROFS
    with pytest.raises(OSError) as err:
        os.unlink(ref / "rootfs/etc/os-release")
    assert err.value.errno == errno.EROFS


def test_read_only_mount_looks_read_only_too(mount_image, sample_layout) -> None:
    require_tools("gio")
    m = mount_image(sample_layout, "--read-only")
    info = _gio_info(m.path / "refs" / SAMPLE_REF / "rootfs/etc/os-release", *ACCESS)
    assert set(info.values()) == {"FALSE"}


# ----- symlinks --------------------------------------------------------------


def test_absolute_symlinks_keep_their_target_by_default(mount_image, sample_layout) -> None:
    m = mount_image(sample_layout)
    link = m.path / "refs" / SAMPLE_REF / "rootfs/etc/absolute-link"
    assert os.readlink(link) == "/etc/os-release"
    assert os.lstat(link).st_size == len("/etc/os-release")


def test_symlinks_contained_point_inside_the_image(mount_image, sample_layout) -> None:
    m = mount_image(sample_layout, "-o", "symlinks=contained")
    ref = m.path / "refs" / SAMPLE_REF
    for tree in (ref / "rootfs", ref / "layers/0"):
        link = tree / "etc/absolute-link"
        assert os.readlink(link) == "os-release"
        assert os.lstat(link).st_size == len("os-release")
        assert link.read_bytes() == (tree / "etc/os-release").read_bytes()
        assert b"ocifs-sample" in link.read_bytes()  # the image's file, not the host's
        # relative links that stay inside are shown as stored
        relative = tree / "usr/share/doc/sample/hello-link"
        assert os.readlink(relative) == "../../../../bin/hello"
        assert relative.read_bytes() == (tree / "bin/hello").read_bytes()
    # GIO follows the link inside the image
    info = subprocess.run(
        ["gio", "info", "-a", "standard::size", str(ref / "rootfs/etc/absolute-link")],
        capture_output=True, text=True, check=True,
    ).stdout
    size = (ref / "rootfs/etc/os-release").stat().st_size
    assert f"standard::size: {size}" in info


def test_unknown_symlinks_value_is_one_line(sample_layout, tmp_path) -> None:
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = ocifs("mount", str(sample_layout), str(mnt), "-o", "symlinks=host")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "ocifs: -o symlinks=host: unknown value (use symlinks=stored or symlinks=contained)"
    ]
    assert not _is_mounted(mnt)


# ----- path options of a detached mount --------------------------------------


def test_relative_path_options_are_resolved_before_detaching(sample_layout, tmp_path) -> None:
    require_fuse()
    work = tmp_path / "work"
    (work / "mnt").mkdir(parents=True)
    result = subprocess.run(
        [*OCIFS, "mount", str(sample_layout), "mnt", "--cache-dir", "cache",
         "--pid-file", "ocifs.pid", "--log", "ocifs.log"],
        cwd=work, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    try:
        pid = int((work / "ocifs.pid").read_text())
        assert (work / "mnt/refs" / SAMPLE_REF / "rootfs/etc/os-release").read_bytes()
        assert any((work / "cache").iterdir()), "the layer index went elsewhere"
        assert "mounted" in (work / "ocifs.log").read_text()
        status = json.loads(ocifs("status", "--json", str(work / "mnt"), check=True).stdout)
        assert status["cache"]["directory"] == str(work / "cache")
    finally:
        assert ocifs("umount", str(work / "mnt")).returncode == 0
    assert _wait_gone(pid)

def test_a_reader_that_leaves_early_gets_no_traceback(sample_layout) -> None:
    """`ocifs check ... | head -0`: the pipe closes before ocifs writes; it exits
    quietly (141, as for SIGPIPE) instead of printing a BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [*OCIFS, "check", str(sample_layout)], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


# ----- mistakes a new user makes ------------------------------------------------


def test_mounting_on_a_mountpoint_in_use_names_what_is_there(mount_image, sample_layout) -> None:
    m = mount_image(sample_layout)
    result = ocifs("mount", str(sample_layout), str(m.path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"ocifs: {m.path}: already a mount point (ocifs of {sample_layout}; "
        f"`ocifs umount {m.path}` removes it)"
    ]
    assert ocifs("list", "--json", check=True).stdout.count(f'"{m.path}"') == 1


def test_status_and_umount_of_a_directory_inside_a_mount(mount_image, sample_layout) -> None:
    """`ocifs status .` from MNT/refs, `ocifs umount SOURCE`: the user is told which
    mountpoint to name."""
    m = mount_image(sample_layout)
    inside = m.path / "refs"
    for command in ("status", "umount"):
        result = ocifs(command, str(inside))
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"ocifs: {inside}: not a mountpoint; it is inside the ocifs mount {m.path}"
        ]
        result = ocifs(command, str(sample_layout))
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"ocifs: {sample_layout}: not a mountpoint; it is the source of the ocifs mount "
            f"{m.path}"
        ]
    assert _is_mounted(m.path)


def test_gc_of_a_mountpoint_collects_in_its_source(mount_image, sample_layout, tmp_path) -> None:
    """`ocifs gc MNT` works on the layout mounted there (never through the read-only
    blobs/ of the mount), and refuses archives, mounted or not, in one line."""
    layout = copy_layout(sample_layout, tmp_path / "layout")
    stray = layout / "blobs/sha256" / ("0" * 64)
    stray.write_bytes(b"nothing references this")
    m = mount_image(layout)
    result = ocifs("gc", "--grace", "0", str(m.path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{layout} (the source of the mount {m.path})"
    assert f"removed sha256:{'0' * 64} (23 bytes)" in result.stdout
    assert not stray.exists()

    archive = tmp_path / "sample.tar"
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci:{sample_layout}:{SAMPLE_REF}", f"oci-archive:{archive}"],
        check=True,
    )
    ro = mount_image(archive)
    for target, expected in (
        (ro.path, f"ocifs: {ro.path}: mounts {archive}; `ocifs gc` removes blobs from an OCI "
                  "image layout directory only"),
        (archive, f"ocifs: {archive}: a file, not a layout directory (`ocifs gc` removes blobs "
                  "from an OCI image layout directory; archives are read-only)"),
    ):
        result = ocifs("gc", str(target))
        assert (result.returncode, result.stderr.splitlines()) == (1, [expected])


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--cache-dir", "/proc/no-such-dir", "cannot use as cache directory: No such file or "
                                             "directory"),
        ("--cache-dir", "/etc/hostname", "cannot use as cache directory: not a directory"),
        ("--log", "/proc/no-such-dir/ocifs.log", "cannot write the log: No such file or "
                                                 "directory"),
        ("--pid-file", "/no-such-dir/ocifs.pid", "cannot write the pid file: /no-such-dir is "
                                                 "not a directory"),
    ],
)
@pytest.mark.parametrize("foreground", [False, True], ids=["detached", "foreground"])
def test_unusable_cache_log_or_pid_file_is_refused_before_mounting(
    sample_layout, tmp_path, option, value, problem, foreground
) -> None:
    """These used to mount and then fail every rootfs/ with ENOENT (cache), or end the
    daemon without a word (`see /proc/.../ocifs.log`, an internal error for the pid file)."""
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = [option, value]
    if option != "--cache-dir":
        args += ["--cache-dir", str(tmp_path / "cache")]
    if option != "--log":
        args += ["--log", str(tmp_path / "ocifs.log")]
    result = ocifs("mount", *(["-f"] if foreground else []), *args, str(sample_layout), str(mnt))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"ocifs: {value}: {problem}"]
    assert not _is_mounted(mnt)


def test_umount_of_a_busy_mount_says_what_to_do(mount_image, sample_layout) -> None:
    m = mount_image(sample_layout)
    holder = subprocess.Popen(["sleep", "600"], cwd=m.path / "refs")
    try:
        result = ocifs("umount", str(m.path))
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"ocifs: {m.path}: cannot unmount: device or resource busy: a process is using it "
            "(its cwd or an open file); `ocifs umount -z` detaches it now and unmounts once "
            "that process is done"
        ]
        assert _is_mounted(m.path)
    finally:
        holder.kill()
        holder.wait()


def test_a_layout_that_cannot_be_written_is_mounted_read_only(sample_layout, tmp_path) -> None:
    """As mount(8) does for a write-protected device: one line, then a read-only mount
    (no `.import/` where every copy would fail with EROFS at close)."""
    require_fuse()
    require(None if os.geteuid() == 0 else "a read-only bind mount needs root")
    layout = copy_layout(sample_layout, tmp_path / "layout")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    subprocess.run(["mount", "--bind", str(layout), str(readonly)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(readonly)], check=True)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        result = ocifs("mount", "--cache-dir", str(tmp_path / "cache"), "--log",
                       str(tmp_path / "ocifs.log"), str(readonly), str(mnt))
        try:
            assert result.returncode == 0, result.stderr
            assert result.stderr.splitlines() == [
                f"ocifs: {readonly}: layout is not writable; mounting it read-only (no .import/)"
            ]
            assert not (mnt / ".import").exists()
            status = json.loads(ocifs("status", "--json", str(mnt), check=True).stdout)
            assert status["read_only"] is True
            assert b"VERSION_ID=1.1" in (mnt / "refs" / SAMPLE_REF / "rootfs/etc/os-release"
                                         ).read_bytes()
        finally:
            ocifs("umount", str(mnt))
    finally:
        subprocess.run(["umount", str(readonly)], check=False)


def test_an_unusable_home_is_one_line_naming_the_default_and_the_option(sample_layout,
                                                                         tmp_path) -> None:
    """With HOME where nothing can be created, the default log and cache directories
    fail: one line each, saying which option chooses another (was a traceback)."""
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "HOME": "/proc/no-such-home"}
    for k in ("XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env.pop(k, None)
    cases = [
        ([], "ocifs: /proc/no-such-home/.local/state/ocifs/log: cannot create the log "
             "directory: No such file or directory (--log FILE chooses another)"),
        (["--log", str(tmp_path / "ocifs.log")],
         "ocifs: /proc/no-such-home/.cache/ocifs: cannot use as cache directory: No such file "
         "or directory (--cache-dir DIR chooses another)"),
    ]
    for extra, expected in cases:
        result = subprocess.run([*OCIFS, "mount", *extra, str(sample_layout), str(mnt)],
                                capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
        assert (result.returncode, result.stderr.splitlines()) == (1, [expected])
        assert not _is_mounted(mnt)


@pytest.mark.parametrize("what", ["source", "source-parent", "cache"])
def test_a_mount_that_would_hide_its_own_source_or_cache_is_refused(
    sample_layout, tmp_path, what
) -> None:
    """`ocifs mount -o nonempty L L` mounted over its own source and hung every access
    (and `ocifs mount` itself): refused in one line, nothing mounted."""
    require_fuse()
    layout = copy_layout(sample_layout, tmp_path / "layout")
    cache = tmp_path / "cache"
    if what == "source":
        mnt, hidden, name = layout, layout, "the source"
    elif what == "source-parent":
        mnt, hidden, name = tmp_path, layout, "the source"
    else:
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        cache = hidden = mnt / "cache"
        name = "the cache directory"
    where = "the mountpoint" if hidden == mnt else "under it"
    result = ocifs("mount", "-o", "nonempty", "--cache-dir", str(cache), "--log",
                   str(tmp_path.parent / f"{tmp_path.name}.log"), str(layout), str(mnt),
                   timeout=30)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"ocifs: {mnt}: {name} {hidden} is {where}; the mount would hide it from ocifs "
        "itself (choose another mountpoint)"
    ]
    assert not _is_mounted(mnt)
