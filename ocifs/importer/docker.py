"""`docker save` archives: names from RepoTags and synthesized manifests.

A legacy docker-save tar has no manifests, only `manifest.json` listing each
image's config file, layer files and RepoTags. Like `skopeo copy
docker-archive:... oci:...`, ocifs synthesizes an OCI image manifest per image
(`ocifs.model.dockersave`: deterministic JSON, so importing the same archive
twice, or mounting it, yields the same digest), with each layer's digest being
the sha256 of the layer file as stored — for the usual uncompressed layers that
is the config's diff_id, which is checked.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from isal import isal_zlib

from ocifs.errors import DigestMismatch, InvalidInput
from ocifs.model import documents, reference
from ocifs.model import mediatypes as mt
from ocifs.model.digest import Digest
from ocifs.model.dockersave import (
    check_item,
    config_descriptor,
    layer_descriptor,
    manifest_document,
    manifest_entry,
    tag_entries,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BlobRef:
    """A blob inside the archive: its digest, size and a way to read it."""

    digest: Digest
    size: int
    open_reader: Callable[[], Callable[[int, int], bytes]]  # returns pread(offset, size)


def _read_all(ref: BlobRef, limit: int) -> bytes:
    pread = ref.open_reader()
    return pread(0, min(ref.size, limit + 1))


def _gunzip_digest(ref: BlobRef) -> str:
    """sha256 of a gzip'd layer's uncompressed content (its diff_id)."""
    pread = ref.open_reader()
    z = isal_zlib.decompressobj(31)
    h = hashlib.sha256()
    offset = 0
    while offset < ref.size:
        chunk = pread(offset, min(1 << 20, ref.size - offset))
        if not chunk:
            break
        offset += len(chunk)
        data = chunk
        while data:
            h.update(z.decompress(data, 1 << 20))
            data = z.unconsumed_tail
    return "sha256:" + h.hexdigest()


def synthesize(
    items: Any, resolve: Callable[[str], BlobRef], where: str
) -> list[tuple[bytes, list[dict[str, Any]]]]:
    """For each manifest.json item: (manifest bytes, index entries for its tags)."""
    if not isinstance(items, list):
        raise InvalidInput(f"{where}: manifest.json is not a JSON array")
    out: list[tuple[bytes, list[dict[str, Any]]]] = []
    for n, item in enumerate(items):
        at = f"{where}: manifest.json[{n}]"
        check_item(item, at)
        layers = item["Layers"]
        tags = item.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InvalidInput(f"{at}: 'RepoTags' must be an array of strings")
        for tag in tags:  # as `ctr images import`: one bad tag refuses the archive
            try:
                reference.parse_docker_ref(tag)
            except InvalidInput as exc:
                raise InvalidInput(f"{at}: refused, RepoTags {exc}") from None
        config = resolve(item["Config"])
        raw = _read_all(config, documents.MAX_DOCUMENT_BYTES)
        cfg = documents.load_json(raw, f"{at}: config")
        rootfs = cfg.get("rootfs") if isinstance(cfg, dict) else None
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
            raise InvalidInput(f"{at}: config rootfs.diff_ids does not match 'Layers'")
        layer_descs = []
        for path, diff_id in zip(layers, diff_ids, strict=True):
            ref = resolve(path)
            gz = ref.open_reader()(0, 2) == b"\x1f\x8b"
            actual = _gunzip_digest(ref) if gz else str(ref.digest)
            if actual != diff_id:
                raise DigestMismatch(
                    f"{at}: layer {path} has diff_id {actual}, config says {diff_id}"
                )
            compression = mt.Compression.GZIP if gz else mt.Compression.NONE
            layer_descs.append(layer_descriptor(compression, str(ref.digest), ref.size))
        data = manifest_document(config_descriptor(str(config.digest), config.size), layer_descs)
        entries = tag_entries(manifest_entry(data), item, at)
        out.append((data, entries))
    return out
