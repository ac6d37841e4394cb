"""Which blobs of a layout are reachable, and through which ref.

The root set is every descriptor in index.json, tagged or not. From a root the
walk follows what the blob's bytes say it references, as `umoci gc` does:
an index -> its `manifests`; a manifest -> its `config`, `layers` and (old
artifact manifests) `blobs`. A manifest's `subject` is *not* followed: a
referrer (signature, SBOM) does not keep its subject alive. The reverse holds:
a manifest or index that is not reachable itself but whose `subject` is
reachable is a referrer kept with its subject, with everything it references
(repeated until nothing changes, so referrers of referrers stay too).

A document on the path that is missing, unreadable or not what its
descriptor says makes the walk fail (`Unreachable`): what it references
cannot be known, so nothing may be deleted on the strength of this walk.
Blocking: worker threads or the CLI only.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ocifs.errors import InvalidInput, OcifsError, Unsupported
from ocifs.importer.commit import blob_path
from ocifs.importer.indexjson import entry_name, load_index
from ocifs.model import digest as digest_mod
from ocifs.model import documents
from ocifs.model.digest import HEX_LENGTHS, Digest

#: Referrer candidates larger than this are not read (manifests are small).
MAX_REFERRER_BYTES = 4 * 1024 * 1024
_CHILD_FIELDS = ("config", "layers", "blobs", "manifests")


class Unreachable(OcifsError):
    """The reachable set cannot be computed (a document on the path is unusable)."""


@dataclass
class Blob:
    digest: Digest
    size: int
    mtime: float


@dataclass
class Reach:
    #: reachable digest -> the ref (or "untagged <digest>") whose closure first reached it
    via: dict[Digest, str] = field(default_factory=dict)

    def __contains__(self, digest: object) -> bool:
        return digest in self.via


def list_blobs(layout: str) -> Iterator[Blob]:
    """Regular files under blobs/<alg>/ whose names are valid digests."""
    for alg in sorted(HEX_LENGTHS):
        directory = os.path.join(layout, "blobs", alg)
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            try:
                digest = digest_mod.from_parts(alg, entry.name)
                st = entry.stat(follow_symlinks=False)
            except (InvalidInput, Unsupported, OSError):
                continue
            if stat.S_ISREG(st.st_mode):
                yield Blob(digest, st.st_size, st.st_mtime)


def _read(layout: str, digest: Digest, limit: int) -> bytes | None:
    try:
        fd = os.open(blob_path(layout, digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.pread(fd, limit + 1, 0)
    finally:
        os.close(fd)


def _children(doc: dict[str, Any]) -> Iterator[tuple[str, Digest]]:
    """(media type, digest) of every descriptor a manifest or index references."""
    for key in _CHILD_FIELDS:
        value = doc.get(key)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, dict):
                continue
            try:
                digest = digest_mod.parse(item.get("digest"))
            except (InvalidInput, Unsupported):
                continue  # cannot name a blob file: nothing to keep
            media_type = item.get("mediaType")
            yield (media_type if isinstance(media_type, str) else ""), digest
    # Docker schema 1 names its layers `fsLayers[].blobSum` (shown raw, but kept by gc)
    layers = doc.get("fsLayers")
    for item in layers if isinstance(layers, list) else []:
        try:
            digest = digest_mod.parse(item.get("blobSum") if isinstance(item, dict) else None)
        except (InvalidInput, Unsupported):
            continue
        yield "", digest


def _is_document(media_type: str) -> bool:
    return documents.kind_of(media_type) != "other"


def _load_doc(layout: str, digest: Digest, where: str) -> dict[str, Any]:
    data = _read(layout, digest, documents.MAX_DOCUMENT_BYTES)
    if data is None:
        raise Unreachable(f"{where} references {digest}, which is missing or not a regular file")
    if len(data) > documents.MAX_DOCUMENT_BYTES or not digest.matches(data):
        raise Unreachable(f"{where} references {digest}, whose content does not match its digest")
    try:
        obj = json.loads(data)
    except ValueError:
        raise Unreachable(f"{where} references {digest} as a manifest or index, "
                          "but it is not JSON") from None
    if not isinstance(obj, dict):
        raise Unreachable(f"{where} references {digest} as a manifest or index, "
                          "but it is not a JSON object")
    return obj


def _walk(
    layout: str, roots: Iterable[tuple[str, Digest, str]], reach: Reach, *, strict: bool = True
) -> None:
    """Add the closures of `roots` ((media type, digest, label)) to `reach`.

    `strict`: an unusable document fails the walk (index.json's closure must be
    known); otherwise it is kept as a leaf (a recent blob or a referrer whose
    children may still be arriving).
    """
    stack = [(mt, d, label, label) for mt, d, label in roots]
    while stack:
        media_type, digest, label, where = stack.pop()
        if digest in reach.via:
            continue
        reach.via[digest] = label
        if not _is_document(media_type):
            continue
        try:
            doc = _load_doc(layout, digest, where)
        except Unreachable:
            if strict:
                raise
            continue
        stack.extend((m, d, label, f"{where} -> {digest}") for m, d in _children(doc))


def _label(entry: dict[str, Any], digest: Digest) -> str:
    name = entry_name(entry)
    return f"ref {name!r}" if name else f"untagged entry {digest}"


def compute(layout: str, extra_roots: Iterable[Blob] = ()) -> Reach:
    """Everything reachable from index.json, `extra_roots` and referrers. See module doc."""
    index = load_index(os.path.join(layout, "index.json"))
    reach = Reach()
    roots: list[tuple[str, Digest, str]] = []
    for i, entry in enumerate(index.get("manifests") or []):
        if not isinstance(entry, dict):
            continue
        try:
            digest = digest_mod.parse(entry.get("digest"))
        except (InvalidInput, Unsupported) as exc:
            raise Unreachable(f"index.json: manifests[{i}]: {exc}") from None
        media_type = entry.get("mediaType")
        roots.append((media_type if isinstance(media_type, str) else "", digest,
                      _label(entry, digest)))
    _walk(layout, roots, reach)
    for blob in extra_roots:
        if blob.digest not in reach.via:
            sniffed = _sniff(layout, blob)
            _walk(layout, [(sniffed[0] if sniffed else "", blob.digest, "a recent blob")], reach,
                  strict=False)
    _keep_referrers(layout, reach)
    return reach


def _sniff(layout: str, blob: Blob) -> tuple[str, dict[str, Any]] | None:
    """(media type, document) if a blob is a manifest or index by its own content."""
    if blob.size > MAX_REFERRER_BYTES:
        return None
    data = _read(layout, blob.digest, MAX_REFERRER_BYTES)
    if not data or data[:1] != b"{" or not blob.digest.matches(data):
        return None
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("schemaVersion") != 2:
        return None
    media_type = obj.get("mediaType")
    if not isinstance(media_type, str) or not _is_document(media_type):
        media_type = ("application/vnd.oci.image.index.v1+json" if "manifests" in obj
                      else "application/vnd.oci.image.manifest.v1+json")
    return media_type, obj


def _keep_referrers(layout: str, reach: Reach) -> None:
    """Referrers of reachable manifests stay with them (fixpoint)."""
    candidates: dict[Digest, tuple[str, Digest]] = {}
    for blob in list_blobs(layout):
        if blob.digest in reach.via:
            continue
        sniffed = _sniff(layout, blob)
        if sniffed is None:
            continue
        media_type, doc = sniffed
        subject = doc.get("subject")
        try:
            target = digest_mod.parse(subject.get("digest")) if isinstance(subject, dict) else None
        except (InvalidInput, Unsupported):
            target = None
        if target is not None:
            candidates[blob.digest] = (media_type, target)
    changed = True
    while changed:
        changed = False
        for digest, (media_type, target) in list(candidates.items()):
            if digest in reach.via:
                del candidates[digest]
            elif target in reach.via:
                del candidates[digest]
                _walk(layout, [(media_type, digest, f"referrer of {target} "
                               f"({reach.via[target]})")], reach, strict=False)
                changed = True
