"""Issue 13: an ordinary user installs ocifs for themselves, mounts, reads, imports, unmounts.

A real unprivileged user is created for the test (useradd) and every command
runs as that user (runuser, a clean environment): `bash scripts/install-deps`
in the user's own copy of the checkout with Debian's /usr/bin/python3 (a venv
under /root would not be readable), then `ocifs` from ~/.local/bin on the PATH,
mounting through fusermount3.

On the project's machines /dev/fuse is mode 0600 (a sandbox setting; Debian
ships 0666), so the test rebuilds the standard setting for itself alone: in a
private mount namespace it binds a 0666 node for the FUSE device over
/dev/fuse, and a /etc/fuse.conf without `user_allow_other` over the real one.
Everything the user does runs inside that namespace (nsenter); nothing outside
it changes.

Cost: pyfuse3 has no binary wheels, so its build dominates the install. The
wheels that root's pip already built for this checkout's .venv are offered to
the user's pip (PIP_FIND_LINKS, a copy the user can read), as a site wheelhouse
would; pip still resolves and installs everything itself. Measured here:
30 s for the install and 43 s for the module (machine busy; 63 s and 165 s
for the install without the wheelhouse, depending on load).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO, _wait_gone, require, require_fuse, require_tools

#: What a user's copy of the checkout needs to install and run ocifs.
CHECKOUT_PARTS = ("ocifs", "scripts", "pyproject.toml", "README.md")
#: Passed through to the user's environment if set (machines behind a proxy).
PASSED_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
NAMESPACE_SETUP = r"""
set -e
mount -t tmpfs -o mode=755 ocifs-test-dev "$1"
mknod -m 666 "$1/fuse" c 10 229
mount --bind "$1/fuse" /dev/fuse
printf '# written by the ocifs test: user_allow_other is not set\n' > "$1/fuse.conf"
mount --bind "$1/fuse.conf" /etc/fuse.conf
echo ready
exec sleep 3600
"""


@dataclass
class User:
    name: str
    home: Path
    namespace_pid: int
    install_seconds: float = 0.0
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> list[str]:
        pairs = {
            **self.extra_env,
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "PATH": f"{self.home}/.local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            **{k: os.environ[k] for k in PASSED_ENV if k in os.environ},
        }
        return [f"{k}={v}" for k, v in pairs.items()]

    def run(self, *cmd: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `cmd` as the user, in the user's home, inside the test's mount namespace."""
        return subprocess.run(
            ["nsenter", "-t", str(self.namespace_pid), "-m", "--",
             "runuser", "-u", self.name, "--", "env", "-i", *self.env(),
             "sh", "-c", 'cd "$HOME" && exec "$@"', "sh", *[str(c) for c in cmd]],
            capture_output=True, text=True, timeout=timeout, check=False,
        )

    def mounted(self, path: Path) -> bool:
        with open(f"/proc/{self.namespace_pid}/mountinfo") as f:
            return any(line.split()[4] == str(path) for line in f)


def _wheelhouse(dest: Path) -> Path:
    """Copies of the wheels root's pip built (pyfuse3), readable by the user."""
    dest.mkdir()
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "list", "--format", "abspath"],
        capture_output=True, text=True, check=False,
    ).stdout.split()
    for wheel in listed:
        if wheel.endswith(".whl") and os.path.isfile(wheel):
            shutil.copy(wheel, dest)
    return dest


def _copy_checkout(dest: Path) -> None:
    dest.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for part in CHECKOUT_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=ignore)
        else:
            shutil.copy2(src, dest / part)


