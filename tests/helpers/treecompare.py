"""Snapshot a directory tree with plain os calls, to compare a mount with an extraction.

Shares no code with ocifs. Never opens anything but regular files (device
nodes on a nodev mount must not be opened).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names if n.startswith("user.")}


def snapshot(root: Path, *, owners: bool = True, mtimes: bool = False) -> dict[str, tuple]:
    """relative path -> (kind, perm bits, uid, gid, size-or-target-or-rdev, sha256, xattrs)."""
    out: dict[str, tuple] = {}
    inode_groups: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            mode = st.st_mode
            detail: object
            digest = ""
            if stat.S_ISREG(mode):
                kind = "file"
                detail = st.st_size
                h = hashlib.sha256()
                with open(full, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                digest = h.hexdigest()
                inode_groups.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISDIR(mode):
                kind, detail = "dir", None
            elif stat.S_ISLNK(mode):
                kind, detail = "symlink", os.readlink(full)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                kind = "char" if stat.S_ISCHR(mode) else "block"
                detail = (os.major(st.st_rdev), os.minor(st.st_rdev))
            elif stat.S_ISFIFO(mode):
                kind, detail = "fifo", None
            else:
                kind, detail = "other", None
            out[rel] = (
                kind,
                oct(stat.S_IMODE(mode)) if kind != "symlink" else None,
                (st.st_uid, st.st_gid) if owners else None,
                detail,
                digest,
                tuple(sorted(_xattrs(full).items())) if kind != "symlink" else (),
                int(st.st_mtime) if mtimes and kind not in ("dir",) else None,
            )
    # hard-link structure: which names share an inode (order-independent)
    groups = sorted(tuple(sorted(g)) for g in inode_groups.values() if len(g) > 1)
    out["\0hardlink-groups"] = tuple(groups)  # type: ignore[assignment]
    return out


def diff(expected: dict[str, tuple], actual: dict[str, tuple], limit: int = 20) -> list[str]:
    problems = []
    for key in sorted(set(expected) | set(actual)):
        if expected.get(key) != actual.get(key):
            problems.append(f"{key!r}: expected {expected.get(key)} got {actual.get(key)}")
            if len(problems) >= limit:
                break
    return problems
