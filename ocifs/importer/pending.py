"""Index entries waiting for their blobs (a layout copied index.json-first).

`cp -r layout/. .import/` writes files in readdir order, so index.json may land
before the blobs it references. Its entries wait here, each with the set of
digests still missing; every commit re-checks only the entries waiting on a
digest that just arrived. Pending entries live in memory for the mount's
lifetime: they are listed in `.import/.pending` and logged as abandoned at
unmount if their blobs never came. The entries of one index.json form a
`Batch`: its single `.status` line is written when the last of them is settled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ocifs.importer.indexjson import entry_name
from ocifs.model.descriptor import Descriptor
from ocifs.model.digest import Digest


@dataclass(eq=False)
class Batch:
    """The outcome so far of one index.json import whose entries had to wait."""

    source: str
    merged: int = 0  # entries merged (at once or later)
    failures: list[str] = field(default_factory=list)
    waited: bool = False  # some entries had to wait for their blobs


@dataclass(eq=False)
class PendingEntry:
    source: str  # the index.json path inside .import/ that brought it
    entry: dict[str, Any]
    desc: Descriptor
    missing: set[Digest]
    batch: Batch = field(default_factory=lambda: Batch(""))
    since: float = field(default_factory=time.time)

    def label(self) -> str:
        name = entry_name(self.entry) or "(untagged)"
        return f"{name} {self.desc.digest}"

    def describe(self) -> str:
        missing = ", ".join(sorted(str(d) for d in self.missing)[:3])
        more = f" (+{len(self.missing) - 3})" if len(self.missing) > 3 else ""
        return f"{self.label()} waits for {missing}{more}"


class Pending:
    """Pending entries; mutated on the trio thread only."""

    def __init__(self) -> None:
        self.items: list[PendingEntry] = []

    def replace_source(self, source: str, items: list[PendingEntry]) -> list[Batch]:
        """A new index.json at `source` replaces what the previous one left pending;
        returns the batches that were dropped unfinished."""
        dropped = {p.batch for p in self.items if p.source == source}
        self.items = [p for p in self.items if p.source != source] + items
        return list(dropped)

    def unfinished(self, batch: Batch) -> bool:
        return any(p.batch is batch for p in self.items)

    def waiting_on(self, digests: set[Digest]) -> list[PendingEntry]:
        return [p for p in self.items if p.missing & digests]

    def remove(self, done: list[PendingEntry]) -> None:
        self.items = [p for p in self.items if p not in done]

    def lines(self) -> list[str]:
        """`.status` lines, in the same format as `StatusLog` lines."""
        return [
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(p.since))} PENDING {p.source}: "
            f"{p.describe()}"
            for p in self.items
        ]
