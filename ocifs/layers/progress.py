"""How far each layer's indexing has got, for `ocifs status` and `.ocifs/status.json`.

Indexing a large layer takes a while (one pass over the compressed blob); the
only sign of life used to be the log line at the end. The store registers each
layer it touches here; a counting reader advances `done` as the indexing pass
reads the blob. Written from worker threads, read from the trio thread: every
update is a single attribute store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ocifs.codec.blobio import BlobReader
from ocifs.model.descriptor import Descriptor


@dataclass
class LayerProgress:
    """One layer as the mount knows it."""

    digest: str
    size: int
    #: "indexing", "indexed" (built by this mount), "cached" (read from the
    #: persistent cache), "failed", "stopped" (the mount is going away)
    state: str = "indexing"
    #: compressed bytes of the blob read so far
    done: int = 0
    started: float = field(default_factory=time.time)
    seconds: float | None = None
    entries: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "digest": self.digest,
            "state": self.state,
            "bytes_done": self.done,
            "bytes_total": self.size,
            "started": _iso(self.started),
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "entries": self.entries,
            "error": self.error,
        }


class IndexProgress:
    """Per-layer progress of one mount, by digest."""

    def __init__(self) -> None:
        self.layers: dict[str, LayerProgress] = {}

    def start(self, desc: Descriptor) -> LayerProgress:
        progress = LayerProgress(str(desc.digest), desc.size)
        self.layers[progress.digest] = progress
        return progress

    def loaded(self, desc: Descriptor, entries: int) -> None:
        """The index came from the persistent cache: nothing to read."""
        known = self.layers.get(str(desc.digest))
        if known is not None and known.state not in ("failed", "stopped"):
            return
        self.layers[str(desc.digest)] = LayerProgress(
            str(desc.digest), desc.size, "cached", desc.size, seconds=0.0, entries=entries
        )

    def counting(self, desc: Descriptor, reader: BlobReader) -> BlobReader:
        """`reader`, advancing the progress of `desc`'s indexing as it is read."""
        progress = self.layers.get(str(desc.digest))
        return reader if progress is None else CountingReader(reader, progress)

    def snapshot(self) -> list[dict[str, object]]:
        return [p.as_dict() for p in list(self.layers.values())]


class CountingReader:
    """A BlobReader that records the furthest byte read into a LayerProgress."""

    def __init__(self, inner: BlobReader, progress: LayerProgress) -> None:
        self._inner = inner
        self._progress = progress

    @property
    def size(self) -> int:
        return self._inner.size

    @property
    def wrapped(self) -> BlobReader:
        """The reader counted (`blobio.self_verifying` looks through to it)."""
        return self._inner

    def pread(self, offset: int, size: int) -> bytes:
        data = self._inner.pread(offset, size)
        end = offset + len(data)
        if end > self._progress.done:
            self._progress.done = end
        return data

    def close(self) -> None:
        self._inner.close()


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
