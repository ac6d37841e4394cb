"""What `image.tar` holds: one image or index and everything it references, as a tar plan.

FUSE-free. `plan()` walks the closure of a descriptor (an index's children,
recursively; a manifest's config and layers), reading only the small JSON
documents (verified against their digests), and lays out the archive that
containerd's exporter and Docker 25+ `docker save` write:

    blobs/  blobs/<alg>/  blobs/<alg>/<hex>...  index.json  manifest.json  oci-layout

in that (name-sorted) order, with the fixed headers of `ocifs.model.tarlayout`.
`index.json` has one entry, the exported descriptor, carrying
`org.opencontainers.image.ref.name` and `io.containerd.image.name` when the
export has a name; `manifest.json` is Docker's list (`Config`, `RepoTags`,
`Layers`) of the image manifests whose config and layers are all present.
Blobs the source does not have (a layout holding only some platforms of an
index) are left out, as `docker save` leaves out platforms it lacks; a blob
that is present but wrong fails the read that reaches it (EIO), never the plan.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ocifs import catalog
from ocifs.errors import LimitExceeded
from ocifs.model import documents
from ocifs.model import mediatypes as mt
from ocifs.model.descriptor import CONTAINERD_NAME, REF_NAME, Descriptor
from ocifs.model.digest import Digest
from ocifs.model.reference import familiar_tag, oci_ref_name
from ocifs.model.tarlayout import Member, TarLayout
from ocifs.sources.base import Source

log = logging.getLogger(__name__)

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
#: most blobs one export may hold (a runaway nested index is refused, not walked forever)
MAX_BLOBS = 100_000


@dataclass(frozen=True, slots=True)
class BlobBody:
    """A member body: `size` bytes of blob `digest`, read (and verified) when served."""

    digest: Digest
    size: int


ExportLayout = TarLayout[BlobBody]


def names_of(annotations: dict[str, str]) -> dict[str, str]:
    """The name annotations an export of a ref carries, from the ref's own annotations.

    Both are set, the missing one derived as containerd does: the full name
    goes to io.containerd.image.name, its tag to org.opencontainers.image.ref.name.
    """
    full = annotations.get(CONTAINERD_NAME)
    short = annotations.get(REF_NAME)
    if full is None and short is None:
        return {}
    if full is None:
        assert short is not None
        full = short
    if short is None:
        short = oci_ref_name(full)
    return {REF_NAME: short, CONTAINERD_NAME: full}


def _entry(desc: Descriptor, names: dict[str, str]) -> dict[str, Any]:
    """index.json's entry: the descriptor as the source wrote it, with the export's names."""
    raw: dict[str, Any] = (
        dict(desc.raw)
        if desc.raw
        else {"mediaType": desc.media_type, "digest": str(desc.digest), "size": desc.size}
    )
    annotations = {
        k: v for k, v in (desc.annotations or {}).items() if k not in (REF_NAME, CONTAINERD_NAME)
    }
    annotations.update(names)
    if annotations:
        raw["annotations"] = annotations
    else:
        raw.pop("annotations", None)
    return raw


def _blob_path(digest: Digest) -> str:
    return f"blobs/{digest.path_fragment}"


def plan(
    source: Source,
    desc: Descriptor,
    names: dict[str, str],
    read: Callable[[Source, Descriptor], bytes] = catalog.read_document,
) -> ExportLayout:
    """The archive of `desc` and its closure. Blocking (reads documents): run in a thread.

    `read` returns a document's verified bytes (the tree passes its
    `DocumentMemo.read`: the directory build has just read the same ones).
    Raises the typed error of a document that cannot be read or parsed.
    """
    blobs: dict[Digest, int] = {}
    docker: list[dict[str, Any]] = []

    def present(d: Descriptor) -> bool:
        return d.digest in blobs or source.blob_size(d.digest) is not None

    def add(d: Descriptor) -> None:
        if d.digest not in blobs:
            if len(blobs) >= MAX_BLOBS:
                raise LimitExceeded(f"export of {desc.digest}: more than {MAX_BLOBS} blobs")
            blobs[d.digest] = d.size

    stack: list[tuple[Descriptor, int]] = [(desc, 0)]
    walked: set[Digest] = set()
    while stack:
        d, depth = stack.pop()
        if d.digest in walked or not present(d):
            continue
        walked.add(d.digest)
        add(d)
        kind = documents.kind_of(d.media_type)
        if kind == "index" and depth < catalog.MAX_INDEX_DEPTH:
            index = documents.parse_index(
                read(source, d), f"index {d.digest}", lenient=True
            )
            stack.extend((child, depth + 1) for child in reversed(index.manifests))
        elif kind == "manifest":
            manifest = documents.parse_manifest(
                read(source, d), f"manifest {d.digest}"
            )
            parts = [manifest.config, *manifest.layers]
            for part in parts:
                if present(part):
                    add(part)
            if manifest.is_image and all(present(p) for p in parts):
                docker.append(
                    {
                        "Config": _blob_path(manifest.config.digest),
                        "RepoTags": None,
                        "Layers": [_blob_path(layer.digest) for layer in manifest.layers],
                    }
                )
    if docker and names:
        # A docker-archive reader loads one image per tag: the first image gets it.
        tag = familiar_tag(names[CONTAINERD_NAME])
        if tag is not None:
            docker[0]["RepoTags"] = [tag]

    top_index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [_entry(desc, names)],
    }
    members: list[Member[BlobBody]] = [Member("blobs/", directory=True)]
    members += [
        Member(f"blobs/{alg}/", directory=True) for alg in sorted({d.algorithm for d in blobs})
    ]
    members += [
        Member(_blob_path(d), size=size, body=BlobBody(d, size)) for d, size in blobs.items()
    ]
    members += [
        Member("index.json", data=_json(top_index)),
        Member("manifest.json", data=_json(docker)),
        Member("oci-layout", data=OCI_LAYOUT),
    ]
    members.sort(key=lambda m: m.name)
    return TarLayout.build(members)


def _json(obj: object) -> bytes:
    """Compact JSON, keys in the order built (deterministic for the same source).

    Strings holding lone surrogates (a ref name written as JSON "\\udcff") cannot
    be UTF-8: such a document is written with \\u escapes instead, as it came.
    """
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode()
