"""An OCI archive (`skopeo copy … oci-archive:`, `ctr images export`) as a Source.

The archive is an OCI layout inside a tar: `oci-layout`, `index.json` and
`blobs/<alg>/<hex>` members (possibly with `./` prefixes). Nothing is extracted:
`oci-layout` and `index.json` are served as the members' raw bytes, and a blob
read is a `pread` at the member's offset (or a seek-point read into a gzip'd
archive). Only the member headers are read on open; a member under `blobs/`
whose name is not a valid digest is ignored with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from ocifs.codec.blobio import BlobReader
from ocifs.errors import BlobUnavailable, InvalidInput, NotAnImage, OcifsError
from ocifs.model import digest as digest_mod
from ocifs.model import documents
from ocifs.model.digest import Digest
from ocifs.sources.base import Source
from ocifs.sources.tarmembers import ArchiveFile, Member

log = logging.getLogger(__name__)


def blob_members(archive: ArchiveFile) -> dict[Digest, Member]:
    """Every `blobs/<alg>/<hex>` member (links resolved inside the archive) by digest."""
    table = archive.table
    found: dict[Digest, Member] = {}
    for name in sorted({*table.files, *table.links}):
        parts = name.split("/")
        if parts[0] != "blobs" or len(parts) < 2:
            continue
        try:
            if len(parts) != 3:
                raise InvalidInput("not blobs/<alg>/<hex>")
            digest = digest_mod.from_parts(parts[1], parts[2])
        except OcifsError as exc:
            log.warning("%s: member %r is not a blob name (%s); ignored", archive.path, name, exc)
            continue
        member = table.resolve(name)
        if member is None:
            log.warning("%s: link %r leads to no member; ignored", archive.path, name)
            continue
        found[digest] = member
    return found


def read_document(archive: ArchiveFile, name: str) -> bytes | None:
    """A JSON member needed at open: any failure to read it is an open-time error."""
    try:
        return archive.document(name)
    except BlobUnavailable as exc:
        raise InvalidInput(str(exc)) from None


class OciArchive(Source):
    """See the module docstring. Takes ownership of `archive` (closed by `close`)."""

    kind = "oci-archive"
    writable = False

    def __init__(self, archive: ArchiveFile) -> None:
        super().__init__(archive.path)
        self._archive = archive
        self._blobs = blob_members(archive)
        layout = read_document(archive, "oci-layout")
        if layout is None:
            raise NotAnImage(archive.missing("oci-layout") + " (not an OCI archive)")
        documents.parse_oci_layout(layout, f"{self.path}: oci-layout")
        self._oci_layout = layout
        self._index = self._load_index()

    def _load_index(self) -> bytes:
        """index.json as served; validated now so a bad one fails the mount."""
        data = read_document(self._archive, "index.json")
        if data is None:
            raise InvalidInput(self._archive.missing("index.json"))
        documents.parse_index(data, f"{self.path}: index.json", lenient=True)
        return data

    @property
    def archive(self) -> ArchiveFile:
        return self._archive

    @property
    def blob_members(self) -> dict[Digest, Member]:
        return self._blobs

    def oci_layout_bytes(self) -> bytes:
        return self._oci_layout

    def index_bytes(self) -> bytes:
        return self._index

    def blob_size(self, digest: Digest) -> int | None:
        member = self._blobs.get(digest)
        return None if member is None else member.size

    def open_blob(self, digest: Digest) -> BlobReader:
        member = self._blobs.get(digest)
        if member is None:
            raise BlobUnavailable(self._archive.missing(f"blob {digest}"))
        return self._archive.member_reader(member)

    def list_blobs(self) -> Iterator[Digest]:
        return iter(sorted(self._blobs))

    def identity(self) -> str:
        return self._archive.identity

    def close(self) -> None:
        self._archive.close()
