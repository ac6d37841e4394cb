"""Shared fixtures: real FUSE mounts driven through the `ocifs` command.

`mount_image(source, ...)` runs `ocifs mount` (which returns once the mount
answers), and at teardown unmounts, waits for the daemon to exit and fails the
test if the daemon's log holds ERROR lines or tracebacks the test did not
declare with `expect_log`. In CI (`CI=true`) missing FUSE is a failure, never a
skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"  # third-party test data, copied in (README there)
OCIFS = [sys.executable, "-m", "ocifs"]


def fuse_available() -> str | None:
    """None if FUSE mounts can work here, else the reason."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed"
    return None


def require(missing: str | None) -> None:
    """Skip a test whose prerequisite is `missing` (a reason), but fail under CI=true.

    scripts/install-deps installs every tool and the fixtures are part of the
    checkout, so in CI a missing prerequisite is a broken setup.
    """
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"required in CI: {missing}")
    pytest.skip(missing)


def require_fuse() -> None:
    reason = fuse_available()
    require(None if reason is None else f"FUSE ({reason})")


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    require(f"tools not installed: {', '.join(missing)}" if missing else None)


def require_paths(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    require(f"missing: {', '.join(missing)}" if missing else None)


def ocifs(*args: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OCIFS, *args], capture_output=True, text=True, timeout=timeout, check=check, cwd=REPO
    )


@dataclass
class Mounted:
    path: Path
    source: Path
    log: Path
    pid_file: Path
    expected_log: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return int(self.pid_file.read_text().strip())

    def expect_log(self, pattern: str) -> None:
        """Declare an ERROR/WARNING line this test provokes on purpose (a regex)."""
        self.expected_log.append(pattern)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _is_mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def unmount(path: Path) -> None:
    if not _is_mounted(path):
        return
    result = subprocess.run(["fusermount3", "-u", str(path)], capture_output=True, check=False)
    if result.returncode != 0:
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, check=False)


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for init to reap it.

    A detached daemon is re-parented to init once `ocifs mount` exits, and some
    inits reap late: its exit is what counts, not the reaping.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    d = tmp_path / "cache"
    d.mkdir()
    return d


@pytest.fixture
def mount_image(tmp_path: Path, cache_dir: Path) -> Iterator[object]:
    """Factory: mount_image(source, *extra_args) -> Mounted."""
    require_fuse()
    mounts: list[Mounted] = []
    counter = iter(range(1000))

    def _mount(source: Path | str, *extra: str, cache: Path | None = None) -> Mounted:
        n = next(counter)
        mnt = tmp_path / f"mnt{n}"
        mnt.mkdir()
        m = Mounted(
            path=mnt,
            source=Path(source),
            log=tmp_path / f"ocifs{n}.log",
            pid_file=tmp_path / f"ocifs{n}.pid",
        )
        result = ocifs(
            "mount",
            str(source),
            str(mnt),
            "--log",
            str(m.log),
            "--pid-file",
            str(m.pid_file),
            "--cache-dir",
            str(cache or cache_dir),
            *extra,
        )
        assert result.returncode == 0, f"mount failed: {result.stderr}\n{m.log_text()}"
        assert _is_mounted(mnt)
        mounts.append(m)
        return m

    yield _mount

    problems = []
    for m in mounts:
        pid = m.pid if m.pid_file.exists() else None
        unmount(m.path)
        if pid is not None and not _wait_gone(pid):
            problems.append(f"daemon {pid} for {m.path} did not exit after unmount")
        bad = [
            line
            for line in m.log_text().splitlines()
            if (" ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"))
            and not any(re.search(p, line) for p in m.expected_log)
        ]
        if bad:
            problems.append(f"unexpected log lines for {m.source}:\n" + "\n".join(bad[:10]))
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="session")
def sample_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's sample image (gzip and zstd variants), built with umoci and skopeo."""
    dest = tmp_path_factory.mktemp("sample") / "layout"
    subprocess.run(
        [str(REPO / "scripts" / "make-sample-image"), str(dest)], check=True, capture_output=True
    )
    return dest


def copy_layout(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst
