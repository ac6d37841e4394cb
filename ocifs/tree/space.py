"""Figures for `statfs`: what `df` and file managers show for a mount.

A writable layout mount reports the filesystem that holds the layout (that is
where imports go), with its own block sizes, so every tool's arithmetic agrees.
A read-only mount has no free space; its size is the image's bytes on disk.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

#: fragment size reported for read-only mounts
BLOCK = 4096


@dataclass(frozen=True)
class Space:
    bsize: int
    frsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    favail: int


def of_layout_filesystem(path: str) -> Space:
    """The filesystem holding `path`, as it reports itself (blocking)."""
    st = os.statvfs(path)
    return Space(
        st.f_bsize, st.f_frsize, st.f_blocks, st.f_bfree, st.f_bavail,
        st.f_files, st.f_ffree, st.f_favail,
    )


def of_read_only_image(path: str) -> Space:
    """Size of the source (archive file, or the blobs of a layout), nothing free (blocking)."""
    total = _bytes_under(path)
    return Space(BLOCK, BLOCK, (total + BLOCK - 1) // BLOCK, 0, 0, 0, 0, 0)


def _bytes_under(path: str) -> int:
    try:
        st = os.stat(path)
    except OSError:
        return 0  # not a local path (e.g. a registry reference)
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total = 0
    for root, _dirs, files in os.walk(os.path.join(path, "blobs")):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total
