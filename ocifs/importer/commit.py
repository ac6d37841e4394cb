"""Blob paths, reads, and the durable commit of verified staging files into ``blobs/``.

The Python cousin of containerd's content-store ``Commit``: the caller has
verified size and digest; here each staging file is fsynced, renamed into place
(skipped when the blob already exists: content addressing makes a second copy a
no-op, and existing blobs are never rewritten), and every directory that gained
a name is fsynced once. A committed blob gets mtime = commit time, which is
what `ocifs gc`'s grace period measures. Blocking: run from a worker thread.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from ocifs import durable
from ocifs.errors import NotDurable
from ocifs.importer.staging import StagedFile
from ocifs.model.digest import Digest


def blob_path(layout: str, digest: Digest) -> str:
    return os.path.join(layout, "blobs", digest.path_fragment)


def blob_size(layout: str, digest: Digest) -> int | None:
    """Size of a blob present in the layout (regular files only), else None."""
    try:
        st = os.lstat(blob_path(layout, digest))
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def read_range(path: str, offset: int, size: int) -> bytes:
    """Bytes of a committed blob (blocking: worker threads only)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def _touch(target: str | int) -> None:
    """Set a new blob's mtime to its commit time: `ocifs gc` spares blobs younger
    than its grace period, and an import is about to reference this one. (A blob
    already present is not touched: existing blobs are never modified.)"""
    try:
        os.utime(target)
    except OSError:
        pass  # a read-only or foreign-owned blob: gc's grace is then counted from its write


def commit_blobs(layout: str, blobs: Iterable[tuple[Digest, StagedFile]]) -> list[Digest]:
    """Rename verified staging files into blobs/; returns the digests that are new.

    Order per blob: fsync staging -> rename -> (once per directory) fsync dir.
    A staging file whose blob already exists is discarded, never renamed over it.
    """
    new: list[Digest] = []
    dirs: set[str] = set()
    for digest, staged in blobs:
        final = blob_path(layout, digest)
        if blob_size(layout, digest) is not None:
            staged.discard()
            continue
        durable.makedirs(os.path.dirname(final))
        staged.settle()
        _touch(staged.fd)
        durable.fsync_fd(staged.fd)
        durable.rename(staged.path, final)
        staged.detach()
        dirs.add(os.path.dirname(final))
        new.append(digest)
    for path in sorted(dirs):
        try:
            durable.fsync_dir(path)
        except OSError as exc:
            raise NotDurable(
                f"{len(new)} new blob(s) are in {path}, but the fsync of that directory "
                f"failed ({os.strerror(exc.errno) if exc.errno else exc}): they may not "
                "survive a crash, and nothing referencing them was merged into index.json"
            ) from None
    return new
