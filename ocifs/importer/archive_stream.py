"""Importing an OCI archive or a `docker save` tar (plain, gzip'd or zstd'd) as it is written.

The archive is never stored whole: each member under ``blobs/<alg>/<hex>`` is
hashed while it streams into its own staging file and checked against its name
when it ends (a blob the layout already has is only hashed, not staged);
`index.json`, `oci-layout`, `manifest.json` and `repositories` are kept in memory
(bounded); other regular files — possible docker-save layers and configs, whose
role is known only once `manifest.json`, usually the last member, arrives — are
staged by their sha256. Members are only ever data: no name from the archive
becomes a path, links are recorded to resolve docker-save layer aliases only.

`finish` decides what the archive means: `index.json` with entries → an OCI
archive (entries merged as they are); otherwise `manifest.json` → docker-save
(manifests synthesized, see `ocifs.importer.docker`). Every entry's closure
must be complete within the archive plus the layout, or nothing is committed.
Everything here runs in a worker thread, fed in order by the ingest pipeline.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ocifs.errors import DigestMismatch, InvalidInput, LimitExceeded
from ocifs.importer import classify, closure, docker, indexjson
from ocifs.importer.commit import blob_path, blob_size, read_range
from ocifs.importer.decoder import Decoder
from ocifs.importer.staging import StagedFile
from ocifs.importer.tarstream import Member, TarStream
from ocifs.model import descriptor as descriptor_mod
from ocifs.model import digest as digest_mod
from ocifs.model import documents
from ocifs.model.digest import Digest

if TYPE_CHECKING:
    from hashlib import _Hash

log = logging.getLogger(__name__)

MAX_LINK_HOPS = 16
#: Ignored members warned about one by one; beyond, only the count is reported.
MAX_IGNORED_WARNINGS = 20


@dataclass
class ArchiveResult:
    """What a complete, verified archive brings: blobs to commit, entries to merge."""

    staged: dict[Digest, StagedFile]
    entries: list[dict[str, Any]]
    kind: str  # "oci-archive" or "docker-archive"


@dataclass
class _Sink:
    """The member being received."""

    name: str
    hasher: _Hash
    expected: Digest | None
    staged: StagedFile | None
    doc: bytearray | None = None
    size: int = 0


@dataclass
class ArchiveImport:
    """Handler for `TarStream`; feed() the raw (possibly compressed) archive bytes."""

    layout: str
    where: str
    staged: dict[Digest, StagedFile] = field(default_factory=dict)
    #: member name -> (digest, size) for every regular file seen
    members: dict[str, tuple[Digest, int]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    docs: dict[str, bytes] = field(default_factory=dict)
    #: members `classify.archive_member` does not accept (warned about, skipped)
    ignored: int = 0
    _sink: _Sink | None = None

    def __post_init__(self) -> None:
        self.tar = TarStream(self)
        self.decoder = Decoder(self.tar)

    # -- feeding --------------------------------------------------------------

    def feed(self, data: bytes | memoryview) -> None:
        self.decoder.feed(data)

    @property
    def complete(self) -> bool:
        return self.tar.done and self.decoder.complete

    def begin(self, member: Member) -> bool:
        name = member.name
        if name.startswith("/") or name == ".." or name.startswith("../"):
            log.warning("%s: member %r is outside the archive root; ignored", self.where, name)
            return False
        if member.kind in ("symlink", "hardlink"):
            base = posixpath.dirname(name) if member.kind == "symlink" else ""
            self.links[name] = posixpath.normpath(posixpath.join(base, member.linkname))
            return False
        if member.kind != "file":
            return False
        accepted = classify.archive_member(name)
        if accepted is None:
            self.ignored += 1
            if self.ignored <= MAX_IGNORED_WARNINGS:
                log.warning("%s: member %r is not part of an image archive; ignored",
                            self.where, name)
            return False
        role, expected = accepted
        if role is classify.MemberRole.LEGACY:
            return False
        if role is classify.MemberRole.DOCUMENT:
            if member.size > documents.MAX_DOCUMENT_BYTES:
                raise LimitExceeded(f"{self.where}: {name} is {member.size} bytes, over the limit")
            self._sink = _Sink(name, hashlib.sha256(), None, None, doc=bytearray())
            return True
        algorithm = expected.algorithm if expected else "sha256"
        hasher = hashlib.new(algorithm)
        staged = None
        if expected is None or (
            expected not in self.staged and blob_size(self.layout, expected) is None
        ):
            staged = StagedFile(self.layout, algorithm, kind="archive")
        self._sink = _Sink(name, hasher, expected, staged)
        return True

    def data(self, chunk: memoryview) -> None:
        sink = self._sink
        assert sink is not None
        sink.size += len(chunk)
        if sink.doc is not None:
            sink.doc += chunk
        elif sink.staged is not None:
            sink.staged.append(chunk)
        else:
            sink.hasher.update(chunk)

    def end(self) -> None:
        sink, self._sink = self._sink, None
        assert sink is not None
        if sink.doc is not None:
            self.docs[sink.name] = bytes(sink.doc)
            return
        if sink.staged is not None:
            actual = Digest(sink.staged.algorithm, sink.staged.hexdigest())
        else:
            actual = Digest(sink.hasher.name, sink.hasher.hexdigest())
        if sink.expected is not None and actual != sink.expected:
            if sink.staged is not None:
                sink.staged.discard()
            raise DigestMismatch(
                f"{self.where}: member {sink.name} is {actual} ({sink.size} bytes), "
                f"its name says {sink.expected}"
            )
        self.members[sink.name] = (actual, sink.size)
        if sink.staged is not None:
            if actual in self.staged or blob_size(self.layout, actual) is not None:
                sink.staged.discard()
            else:
                # written out now (this runs in a worker thread): a kept member must
                # not hold its direct-write buffers until the commit (100 layers
                # would hold ~600 MiB)
                sink.staged.settle()
                self.staged[actual] = sink.staged

    # -- finishing ------------------------------------------------------------

    def finish(self) -> ArchiveResult:
        """Interpret the complete archive; raises if anything is missing or invalid."""
        if not self.tar.done:
            raise InvalidInput(f"{self.where}: archive is truncated (no end-of-archive marker)")
        if not self.decoder.complete:
            raise InvalidInput(
                f"{self.where}: {self.decoder.format} stream is truncated (it does not end "
                "where its last frame or member does)"
            )
        if "oci-layout" in self.docs:
            documents.parse_oci_layout(self.docs["oci-layout"], f"{self.where}: oci-layout")
        entries = self._oci_entries()
        kind = "oci-archive"
        if not entries and "manifest.json" in self.docs:
            entries = self._docker_entries()
            kind = "docker-archive"
        if not entries:
            raise InvalidInput(f"{self.where}: no images in the archive (empty index.json and "
                               "no manifest.json)")
        indexjson.check_names(entries, self.where)
        view = closure.BlobView(self.layout, self.staged)
        needed: set[Digest] = set()
        for entry in entries:
            desc = descriptor_mod.parse(entry, f"{self.where}: index.json")
            seen, absent = closure.walk(view, desc)
            if absent:
                names = ", ".join(sorted(str(a) for a in absent)[:5])
                raise InvalidInput(f"{self.where}: {desc.digest} references missing blob(s) "
                                   f"{names} (not in the archive nor the layout)")
            needed |= seen
        self.keep_only(needed)
        return ArchiveResult(self.staged, entries, kind)

    def _oci_entries(self) -> list[dict[str, Any]]:
        data = self.docs.get("index.json")
        if data is None:
            return []
        where = f"{self.where}: index.json"
        obj = documents.load_json(data, where)
        if not isinstance(obj, dict):
            raise InvalidInput(f"{where}: not a JSON object")
        manifests = obj.get("manifests") or []  # docker 25 writes "manifests": null
        if not isinstance(manifests, list):
            raise InvalidInput(f"{where}: 'manifests' must be an array")
        for i, m in enumerate(manifests):
            descriptor_mod.parse(m, f"{where}: manifests[{i}]")
        return list(manifests)

    def _resolve(self, path: str) -> docker.BlobRef:
        name = posixpath.normpath(path)
        for _ in range(MAX_LINK_HOPS):
            if name not in self.links:
                break
            name = self.links[name]
        found = self.members.get(name)
        if found is None:
            raise InvalidInput(f"{self.where}: manifest.json names {path!r}, not in the archive")
        digest, size = found
        legacy = re.fullmatch(r"([0-9a-f]{64})\.json", name)
        if legacy and legacy.group(1) != digest.hex:
            raise DigestMismatch(f"{self.where}: config {name} is {digest}")
        return docker.BlobRef(digest, size, lambda: self._reader(digest))

    def _reader(self, digest: Digest) -> Callable[[int, int], bytes]:
        staged = self.staged.get(digest)
        if staged is not None:
            return staged.pread
        return functools.partial(read_range, blob_path(self.layout, digest))

    def _docker_entries(self) -> list[dict[str, Any]]:
        where = f"{self.where}: manifest.json"
        items = documents.load_json(self.docs["manifest.json"], where)
        entries: list[dict[str, Any]] = []
        for data, tagged in docker.synthesize(items, self._resolve, self.where):
            digest = digest_mod.of_bytes(data)
            if digest not in self.staged and blob_size(self.layout, digest) is None:
                staged = StagedFile(self.layout, kind="archive")
                staged.append(data)
                self.staged[digest] = staged
            entries.extend(tagged)
        return entries

    def discard(self) -> None:
        """Remove every staging file (failure or abort)."""
        if self._sink is not None and self._sink.staged is not None:
            self._sink.staged.discard()
        for staged in self.staged.values():
            staged.discard()
        self.staged.clear()

    def keep_only(self, needed: set[Digest]) -> None:
        """Drop staged files nothing references (docker-save members that were not layers)."""
        for digest in [d for d in self.staged if d not in needed]:
            self.staged.pop(digest).discard()
