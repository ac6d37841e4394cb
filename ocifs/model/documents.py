"""Parsing of OCI/Docker JSON documents: oci-layout, image index, image manifest.

Strict where ambiguity could mislead (a document must say what it is), lenient
where real tools differ (a missing `mediaType` in an index is allowed by the
spec). Every error is one line naming the document.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from ocifs.errors import InvalidInput, LimitExceeded, Unsupported
from ocifs.log import once as log_once
from ocifs.model import descriptor as descriptor_mod
from ocifs.model import mediatypes as mt
from ocifs.model.descriptor import Descriptor

log = logging.getLogger(__name__)

#: Largest JSON document (index, manifest) ocifs parses; larger ones are refused.
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024


def _reject_duplicates(where: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                message = f"{where}: duplicate JSON key {key!r} (the last one is used)"
                log_once(log, logging.WARNING, message)
            obj[key] = value
        return obj

    return hook


def load_json(data: bytes, where: str) -> Any:
    """Decode a JSON document, naming the file and position of any error."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise LimitExceeded(
            f"{where}: {len(data)} bytes exceeds the {MAX_DOCUMENT_BYTES} byte limit"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{where}: not UTF-8 text (byte {exc.start})") from exc
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates(where))
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except RecursionError as exc:
        raise InvalidInput(f"{where}: JSON nested too deeply") from exc


def parse_oci_layout(data: bytes, where: str) -> str:
    """Validate an `oci-layout` file; returns its imageLayoutVersion."""
    obj = load_json(data, where)
    if not isinstance(obj, dict):
        raise InvalidInput(f"{where}: not a JSON object")
    version = obj.get("imageLayoutVersion")
    if version is None:
        raise InvalidInput(f"{where}: missing field 'imageLayoutVersion'")
    if not isinstance(version, str):
        raise InvalidInput(f"{where}: 'imageLayoutVersion' must be a string")
    if version not in mt.OCI_LAYOUT_VERSIONS:
        supported = ", ".join(mt.OCI_LAYOUT_VERSIONS)
        raise Unsupported(
            f"{where}: imageLayoutVersion {version!r} is not supported (supported: {supported})"
        )
    return version


@dataclass(slots=True)
class Index:
    media_type: str
    manifests: list[Descriptor]
    annotations: dict[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    #: the document's own `mediaType` field as written (None if absent)
    own_media_type: str | None = None


@dataclass(slots=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    artifact_type: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    #: the document's own `mediaType` field as written (None if absent)
    own_media_type: str | None = None

    @property
    def is_image(self) -> bool:
        """An image (rootfs makes sense): image config type and tar layers only."""
        return self.config.media_type in mt.IMAGE_CONFIG_TYPES and all(
            mt.is_layer_type(layer.media_type) for layer in self.layers
        )


def _schema_version(obj: dict[str, Any], where: str) -> None:
    version = obj.get("schemaVersion")
    if version == 1:
        raise Unsupported(f"{where}: a Docker schema 1 manifest (unsupported schema 1)")
    if version != 2:
        raise InvalidInput(f"{where}: schemaVersion must be 2, not {version!r}")


def _descriptors(
    obj: dict[str, Any], key: str, where: str, lenient: bool = False
) -> list[Descriptor]:
    """Parse an array of descriptors; `lenient` skips (and logs) bad entries."""
    items = obj.get(key)
    if items is None and key in obj:
        items = []  # `umoci init` writes "manifests": null for an empty layout
    if not isinstance(items, list):
        raise InvalidInput(f"{where}: field {key!r} must be an array")
    result = []
    for i, item in enumerate(items):
        try:
            result.append(descriptor_mod.parse(item, f"{where}: {key}[{i}]"))
        except (InvalidInput, Unsupported) as exc:
            if not lenient:
                raise
            log_once(log, logging.WARNING, f"{exc} (entry skipped)")
    return result


def _subject(obj: dict[str, Any], where: str) -> Descriptor | None:
    if obj.get("subject") is None:
        return None
    return descriptor_mod.parse(obj["subject"], f"{where}: subject")


def _annotations(obj: dict[str, Any], where: str) -> dict[str, str]:
    ann = obj.get("annotations") or {}
    if not isinstance(ann, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in ann.items()
    ):
        raise InvalidInput(f"{where}: annotations must map strings to strings")
    return dict(ann)


def parse_index(data: bytes, where: str, *, lenient: bool = False) -> Index:
    """Parse an image index (or Docker manifest list).

    `lenient` (the read side) skips unusable entries with a warning so one bad
    descriptor does not hide the rest of a layout; writers parse strictly.
    """
    obj = load_json(data, where)
    if not isinstance(obj, dict):
        raise InvalidInput(f"{where}: not a JSON object")
    _schema_version(obj, where)
    media_type = obj.get("mediaType", mt.OCI_INDEX)
    if media_type not in mt.INDEX_TYPES:
        raise InvalidInput(f"{where}: mediaType {media_type!r} is not an image index")
    if "manifests" not in obj:
        raise InvalidInput(f"{where}: missing field 'manifests' (not an image index)")
    if "layers" in obj or "config" in obj:
        raise InvalidInput(f"{where}: has 'layers'/'config' (a manifest, not an index)")
    return Index(
        media_type=media_type,
        manifests=_descriptors(obj, "manifests", where, lenient),
        annotations=_annotations(obj, where),
        subject=_subject(obj, where),
        own_media_type=obj.get("mediaType"),
    )


def parse_manifest(data: bytes, where: str) -> Manifest:
    """Parse an image manifest (OCI or Docker schema 2), artifacts included."""
    obj = load_json(data, where)
    if not isinstance(obj, dict):
        raise InvalidInput(f"{where}: not a JSON object")
    _schema_version(obj, where)
    media_type = obj.get("mediaType", mt.OCI_MANIFEST)
    if media_type not in mt.MANIFEST_TYPES:
        raise InvalidInput(f"{where}: mediaType {media_type!r} is not an image manifest")
    if "manifests" in obj:
        raise InvalidInput(f"{where}: has 'manifests' (an index, not a manifest)")
    if "config" not in obj:
        raise InvalidInput(f"{where}: missing field 'config'")
    layers = _descriptors(obj, "layers", where) if obj.get("layers") is not None else []
    artifact_type = obj.get("artifactType", "")
    if not isinstance(artifact_type, str):
        raise InvalidInput(f"{where}: artifactType must be a string")
    return Manifest(
        media_type=media_type,
        config=descriptor_mod.parse(obj["config"], f"{where}: config"),
        layers=layers,
        artifact_type=artifact_type,
        annotations=_annotations(obj, where),
        subject=_subject(obj, where),
        own_media_type=obj.get("mediaType"),
    )


def kind_of(media_type: str) -> str:
    """'index', 'manifest', 'schema1' or 'other' for a descriptor's media type."""
    if media_type in mt.INDEX_TYPES:
        return "index"
    if media_type in mt.MANIFEST_TYPES:
        return "manifest"
    if media_type in mt.SCHEMA1_TYPES:
        return "schema1"
    return "other"


def parse_diff_ids(data: bytes, where: str) -> list[str]:
    """An image config's `rootfs.diff_ids`: one digest string per layer, in order."""
    obj = load_json(data, where)
    rootfs = obj.get("rootfs") if isinstance(obj, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise InvalidInput(f"{where}: rootfs.diff_ids must be an array of digests")
    return diff_ids
