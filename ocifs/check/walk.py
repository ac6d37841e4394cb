"""The document half of a check: index.json and everything reachable from it.

Reads every index, manifest and config through the Source (so a layout
directory, an OCI archive and a docker-save tar are checked alike), verifies
each one's size and digest against the descriptor that named it, parses it
with `ocifs.model.documents`, and records which blobs are layers (with the
diff_id their config expects) for the layer half (`check.run`). Documents are
small and few: this runs on one thread.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ocifs.catalog import MAX_INDEX_DEPTH, MAX_REACHABLE, ref_name_of
from ocifs.check.findings import PROBLEM, WARNING, Report
from ocifs.errors import OcifsError
from ocifs.model import descriptor as descriptor_mod
from ocifs.model import documents
from ocifs.model import mediatypes as mt
from ocifs.model.descriptor import Descriptor
from ocifs.model.digest import Digest
from ocifs.sources.base import Source


@dataclass(frozen=True, slots=True)
class LayerUse:
    """One place a layer is used: its descriptor and the diff_id its config expects."""

    desc: Descriptor
    diff_id: str | None
    #: which diff_ids entry (for messages)
    position: int
    via: str


@dataclass
class Walk:
    """What the walk learnt, for the layer half and the unreferenced-blob report."""

    #: every digest a descriptor reachable from index.json names
    reached: set[Digest] = field(default_factory=set)
    #: documents read and verified here (their blobs need no second hash)
    verified: set[Digest] = field(default_factory=set)
    #: layer digest -> where it is used (present, with the size its descriptors say)
    layers: dict[Digest, list[LayerUse]] = field(default_factory=dict)


def _message(exc: BaseException, where: str) -> str:
    """An error's text without the `where: ` prefix the model puts in front."""
    text = str(exc)
    return text[len(where) + 2 :] if text.startswith(f"{where}: ") else text


class Walker:
    """See the module docstring. `run()` once."""

    def __init__(self, source: Source, report: Report) -> None:
        self.source = source
        self.report = report
        self.walk = Walk()
        self._seen_docs: set[Digest] = set()
        self._configs: dict[Digest, list[str] | None] = {}

    def problem(self, subject: str, message: str) -> None:
        self.report.add(PROBLEM, subject, message)

    def run(self, index_bytes: bytes) -> Walk:
        self._index(index_bytes, "index.json", None, 0)
        return self.walk

    # -- documents ------------------------------------------------------------------

    def _index(self, data: bytes, where: str, via: str | None, depth: int) -> None:
        try:
            obj = documents.load_json(data, where)
        except OcifsError as exc:
            self.problem(where, _message(exc, where))
            return
        entries = obj.get("manifests") if isinstance(obj, dict) else None
        for i, item in enumerate(entries if isinstance(entries, list) else []):
            try:
                descriptor_mod.parse(item, f"{where}: manifests[{i}]")
            except OcifsError as exc:
                self.problem(where, f"{_message(exc, where)} (entry not checked)")
        try:
            index = documents.parse_index(data, where, lenient=True)
        except OcifsError as exc:
            self.problem(where, _message(exc, where))
            return
        names = Counter(ref_name_of(d) for d in index.manifests) if via is None else Counter()
        for dup, count in sorted((n, c) for n, c in names.items() if n is not None and c > 1):
            self.report.add(WARNING, f"ref {dup!r}", f"named by {count} index.json entries: "
                            "a mount shows the last one (the others under by-digest/)")
        for desc in index.manifests:
            label = via
            if label is None:
                name = ref_name_of(desc)
                label = f"ref {name!r}" if name else f"untagged entry {desc.digest}"
            self._descriptor(desc, label, depth)

    def _descriptor(self, desc: Descriptor, via: str, depth: int) -> None:
        kind = documents.kind_of(desc.media_type)
        role = {"index": "index", "manifest": "manifest", "schema1": "manifest"}.get(kind, "blob")
        subject = f"{role} {desc.digest} ({via})"
        data = self._read(desc, subject, document=kind in ("index", "manifest"))
        if data is None or desc.digest in self._seen_docs:
            return
        self._seen_docs.add(desc.digest)
        if len(self.walk.reached) > MAX_REACHABLE:
            self.problem(subject, f"more than {MAX_REACHABLE} reachable blobs; not followed")
        elif kind == "index":
            if depth >= MAX_INDEX_DEPTH:
                self.problem(subject, f"indexes nested deeper than {MAX_INDEX_DEPTH}; not followed")
                return
            self._index(data, f"index {desc.digest}", f"{via} > index {desc.digest}", depth + 1)
        elif kind == "manifest":
            self._manifest(data, desc, subject, f"{via} > manifest {desc.digest}")
        elif kind == "schema1":
            self.report.add(WARNING, subject, "a Docker schema 1 manifest: checked as a blob only")

    def _read(self, desc: Descriptor, subject: str, *, document: bool) -> bytes | None:
        """Check presence and size; return the verified bytes of a document, else None."""
        self.walk.reached.add(desc.digest)
        if desc.data is not None:  # embedded: the bytes travel in the descriptor
            if len(desc.data) != desc.size or not desc.digest.matches(desc.data):
                self.problem(subject, "its embedded `data` does not match the size and digest")
                return None
            return desc.data if document else None
        size = self.source.blob_size(desc.digest)
        if size is None:
            self.problem(subject, "missing (not in the source)")
            return None
        if size != desc.size:
            self.problem(subject, f"is {size} bytes; its descriptor says {desc.size}")
            return None
        if not document:
            return None
        if desc.digest in self._seen_docs:
            return b""
        if size > documents.MAX_DOCUMENT_BYTES:
            self.problem(subject, f"{size} bytes exceeds the {documents.MAX_DOCUMENT_BYTES} "
                         "byte document limit")
            return None
        try:
            reader = self.source.open_blob(desc.digest)
            try:
                data = reader.pread(0, size + 1)
            finally:
                reader.close()
        except (OcifsError, OSError) as exc:
            self.problem(subject, f"cannot read: {exc}")
            return None
        self.report.hashed(len(data))
        self.report.documents += 1
        if len(data) != size or not desc.digest.matches(data):
            self.problem(subject, "content does not match its digest")
            return None
        self.walk.verified.add(desc.digest)
        return data

    def _manifest(self, data: bytes, desc: Descriptor, subject: str, via: str) -> None:
        where = f"manifest {desc.digest}"
        try:
            manifest = documents.parse_manifest(data, where)
        except OcifsError as exc:
            self.problem(subject, _message(exc, where))
            return
        if manifest.is_image:
            diff_ids = self._diff_ids(manifest, via)
        else:  # an artifact (`{}` configs are common): its config is checked as a blob
            self._read(manifest.config, f"config {manifest.config.digest} ({via})",
                       document=False)
            diff_ids = None
        if diff_ids is not None and manifest.is_image and len(diff_ids) != len(manifest.layers):
            self.problem(subject, f"has {len(manifest.layers)} layer(s) but its config lists "
                         f"{len(diff_ids)} rootfs.diff_ids")
        for i, layer in enumerate(manifest.layers):
            layer_subject = f"layer {layer.digest} ({via} layers[{i}])"
            self._read(layer, layer_subject, document=False)
            if layer.data is None and mt.is_layer_type(layer.media_type) and (
                self.source.blob_size(layer.digest) == layer.size
            ):
                expected = diff_ids[i] if diff_ids is not None and i < len(diff_ids) else None
                use = LayerUse(layer, expected, i, f"{via} layers[{i}]")
                self.walk.layers.setdefault(layer.digest, []).append(use)

    def _diff_ids(self, manifest: documents.Manifest, via: str) -> list[str] | None:
        """The config's rootfs.diff_ids (None if the config is not an image config or bad)."""
        config = manifest.config
        if config.digest not in self._configs:
            self._configs[config.digest] = self._read_diff_ids(config, via)
        return self._configs[config.digest]

    def _read_diff_ids(self, config: Descriptor, via: str) -> list[str] | None:
        subject = f"config {config.digest} ({via})"
        is_image_config = config.media_type in mt.IMAGE_CONFIG_TYPES
        data = self._read(config, subject, document=is_image_config)
        if not data:
            return None
        where = f"config {config.digest}"
        try:
            obj: Any = documents.load_json(data, where)
            if not isinstance(obj, dict):
                self.problem(subject, "not a JSON object")
                return None
            return documents.parse_diff_ids(data, where)
        except OcifsError as exc:
            self.problem(subject, _message(exc, where))
            return None
