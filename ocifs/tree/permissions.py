"""Answers to `access(2)` for a mount without `default_permissions` (docs/permissions.md).

With `default_permissions` the kernel checks mode bits itself, and root passes
every write check whatever the bits say, so GIO (Nautilus, Thunar, pcmanfm)
offered to delete and trash files that could only fail with EROFS. ocifs
therefore checks access itself when no other user can enter the mount: the
user who mounted it may read everything (they can read the image's bytes in
the source anyway), may execute what has an execute bit, and may write only
inside `.import/`.
"""

from __future__ import annotations

import os
import stat

from ocifs.errors import ReadOnly


def allowed(file_mode: int, requested: int, *, writable: bool) -> bool:
    """Whether `requested` (`os.R_OK | W_OK | X_OK`) is granted on a node of `file_mode`.

    Raises ReadOnly (EROFS) for a write request on a node that cannot be
    written, as `access(2)` does on a read-only mount.
    """
    if requested & os.W_OK and not writable:
        raise ReadOnly("read-only outside .import/")
    if requested & os.X_OK and not stat.S_ISDIR(file_mode):
        return bool(file_mode & 0o111)
    return True