@pytest.fixture(scope="module")
def user(sample_layout: Path) -> Iterator[User]:
    require(None if os.geteuid() == 0 else "root, to create a test user")
    require_fuse()
    require_tools("useradd", "userdel", "runuser", "unshare", "nsenter", "mknod")
    require(None if os.access("/usr/bin/python3", os.X_OK) else "/usr/bin/python3")
    base = Path(tempfile.mkdtemp(prefix="ocifs-user-test-"))
    base.chmod(0o755)
    name = f"ocifst{os.urandom(4).hex()}"  # useradd refuses a name that exists
    home = base / name
    home.mkdir()
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/bin/sh", "-U", name], check=True,
                   capture_output=True)
    holder = None
    try:
        _copy_checkout(home / "ocifs")
        shutil.copytree(sample_layout, home / "layout", symlinks=True)
        for d in ("mnt", "mnt2"):
            (home / d).mkdir()
        subprocess.run(["chown", "-R", f"{name}:{name}", str(home)], check=True)
        dev = base / "dev"
        dev.mkdir()
        holder = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", NAMESPACE_SETUP, "sh",
             str(dev)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert holder.stdout is not None
        line = holder.stdout.readline().strip()
        if line != "ready":
            detail = holder.stderr.read() if holder.stderr else ""
            pytest.fail(f"private mount namespace setup failed: {detail}")
        wheels = _wheelhouse(base / "wheels")
        u = User(name, home, holder.pid, extra_env={"PIP_FIND_LINKS": str(wheels)})
        started = time.monotonic()
        # the README's command, as the user, without the test extra (pytest, mypy...)
        result = u.run("env", "OCIFS_EXTRAS=", "bash", "ocifs/scripts/install-deps", timeout=280)
        u.install_seconds = time.monotonic() - started
        assert result.returncode == 0, f"install as {name} failed:\n{result.stderr[-3000:]}"
        yield u
    finally:
        if holder is not None:
            pid_file = home / "ocifs.pid"
            for mnt in ("mnt", "mnt2"):
                subprocess.run(["nsenter", "-t", str(holder.pid), "-m", "--", "fusermount3",
                                "-u", "-z", str(home / mnt)], capture_output=True, check=False)
            if pid_file.exists():
                _wait_gone(int(pid_file.read_text()))
            holder.kill()
            holder.wait()
        subprocess.run(["userdel", name], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_user_install_puts_ocifs_on_path(user: User) -> None:
    print(f"install-deps as {user.name}: {user.install_seconds:.1f} s")
    result = user.run("sh", "-c", "command -v ocifs && ocifs --version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{user.home}/.local/bin/ocifs", "ocifs 0.1.0"]
    venv_python = os.path.realpath(user.home / "ocifs/.venv/bin/python")
    assert venv_python.startswith("/usr/bin/"), venv_python  # readable by the user


def test_user_mounts_reads_imports_and_unmounts(user: User) -> None:
    mnt = user.home / "mnt"
    pid_file = user.home / "ocifs.pid"
    result = user.run("ocifs", "mount", "--pid-file", pid_file, "layout", "mnt")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert user.mounted(mnt)
    # reads everything: every file of every tree, blobs, layers and rootfs, whatever
    # its mode in the image (whiteouts are mode 0; /etc/shadow would be 0640 root)
    result = user.run("sh", "-c", "find mnt -type f -exec cat {} + | wc -c")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert int(result.stdout) > 300_000
    result = user.run("cat", "mnt/refs/sample:1.0/rootfs/etc/os-release")
    assert "VERSION_ID=1.1" in result.stdout
    # imports as the user: the blob lands in the user's layout
    result = user.run("sh", "-c", "printf 'from a user\\n' > blob && cp blob mnt/.import/")
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256(b"from a user\n").hexdigest()
    committed = user.home / "layout/blobs/sha256" / digest
    assert committed.read_bytes() == b"from a user\n"
    assert committed.stat().st_uid == int(user.run("id", "-u").stdout)
    daemon = int(pid_file.read_text())
    result = user.run("ocifs", "umount", "mnt")
    assert result.returncode == 0, result.stderr
    assert not user.mounted(mnt)
    assert _wait_gone(daemon)
    log = user.home / ".local/state/ocifs/log/ocifs.log"
    assert " ERROR " not in log.read_text() and "Traceback" not in log.read_text()
    assert not (user.home / "layout/.ocifs-staging").exists()


def test_user_allow_other_without_user_allow_other_is_one_line(user: User) -> None:
    result = user.run("ocifs", "mount", "-o", "allow_other", "layout", "mnt2")
    print(f"$ ocifs mount -o allow_other layout mnt2\n{result.stderr}")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "user_allow_other" in lines[0] and "/etc/fuse.conf" in lines[0]
    assert lines[0].startswith("ocifs: ")
    assert not user.mounted(user.home / "mnt2")


def test_user_runs_the_readme_mount_line_as_written(user: User, sample_layout: Path) -> None:
    """The last line of the README's "As an ordinary user" block, from the user's clone."""
    from tests.mount.test_readme_examples import readme_block

    line = readme_block("### As an ordinary user")[-1]
    assert line.startswith("mkdir -p ~/mnt && ocifs mount ./my-layout ~/mnt"), line
    layout = user.home / "ocifs/my-layout"
    shutil.copytree(sample_layout, layout, symlinks=True)
    subprocess.run(["chown", "-R", f"{user.name}:{user.name}", str(layout)], check=True)
    result = user.run("sh", "-c", f"cd ~/ocifs && {line}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["sample:1.0", "sample:1.0-zstd"]
    assert not user.mounted(user.home / "mnt")
