"""Deleting blobs: one named blob (`rm blobs/<alg>/<hex>` in a mount) or every
unreachable one (`ocifs gc`).

Both hold the layout lock — the one every index.json writer takes — from the
reachability walk to the last unlink, so no entry can start referencing a blob
between "unreachable" and "deleted"; and importers re-check, under that lock,
that every blob their new entry needs is present before writing it
(`indexjson.update`). Removals are `unlink` + one fsync of each directory:
a crash leaves some of the doomed blobs, never a reachable one missing.

What an import is doing while gc runs (docs/removal.md):

* blobs it has committed but not yet referenced are spared by the **grace
  period**: gc removes only blobs whose mtime is older than `grace` seconds
  (default one hour). ocifs sets a blob's mtime when an import commits or
  reuses it, so "young" means "an import may be about to reference it" — this
  also covers a layout copied blob by blob into `.import/`, a layer imported
  before the manifest that uses it, and other tools (skopeo, umoci) that write
  blobs before index.json. A young manifest or index keeps what it references.
* blobs still in staging (`.ocifs-staging/`) are not under blobs/ at all.

Blocking: worker threads or the CLI only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from ocifs import durable
from ocifs.errors import InUse, NotFound
from ocifs.importer.commit import blob_path
from ocifs.importer.staging import LOCK_FILE, recover
from ocifs.layout import reach as reach_mod
from ocifs.layout.reach import Blob
from ocifs.model.digest import Digest

#: Default grace period of `ocifs gc`, seconds.
DEFAULT_GRACE = 3600.0


@dataclass
class GcResult:
    removed: list[Blob] = field(default_factory=list)
    #: unreachable, but younger than the grace period
    kept_young: list[Blob] = field(default_factory=list)
    reachable: int = 0
    stale_staging: list[str] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(b.size for b in self.removed)


def _fsync_dirs(layout: str, removed: list[Blob]) -> None:
    for alg in sorted({b.digest.algorithm for b in removed}):
        durable.fsync_dir(os.path.join(layout, "blobs", alg), "blob-unlink-dirsync")


def remove_blob(layout: str, digest: Digest, lock_timeout: float) -> int:
    """Delete one blob nothing reaches; returns its size.

    `InUse` naming the ref whose closure reaches it; `NotFound` if absent.
    No grace period: the user named this blob.
    """
    path = blob_path(layout, digest)
    with durable.layout_lock(os.path.join(layout, LOCK_FILE), lock_timeout):
        try:
            size = os.lstat(path).st_size
        except FileNotFoundError:
            raise NotFound(f"blobs/{digest.path_fragment}: no such blob") from None
        reached = reach_mod.compute(layout)
        via = reached.via.get(digest)
        if via is not None:
            raise InUse(f"blob {digest}: still referenced by {via}; untag it first")
        durable.unlink(path)
        _fsync_dirs(layout, [Blob(digest, size, 0.0)])
    return size


def collect(
    layout: str,
    *,
    dry_run: bool = False,
    grace: float = DEFAULT_GRACE,
    lock_timeout: float = 30.0,
    now: float | None = None,
) -> GcResult:
    """Remove every blob unreachable from index.json (see `ocifs.layout.reach`)."""
    result = GcResult()
    with durable.layout_lock(os.path.join(layout, LOCK_FILE), lock_timeout):
        blobs = list(reach_mod.list_blobs(layout))
        cutoff = (time.time() if now is None else now) - grace
        from_index = reach_mod.compute(layout)
        young = [b for b in blobs if b.mtime > cutoff and b.digest not in from_index]
        spared = reach_mod.compute(layout, extra_roots=young) if young else from_index
        for blob in blobs:
            if blob.digest in from_index:
                result.reachable += 1
            elif blob.digest in spared:
                result.kept_young.append(blob)
            else:
                result.removed.append(blob)
        if not dry_run:
            for blob in result.removed:
                durable.unlink(blob_path(layout, blob.digest))
            _fsync_dirs(layout, result.removed)
    if not dry_run:
        # after the lock: recover() takes it itself (if free) to remove the empty
        # staging directory, and a second flock from this process would conflict
        result.stale_staging = recover(layout)
    return result

