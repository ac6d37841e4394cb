"""`docker save` / `podman save` tars as Sources: legacy and OCI-in-docker-save.

Legacy format (`manifest.json` = [{Config, RepoTags, Layers}], `<id>/layer.tar`):
there is no manifest blob, so one OCI image manifest per image is synthesized
(`ocifs.model.dockersave`), byte for byte as `ocifs.importer.docker` writes it
on import (same digest whether an archive is mounted or imported). The config
descriptor is the config member (digest = sha256 of its
bytes). A plain layer's digest is the config's `rootfs.diff_ids[i]` (an
uncompressed layer's diff_id is its digest; the tree verifies it as it reads); a
compressed layer member gets the sha256 of the member, computed once and cached.
The synthesized index.json has one entry per RepoTag, named by the normalized
tag (`busybox` -> `docker.io/library/busybox:latest`) in both
`org.opencontainers.image.ref.name` and `io.containerd.image.name`, as the
importer and `ctr images import` name them, and one unnamed entry for an image
without tags. An image whose config or layers are unusable is left out with an
error in the log; an archive with no usable image is refused.

New format (Docker 25+: an OCI layout plus `manifest.json`): served as the OCI
layout it is. If no index.json entry carries a name, index.json is synthesized
from manifest.json: each image's manifest blob is found by its config digest
(index.json entries first, then small blobs), or synthesized as above if absent.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ocifs.cache import DiskCache
from ocifs.codec.blobio import BlobReader, BytesReader
from ocifs.errors import BlobUnavailable, InvalidInput, NotAnImage, OcifsError
from ocifs.model import descriptor as descriptor_mod
from ocifs.model import digest as digest_mod
from ocifs.model import documents
from ocifs.model import mediatypes as mt
from ocifs.model.descriptor import CONTAINERD_NAME, REF_NAME
from ocifs.model.digest import Digest
from ocifs.model.dockersave import (
    check_item,
    config_descriptor,
    index_document,
    layer_descriptor,
    manifest_document,
    manifest_entry,
    tag_entries,
)
from ocifs.sources.base import Source
from ocifs.sources.oci_archive import OciArchive, read_document
from ocifs.sources.tarmembers import ArchiveFile, Member

log = logging.getLogger(__name__)

#: DiskCache kind of the sha256 of compressed layer members.
DIGEST_CACHE_KIND = "archive-member-digest"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
#: Blobs larger than this are not considered when looking for a manifest by config.
_MANIFEST_SCAN_LIMIT = 1 << 20
_CHUNK = 1 << 20


def load_items(data: bytes | None, archive: ArchiveFile) -> list[dict[str, Any]]:
    """manifest.json as a list of image objects; NotAnImage if there is no such list."""
    where = f"{archive.path}: manifest.json"
    if data is None:
        raise NotAnImage(archive.missing("manifest.json"))
    items = documents.load_json(data, where)
    if items is None:
        raise NotAnImage(f"{where}: is null, not a list of images (not an image archive)")
    if not isinstance(items, list):
        raise NotAnImage(f"{where}: not a JSON array of images (not an image archive)")
    for n, item in enumerate(items):
        check_item(item, f"{where}[{n}]")
    if not items:
        raise NotAnImage(f"{where}: lists no images")
    return items


def _member_sha256(archive: ArchiveFile, member: Member, cache: DiskCache) -> Digest:
    """sha256 of a member's bytes, computed once per archive identity and cached."""
    key = f"{archive.identity}\0{member.name}\0{member.offset}"
    cached = cache.get(DIGEST_CACHE_KIND, key)
    if cached is not None:
        try:
            return digest_mod.parse(cached.decode())
        except (OcifsError, UnicodeDecodeError):
            cache.discard(DIGEST_CACHE_KIND, key)
    reader = archive.member_reader(member)
    h = hashlib.sha256()
    for offset in range(0, member.size, _CHUNK):
        h.update(reader.pread(offset, _CHUNK))
    digest = Digest("sha256", h.hexdigest())
    cache.put(DIGEST_CACHE_KIND, key, str(digest).encode())
    return digest


@dataclass(slots=True)
class Synthesized:
    """One image of a docker-save: its manifest and the members its blobs are."""

    manifest: bytes
    blobs: dict[Digest, Member]


