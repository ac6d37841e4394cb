"""What index.json says: refs by name, and every manifest and index reachable from it.

FUSE-free. Built from a Source each time index.json changes; the tree turns it
into `refs/` and `by-digest/`. Problems with single entries (a name that cannot
be a path, a duplicate name, an unreadable child index) are logged and skipped,
never fatal: the rest of the mount keeps working.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ocifs.errors import BlobUnavailable, LimitExceeded, OcifsError
from ocifs.log import once as log_once
from ocifs.model import documents
from ocifs.model.descriptor import CONTAINERD_NAME, REF_NAME, Descriptor
from ocifs.model.digest import Digest
from ocifs.model.naming import ref_path
from ocifs.sources.base import Source

log = logging.getLogger(__name__)

#: How deep nested indexes are followed, and how many documents at most.
MAX_INDEX_DEPTH = 16
MAX_REACHABLE = 200_000


@dataclass(slots=True)
class Catalog:
    index_bytes: bytes
    index: documents.Index
    #: ref directory path (components) -> descriptor; the last duplicate wins
    refs: dict[tuple[str, ...], Descriptor] = field(default_factory=dict)


def ref_name_of(desc: Descriptor) -> str | None:
    """The name a top-level descriptor is shown under.

    containerd exports carry both annotations and the containerd one holds the
    full image name (`docker.io/library/busybox:latest`), so it is preferred.
    """
    return desc.annotations.get(CONTAINERD_NAME) or desc.annotations.get(REF_NAME)


def build(source: Source) -> Catalog:
    where = f"{source.path}/index.json" if source.kind == "layout" else f"{source.path}: index.json"
    data = source.index_bytes()
    index = documents.parse_index(data, where, lenient=True)
    cat = Catalog(index_bytes=data, index=index)
    for desc in index.manifests:
        name = ref_name_of(desc)
        if name is None:
            continue
        path = ref_path(name)
        if path is None:
            log_once(
                log,
                logging.WARNING,
                f"{where}: ref name {name!r} cannot be shown as a path; it is only under "
                f"by-digest/{desc.digest}",
            )
            continue
        previous = cat.refs.get(path)
        if previous is not None:
            log_once(
                log,
                logging.WARNING,
                f"{where}: duplicate ref name {name!r}: {desc.digest} replaces "
                f"{previous.digest} (still under by-digest/)",
            )
        cat.refs[path] = desc
    return cat


def read_document(source: Source, desc: Descriptor) -> bytes:
    """Bytes of a small JSON blob (manifest, index, config), checked against desc."""
    if desc.data is not None:
        return desc.data
    if desc.size > documents.MAX_DOCUMENT_BYTES:
        raise LimitExceeded(
            f"blob {desc.digest}: {desc.size} bytes exceeds the document size limit"
        )
    reader = source.open_blob(desc.digest)
    try:
        data = reader.pread(0, desc.size + 1)
    finally:
        reader.close()
    if len(data) != desc.size:
        relation = "larger" if len(data) > desc.size else "smaller"
        raise BlobUnavailable(
            f"blob {desc.digest}: {relation} than the {desc.size} bytes its descriptor says"
        )
    if not desc.digest.matches(data):
        raise BlobUnavailable(f"blob {desc.digest}: content does not match its digest")
    return data


def reachable(source: Source, cat: Catalog) -> dict[Digest, Descriptor]:
    """Everything index.json points at, and the children of indexes, recursively."""
    found: dict[Digest, Descriptor] = {}
    stack: list[tuple[Descriptor, int]] = [(d, 0) for d in reversed(cat.index.manifests)]
    while stack and len(found) < MAX_REACHABLE:
        desc, depth = stack.pop()
        kind = documents.kind_of(desc.media_type)
        if desc.digest in found:
            continue
        found[desc.digest] = desc
        if kind != "index" or depth >= MAX_INDEX_DEPTH:
            continue
        try:
            child = documents.parse_index(
                read_document(source, desc), f"index {desc.digest}", lenient=True
            )
        except OcifsError as exc:
            log_once(log, logging.ERROR, str(exc), cause=str(exc))
            continue
        stack.extend((d, depth + 1) for d in reversed(child.manifests))
    return found
