"""`docker save` archives: RepoTags names and the documents ocifs synthesizes for them.

Legacy docker-save tars carry no manifest. Both the archive source (mounting)
and the importer (`.import/`) synthesize one, and they must produce the same
bytes so that mounting and importing the same archive give the same digests:
this module is the one serialization of those documents.

The synthesized manifest is an OCI image manifest, as `skopeo copy
docker-archive:... oci:...` writes one (an OCI layout should hold OCI images:
umoci refuses Docker media types), with the config and layer blobs unchanged:
the config keeps its bytes under `application/vnd.oci.image.config.v1+json`,
an uncompressed layer is `application/vnd.oci.image.layer.v1.tar` (`+gzip`,
`+zstd` for compressed members). The JSON is Go's encoding of the image-spec
structs, as skopeo writes it: compact, keys schemaVersion, mediaType, config,
layers, descriptors as mediaType, digest, size.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ocifs.errors import InvalidInput
from ocifs.model import mediatypes as mt
from ocifs.model import reference
from ocifs.model.descriptor import CONTAINERD_NAME, REF_NAME
from ocifs.model.digest import of_bytes as digest_of

log = logging.getLogger(__name__)

#: OCI layer media type of a docker-save layer member, by its compression.
LAYER_TYPES = {
    mt.Compression.NONE: "application/vnd.oci.image.layer.v1.tar",
    mt.Compression.GZIP: "application/vnd.oci.image.layer.v1.tar+gzip",
    mt.Compression.ZSTD: "application/vnd.oci.image.layer.v1.tar+zstd",
}


def dumps(obj: object) -> bytes:
    """Compact JSON, keys in insertion order: stable across mounts and imports."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def normalize_name(tag: str) -> str:
    """`busybox:1` -> `docker.io/library/busybox:1`, as containerd and docker do.

    The one reference grammar (`model/reference.py`), so a name that a mount
    shows is exactly a name an import accepts; InvalidInput otherwise.
    """
    try:
        return reference.parse_docker_ref(tag)
    except InvalidInput as exc:
        raise InvalidInput(f"RepoTags: {exc}") from None


def check_item(item: object, where: str) -> dict[str, Any]:
    """One manifest.json entry: it must name a Config and a list of Layers."""
    if not isinstance(item, dict) or not isinstance(item.get("Config"), str):
        raise InvalidInput(f"{where}: missing 'Config'")
    layers = item.get("Layers")
    if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
        raise InvalidInput(f"{where}: 'Layers' must be an array of paths")
    return item


def descriptor(media_type: str, digest: str, size: int) -> dict[str, Any]:
    """A descriptor, keys in image-spec (Go struct) order."""
    return {"mediaType": media_type, "digest": digest, "size": size}


def config_descriptor(digest: str, size: int) -> dict[str, Any]:
    return descriptor(mt.OCI_CONFIG, digest, size)


def layer_descriptor(compression: mt.Compression, digest: str, size: int) -> dict[str, Any]:
    return descriptor(LAYER_TYPES[compression], digest, size)


def manifest_document(config: dict[str, Any], layers: list[dict[str, Any]]) -> bytes:
    """The OCI image manifest synthesized for a legacy docker-save image."""
    return dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config, "layers": layers}
    )


def manifest_entry(manifest: bytes) -> dict[str, Any]:
    """The index.json descriptor of a synthesized manifest (before its name annotations)."""
    return descriptor(mt.OCI_MANIFEST, str(digest_of(manifest)), len(manifest))


def index_document(entries: list[dict[str, Any]]) -> bytes:
    return dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries})


def tag_entries(base: dict[str, Any], item: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Index entries for an image: one per usable RepoTag, or one unnamed entry.

    The full normalised name goes in both annotations: skopeo and umoci look refs
    up by `ref.name`, and a bare tag would be ambiguous between images.
    """
    tags = item.get("RepoTags") or []
    if not isinstance(tags, list):
        log.warning("%s: 'RepoTags' is not an array; the image is shown untagged", where)
        tags = []
    entries = []
    for tag in tags:
        if not isinstance(tag, str):
            log.warning("%s: RepoTags entry %r is not a string; skipped", where, tag)
            continue
        try:
            full = normalize_name(tag)
        except InvalidInput as exc:
            log.warning("%s: %s; skipped", where, exc)
            continue
        annotations = {**(base.get("annotations") or {}), CONTAINERD_NAME: full, REF_NAME: full}
        entries.append({**base, "annotations": annotations})
    return entries or [dict(base)]