class Synthesizer:
    """Builds OCI image manifests for manifest.json items (see the module docstring)."""

    def __init__(self, archive: ArchiveFile, cache: DiskCache) -> None:
        self.archive = archive
        self.cache = cache

    def _member(self, path: str, what: str, where: str) -> Member:
        member = self.archive.table.resolve(path)
        if member is None:
            raise InvalidInput(f"{where}: {what} {path!r} is not in the archive")
        if not self.archive.table.complete(member):
            raise InvalidInput(f"{where}: {what} {path!r}: {self.archive.table.damage}")
        return member

    def image(self, item: dict[str, Any], where: str) -> Synthesized:
        config_member = self._member(item["Config"], "config", where)
        config_bytes = read_document(self.archive, config_member.name)
        assert config_bytes is not None
        config_digest = digest_mod.of_bytes(config_bytes)
        diff_ids = _diff_ids(config_bytes, f"{where}: config {item['Config']}")
        paths: list[str] = item["Layers"]
        if len(diff_ids) != len(paths):
            raise InvalidInput(
                f"{where}: config lists {len(diff_ids)} diff_ids for {len(paths)} layers"
            )
        blobs = {config_digest: config_member}
        layers = []
        for path, diff_id in zip(paths, diff_ids, strict=True):
            member = self._member(path, "layer", where)
            compression, digest = self._layer(member, diff_id, where)
            other = blobs.get(digest)
            if other is not None and other.size != member.size:
                raise InvalidInput(
                    f"{where}: layer {digest} is {member.size} bytes in {member.name} "
                    f"but {other.size} in {other.name}"
                )
            blobs[digest] = member
            layers.append(layer_descriptor(compression, str(digest), member.size))
        config = config_descriptor(str(config_digest), config_member.size)
        return Synthesized(manifest_document(config, layers), blobs)

    def _layer(
        self, member: Member, diff_id: str, where: str
    ) -> tuple[mt.Compression, Digest]:
        kind = mt.sniff_compression(member.magic)
        if kind in (mt.Compression.GZIP, mt.Compression.ZSTD):
            return kind, _member_sha256(self.archive, member, self.cache)
        try:
            return mt.Compression.NONE, digest_mod.parse(diff_id)
        except OcifsError as exc:
            raise InvalidInput(f"{where}: layer {member.name}: diff_id: {exc}") from None


