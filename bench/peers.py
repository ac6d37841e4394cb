"""The peers the bench compares against, installed by the bench itself.

* ratarmount 1.3.0 from PyPI into the bench's own venv (`<bench dir>/venv-peers`), the
  version BASELINES.md measured; never into the project's .venv.
* Debian packages for the other alternatives (umoci, skopeo, zstd, gzip, tar, fuse3) when
  a command is missing and we are root; otherwise the missing alternative shows as n/a.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

RATARMOUNT = "ratarmount==1.3.0"

APT_FOR_COMMAND = {
    "umoci": "umoci",
    "skopeo": "skopeo",
    "zstd": "zstd",
    "gzip": "gzip",
    "fusermount3": "fuse3",
    "mountpoint": "util-linux",
    "debootstrap": "debootstrap",
}


def log(msg: str) -> None:
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


def ensure_apt(commands: list[str]) -> dict[str, str | None]:
    """Install the Debian packages behind missing commands. Returns command -> None if
    present, else the reason it is missing."""
    missing = [c for c in commands if not shutil.which(c)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        pkgs = sorted({APT_FOR_COMMAND[c] for c in missing if c in APT_FOR_COMMAND})
        log(f"apt-get install {' '.join(pkgs)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *pkgs],
                       env=env, check=False, stdout=subprocess.DEVNULL)
    return {c: (None if shutil.which(c) else f"{c} not installed") for c in commands}


def ensure_ratarmount(bench_dir: Path) -> tuple[str | None, str]:
    """Returns (path to the ratarmount executable or None, version or reason)."""
    venv = bench_dir / "venv-peers"
    exe = venv / "bin" / "ratarmount"
    if not exe.exists():
        base = getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable
        log(f"creating {venv} and installing {RATARMOUNT} from PyPI")
        shutil.rmtree(venv, ignore_errors=True)
        r = subprocess.run([base, "-m", "venv", str(venv)], capture_output=True)
        if r.returncode != 0:
            return None, f"venv failed: {r.stderr.decode()[-300:]}"
        r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", RATARMOUNT],
                           capture_output=True)
        if r.returncode != 0 or not exe.exists():
            return None, f"pip install {RATARMOUNT} failed: {r.stderr.decode()[-300:]}"
    r = subprocess.run([str(venv / "bin" / "python"), "-c",
                        "import importlib.metadata as m; print(' '.join(f'{p} '"
                        "+m.version(p) for p in ('ratarmount','ratarmountcore','rapidgzip',"
                        "'indexed_zstd','mfusepy')))"], capture_output=True, text=True)
    return str(exe), r.stdout.strip() or "ratarmount (version unknown)"
