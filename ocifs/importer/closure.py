"""Which blobs an index entry needs, and which of them are still missing.

An entry may be merged into index.json only when its whole closure is present:
manifest -> config + layers; index -> children, recursively. Blobs are looked
up first among the caller's verified-but-uncommitted staging files (an archive
being imported), then in the layout. Manifests and indexes are read, checked
against their descriptor's size and digest, and parsed; leaves are only
checked for presence and size (they were verified when they were committed).
Blocking: run from a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping

from ocifs.errors import DigestMismatch, LimitExceeded, SizeMismatch
from ocifs.importer.commit import blob_path, blob_size, read_range
from ocifs.importer.staging import StagedFile
from ocifs.model import documents
from ocifs.model.descriptor import Descriptor
from ocifs.model.digest import Digest

MAX_CLOSURE = 100_000


class BlobView:
    """Blobs visible to a closure check: staged ones first, then the layout's."""

    def __init__(self, layout: str, staged: Mapping[Digest, StagedFile] | None = None) -> None:
        self.layout = layout
        self.staged = staged or {}

    def size(self, digest: Digest) -> int | None:
        staged = self.staged.get(digest)
        if staged is not None:
            return staged.size
        return blob_size(self.layout, digest)

    def read(self, desc: Descriptor) -> bytes:
        """A small document's bytes, verified against its descriptor."""
        if desc.size > documents.MAX_DOCUMENT_BYTES:
            raise LimitExceeded(f"{desc.digest}: {desc.size} bytes exceeds the document limit")
        staged = self.staged.get(desc.digest)
        if staged is not None:
            data = staged.read_all(desc.size)
        else:
            data = read_range(blob_path(self.layout, desc.digest), 0, desc.size + 1)
        if not desc.digest.matches(data):
            raise DigestMismatch(f"blob {desc.digest}: content does not match its digest")
        return data


def missing(view: BlobView, desc: Descriptor) -> set[Digest]:
    """Digests in `desc`'s closure that are not present yet (empty: complete)."""
    return walk(view, desc)[1]


def walk(view: BlobView, desc: Descriptor) -> tuple[set[Digest], set[Digest]]:
    """(every digest in `desc`'s closure, those not present yet).

    Raises `SizeMismatch` when a present blob contradicts a descriptor's size
    and `InvalidInput` for an unparseable manifest or index: such an entry can
    never complete, so the caller fails instead of waiting.
    """
    absent: set[Digest] = set()
    seen: set[Digest] = set()
    stack = [desc]
    while stack:
        d = stack.pop()
        if d.digest in seen:
            continue
        seen.add(d.digest)
        if len(seen) > MAX_CLOSURE:
            raise LimitExceeded(f"{desc.digest}: closure has over {MAX_CLOSURE} blobs")
        if d.data is not None and documents.kind_of(d.media_type) not in ("index", "manifest"):
            continue
        size = view.size(d.digest)
        if size is None:
            absent.add(d.digest)
            continue
        if size != d.size:
            raise SizeMismatch(f"blob {d.digest}: size is {size}, descriptor says {d.size}")
        kind = documents.kind_of(d.media_type)
        if kind == "manifest":
            manifest = documents.parse_manifest(view.read(d), f"manifest {d.digest}")
            stack.append(manifest.config)
            stack.extend(manifest.layers)
        elif kind == "index":
            index = documents.parse_index(view.read(d), f"index {d.digest}")
            stack.extend(index.manifests)
    return seen, absent
