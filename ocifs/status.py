"""The mount's report on itself: `MNT/.ocifs/status.json` (read by `ocifs list|status`).

A file inside the mount needs no socket and no registry that could go stale:
whoever can reach the mount can ask its daemon, and a dead daemon answers
ENOTCONN. The JSON (documented in docs/status.md) holds the daemon's pid, the
source, read-only or not, the cache directory and its use, per-layer indexing
state and progress, and `.import/` activity. It is rendered on each open.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ocifs import package_version

if TYPE_CHECKING:
    from ocifs.cache import DiskCache
    from ocifs.importer.area import ImportDir
    from ocifs.layers.store import LayerStore
    from ocifs.tree.tree import Tree

#: name of the report directory at the top of every mount, and of the report in it
STATUS_DIR = ".ocifs"
STATUS_FILE = "status.json"
#: format of status.json; raised when a field changes meaning or disappears
FORMAT = 1


@dataclass
class MountFacts:
    """What does not change while a mount lives."""

    mountpoint: str
    source: str
    kind: str
    read_only: bool
    cache_dir: str
    cache_limit: int
    pid: int = field(default_factory=os.getpid)
    started: float = field(default_factory=time.time)


class StatusReport:
    """Renders status.json from the live objects of one mount."""

    def __init__(
        self,
        facts: MountFacts,
        layers: LayerStore,
        cache: DiskCache,
        area: ImportDir | None,
    ) -> None:
        self.facts = facts
        self.layers = layers
        self.cache = cache
        self.area = area

    async def render(self) -> bytes:
        import trio  # here: the CLI imports this module for its names only

        cache_used = await trio.to_thread.run_sync(self.cache.used_bytes)
        f = self.facts
        doc = {
            "format": FORMAT,
            "version": package_version(),
            "pid": f.pid,
            "mountpoint": f.mountpoint,
            "source": f.source,
            "kind": f.kind,
            "read_only": f.read_only,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(f.started)),
            "cache": {
                "directory": f.cache_dir,
                "used_bytes": cache_used,
                "limit_bytes": f.cache_limit,
            },
            "layers": self.layers.progress.snapshot(),
            "imports": self._imports(),
        }
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode(
            "utf-8", "surrogateescape"
        )

    def _imports(self) -> dict[str, object] | None:
        if self.area is None:
            return None
        session = self.area.session
        active = [
            {"path": "/".join(ingest.path), "bytes_received": ingest.size}
            for ingest in list(session.active)
        ]
        return {"active": active, "pending_entries": len(session.pending.items)}


def install(tree: Tree, report: StatusReport) -> None:
    """Put `.ocifs/status.json` at the top of the mount."""
    from ocifs.tree.nodes import DirNode, GeneratedFile

    status_file = GeneratedFile(tree.alloc_inode(), report.render)
    tree.attach(STATUS_DIR, DirNode(tree.alloc_inode(), children={STATUS_FILE: status_file}))