def _diff_ids(data: bytes, where: str) -> list[str]:
    cfg = documents.load_json(data, where)
    rootfs = cfg.get("rootfs") if isinstance(cfg, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise InvalidInput(f"{where}: no rootfs.diff_ids list of strings")
    return diff_ids


class DockerArchive(Source):
    """A legacy docker-save tar; see the module docstring. Owns `archive`."""

    kind = "docker-archive"
    writable = False

    def __init__(self, archive: ArchiveFile, cache: DiskCache) -> None:
        super().__init__(archive.path)
        self._archive = archive
        items = load_items(read_document(archive, "manifest.json"), archive)
        synth = Synthesizer(archive, cache)
        self._members: dict[Digest, Member] = {}
        self._manifests: dict[Digest, bytes] = {}
        entries: list[dict[str, Any]] = []
        errors: list[str] = []
        for n, item in enumerate(items):
            where = f"{self.path}: manifest.json[{n}]"
            try:
                image = synth.image(item, where)
            except (OcifsError, OSError) as exc:
                log.error("%s (image left out)", exc)
                errors.append(str(exc))
                continue
            digest = digest_mod.of_bytes(image.manifest)
            self._manifests[digest] = image.manifest
            self._members.update(image.blobs)
            entries.extend(tag_entries(manifest_entry(image.manifest), item, where))
        if not entries:
            raise InvalidInput(errors[0])
        self._index = index_document(entries)

    def oci_layout_bytes(self) -> bytes:
        return OCI_LAYOUT

    def index_bytes(self) -> bytes:
        return self._index

    def blob_size(self, digest: Digest) -> int | None:
        manifest = self._manifests.get(digest)
        if manifest is not None:
            return len(manifest)
        member = self._members.get(digest)
        return None if member is None else member.size

    def open_blob(self, digest: Digest) -> BlobReader:
        manifest = self._manifests.get(digest)
        if manifest is not None:
            return BytesReader(manifest)
        member = self._members.get(digest)
        if member is None:
            raise BlobUnavailable(self._archive.missing(f"blob {digest}"))
        return self._archive.member_reader(member)

    def list_blobs(self) -> Iterator[Digest]:
        return iter(sorted({*self._manifests, *self._members}))

    def synthesized(self, digest: Digest) -> bool:
        return digest in self._manifests

    def identity(self) -> str:
        return self._archive.identity

    def close(self) -> None:
        self._archive.close()


class DockerOciArchive(OciArchive):
    """Docker 25+ `docker save`: an OCI layout plus manifest.json; see the module docstring."""

    kind = "docker-archive"

    def __init__(self, archive: ArchiveFile, cache: DiskCache) -> None:
        self._cache = cache
        self._synthesized: dict[Digest, bytes] = {}
        # Blobs of synthesized manifests that are not under blobs/ (odd writers).
        self._extra: dict[Digest, Member] = {}
        super().__init__(archive)

    def _load_index(self) -> bytes:
        data = read_document(self.archive, "index.json")
        where = f"{self.path}: index.json"
        entries: list[dict[str, Any]] = []
        if data is not None:
            obj = documents.load_json(data, where)
            if not isinstance(obj, dict):
                raise InvalidInput(f"{where}: not a JSON object")
            raw = obj.get("manifests") or []  # Docker writes "manifests": null
            if not isinstance(raw, list):
                raise InvalidInput(f"{where}: 'manifests' must be an array")
            entries = [e for i, e in enumerate(raw) if _valid_entry(e, f"{where}: manifests[{i}]")]
            named = any(
                REF_NAME in (e.get("annotations") or {})
                or CONTAINERD_NAME in (e.get("annotations") or {})
                for e in entries
            )
            if named:
                documents.parse_index(data, where, lenient=True)
                return data
        try:
            items = load_items(read_document(self.archive, "manifest.json"), self.archive)
        except InvalidInput as exc:
            if data is None or not entries:
                raise
            log.warning("%s; index.json is shown as it is", exc)
            documents.parse_index(data, where, lenient=True)
            return data
        return index_document(self._entries(items, entries))

    def _entries(
        self, items: list[dict[str, Any]], existing: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Named entries for manifest.json items; unmatched index.json entries kept as is."""
        candidates = self._candidates(items, existing)
        by_member = {m: d for d, m in self.blob_members.items()}
        used: set[str] = set()
        out: list[dict[str, Any]] = []
        synth = Synthesizer(self.archive, self._cache)
        for n, item in enumerate(items):
            where = f"{self.path}: manifest.json[{n}]"
            config_member = self.archive.table.resolve(item["Config"])
            config = by_member.get(config_member) if config_member is not None else None
            base = candidates.get(config) if config is not None else None
            if base is None:
                try:
                    image = synth.image(item, where)
                except (OcifsError, OSError) as exc:
                    log.error("%s (image left out)", exc)
                    continue
                digest = digest_mod.of_bytes(image.manifest)
                self._synthesized[digest] = image.manifest
                self._extra.update(
                    (d, m) for d, m in image.blobs.items() if d not in self.blob_members
                )
                base = manifest_entry(image.manifest)
            used.add(base["digest"])
            out.extend(tag_entries(base, item, where))
        out.extend(e for e in existing if e["digest"] not in used)
        if not out:
            raise InvalidInput(f"{self.path}: no usable image in index.json or manifest.json")
        return out

    def _candidates(
        self, items: list[dict[str, Any]], existing: list[dict[str, Any]]
    ) -> dict[Digest, dict[str, Any]]:
        """Manifest descriptors present in the archive, by the config digest they name."""
        layer_members = {self.archive.table.resolve(p) for it in items for p in it["Layers"]}
        found: dict[Digest, dict[str, Any]] = {}
        listed = [(digest_mod.parse(e["digest"]), e) for e in existing]
        listed_digests = {d for d, _ in listed}
        others = [
            (d, None)
            for d, m in self.blob_members.items()
            if d not in listed_digests and m not in layer_members and m.size <= _MANIFEST_SCAN_LIMIT
        ]
        for digest, entry in [*listed, *others]:
            manifest = self._try_manifest(digest)
            if manifest is None or manifest.config.digest in found:
                continue
            found[manifest.config.digest] = entry or {
                "mediaType": manifest.media_type,
                "digest": str(digest),
                "size": self.blob_members[digest].size,
            }
        return found

    def _try_manifest(self, digest: Digest) -> documents.Manifest | None:
        member = self.blob_members.get(digest)
        if member is None or member.size > _MANIFEST_SCAN_LIMIT:
            return None
        try:
            data = self.archive.member_reader(member).pread(0, member.size)
            if not digest.matches(data):
                return None
            return documents.parse_manifest(data, f"{self.path}: blob {digest}")
        except (OcifsError, OSError):
            return None

    def blob_size(self, digest: Digest) -> int | None:
        manifest = self._synthesized.get(digest)
        if manifest is not None:
            return len(manifest)
        extra = self._extra.get(digest)
        return extra.size if extra is not None else super().blob_size(digest)

    def open_blob(self, digest: Digest) -> BlobReader:
        manifest = self._synthesized.get(digest)
        if manifest is not None:
            return BytesReader(manifest)
        extra = self._extra.get(digest)
        if extra is not None:
            return self.archive.member_reader(extra)
        return super().open_blob(digest)

    def list_blobs(self) -> Iterator[Digest]:
        return iter(sorted({*self._synthesized, *self._extra, *self.blob_members}))

    def synthesized(self, digest: Digest) -> bool:
        return digest in self._synthesized


def _valid_entry(entry: object, where: str) -> bool:
    try:
        descriptor_mod.parse(entry, where)
    except OcifsError as exc:
        log.warning("%s (entry skipped)", exc)
        return False
    return True
