"""Issue 13: what `ocifs mount` leaves behind and what it says when FUSE refuses.

A bad `-o` gets libfuse's own reason in one line (not `fuse_session_new()
failed`); the detached daemon does not keep the caller's descriptors (a shell's
`flock` is released when `ocifs mount` returns); unmounting leaves a layout as
it was found (no empty `.ocifs-staging/`).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import OCIFS, REPO, _wait_gone, copy_layout, ocifs, require_fuse, unmount


@pytest.mark.parametrize(
    ("option", "reason"),
    [
        ("bogus", "unknown option(s): `-o bogus'"),
        ("max_read=abc", "invalid parameter in option `max_read=abc'"),
        # a typo of an option ocifs documents gets a suggestion
        ("read-only", "unknown option(s): `-o read-only' (did you mean -o ro?)"),
        ("symlink=contained",
         "unknown option(s): `-o symlink=contained' (did you mean -o symlinks=contained?)"),
    ],
)
@pytest.mark.parametrize("foreground", [False, True])
def test_bad_fuse_option_says_why_in_one_line(
    sample_layout: Path, tmp_path: Path, cache_dir: Path, option: str, reason: str,
    foreground: bool,
) -> None:
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = ["-f"] if foreground else []
    result = ocifs("mount", *args, "-o", option, "--cache-dir", str(cache_dir),
                   "--log", str(tmp_path / "log"), str(sample_layout), str(mnt))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"ocifs: {mnt}: cannot mount: fuse: {reason}"]
    assert not os.path.ismount(mnt)


def test_the_command_starts_the_daemon_before_the_heavy_imports(
    sample_layout: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """`ocifs mount` itself imports argparse-level modules only: the forked daemon
    imports pyfuse3, trio and the source readers (most of the start-up time). A
    source that is not an image is still refused in one line, nothing mounted."""
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def command_imports(source: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
        # the daemon's own stderr is /dev/null: only the command's imports are listed
        result = subprocess.run(
            [OCIFS[0], "-X", "importtime", *OCIFS[1:], "mount", "--cache-dir", str(cache_dir),
             "--log", str(tmp_path / "log"), str(source), str(mnt)],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )
        lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
        return result, {line.rsplit("|", 1)[1].strip() for line in lines}

    heavy = {"pyfuse3", "trio", "ocifs.serve", "ocifs.fuse", "ocifs.sources.detect", "httpx"}
    try:
        result, imported = command_imports(sample_layout)
        assert result.returncode == 0, result.stderr
        assert "argparse" in imported and "ocifs.daemon" in imported
        assert not heavy & imported, heavy & imported
        assert (mnt / "index.json").read_bytes() == (sample_layout / "index.json").read_bytes()
    finally:
        unmount(mnt)
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello\n")
    result, imported = command_imports(not_image)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 1
    assert errors == [f"ocifs: {not_image}: not an image archive (not a tar file)"], errors
    assert not os.path.ismount(mnt) and not os.listdir(mnt)


def test_detached_daemon_does_not_keep_the_callers_descriptors(
    sample_layout: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """`exec 9>lock; flock 9; ocifs mount ...; exec 9>&-`: the lock is free again."""
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    lock = tmp_path / "lock"
    held = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)
    pid_file = tmp_path / "pid"
    try:
        result = subprocess.run(
            [*OCIFS, "mount", "--cache-dir", str(cache_dir), "--log", str(tmp_path / "log"),
             "--pid-file", str(pid_file), str(sample_layout), str(mnt)],
            capture_output=True, text=True, timeout=60, cwd=REPO, pass_fds=(held,),
        )
        assert result.returncode == 0, result.stderr
        os.close(held)  # the caller is done with its lock
        other = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if still held
        finally:
            os.close(other)
        daemon_fds = os.listdir(f"/proc/{int(pid_file.read_text())}/fd")
        targets = {os.readlink(f"/proc/{int(pid_file.read_text())}/fd/{fd}") for fd in daemon_fds}
        assert str(lock) not in targets
        assert (mnt / "index.json").read_bytes() == (sample_layout / "index.json").read_bytes()
    finally:
        unmount(mnt)


def test_unmount_leaves_the_layout_as_found(
    mount_image: Any, sample_layout: Path, tmp_path: Path
) -> None:
    layout = copy_layout(sample_layout, tmp_path / "layout")
    before = sorted(os.listdir(layout))
    m = mount_image(layout)
    data = b"a blob imported through the mount\n"
    (m.path / ".import/blob").write_bytes(data)
    assert "OK blob" in (m.path / ".import/.status").read_text()
    pid = m.pid
    unmount(m.path)
    assert _wait_gone(pid)  # the daemon tidies up after the kernel let go
    after = sorted(os.listdir(layout))
    # the lock file is documented to stay (other tools take it too)
    assert after == sorted([*before, ".ocifs.lock"])


def test_stale_empty_staging_directory_is_removed_at_mount(
    mount_image: Any, sample_layout: Path, tmp_path: Path
) -> None:
    layout = copy_layout(sample_layout, tmp_path / "layout")
    (layout / ".ocifs-staging").mkdir()  # left by an older ocifs
    (layout / ".ocifs-staging" / "ingest-999999999-00").write_bytes(b"partial")  # a crash's
    m = mount_image(layout)
    assert (m.path / "index.json").exists()
    assert not (layout / ".ocifs-staging").exists()


def test_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import version

    result = subprocess.run([*OCIFS, "--version"], capture_output=True, text=True, check=True,
                            cwd=REPO)
    assert result.stdout == f"ocifs {version('ocifs-mount')}\n"
