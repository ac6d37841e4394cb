"""Member table of an image archive: where each member's bytes lie in the tar stream.

Image archives have few members (a docker-save of a big image has a few hundred),
so the standard `tarfile` reader is used for headers only: it seeks past member
data, which for a plain file costs one 512-byte `pread` per header. The table is
built once per archive and kept in the DiskCache under the archive's identity
(path, inode, size, mtime), so the next mount of the unchanged file reads no
header at all.

Member names are only ever keys, never paths: `./` prefixes are dropped, and a
name that is absolute or has a `..` component is ignored with a warning. As with
tar extraction, the last member of a name wins. Links (symlinks and hard links)
are kept as aliases that resolve to another member of the same archive only.

A damaged archive is not refused here: the table records where reading stopped
and why, so members before that point stay readable and members after it are
reported as missing because the archive is truncated or corrupt.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import stat
import tarfile
import zlib
from dataclasses import dataclass, field

from ocifs.cache import DiskCache
from ocifs.codec import seekable, zstd_stream
from ocifs.codec.blobio import (
    BlobReader,
    FileRegionReader,
    ReaderFile,
    StampedRegionReader,
    clamp,
    fd_changed,
    file_type,
    stamp_of,
)
from ocifs.errors import BlobUnavailable, InvalidInput, LimitExceeded, NotAnImage
from ocifs.model import documents
from ocifs.model import mediatypes as mt

log = logging.getLogger(__name__)

#: DiskCache kind of member tables.
CACHE_KIND = "archive-members"
CACHE_FORMAT = 2
#: Link chains longer than this are treated as broken.
MAX_LINK_HOPS = 16
#: Archives with more members than this are refused (a docker-save has hundreds).
MAX_MEMBERS = 1_000_000
_BLOCK = 512
#: Leading bytes of each member kept in the table (compression magic numbers).
MAGIC_BYTES = 4


@dataclass(frozen=True, slots=True)
class Member:
    """A regular file member: its data starts at `offset` of the tar stream.

    `magic` holds its first bytes, read while scanning (the stream is then at
    hand), so telling a gzip'd docker-save layer from a plain one later costs no
    read — which matters in a gzip'd archive, where every read inflates.
    """

    name: str
    offset: int
    size: int
    magic: bytes = b""


@dataclass(slots=True)
class MemberTable:
    """Regular members and link aliases by normalized name; see the module docstring."""

    files: dict[str, Member] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    #: size of the tar stream the table was built from
    stream_size: int = 0
    #: why reading stopped before the end-of-archive marker ("" if it did not)
    damage: str = ""

    def resolve(self, name: str) -> Member | None:
        """The regular member `name` denotes, following links inside the archive only."""
        key = normalize(name)
        for _ in range(MAX_LINK_HOPS):
            if key is None:
                return None
            found = self.files.get(key)
            if found is not None:
                return found
            target = self.links.get(key)
            if target is None:
                return None
            key = target
        return None

    def complete(self, member: Member) -> bool:
        """Whether all of the member's bytes lie inside the tar stream."""
        return member.offset + member.size <= self.stream_size

    def to_bytes(self) -> bytes:
        obj = {
            "format": CACHE_FORMAT,
            "stream_size": self.stream_size,
            "damage": self.damage,
            "files": [[m.name, m.offset, m.size, m.magic.hex()] for m in self.files.values()],
            "links": sorted(self.links.items()),
        }
        return json.dumps(obj, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> MemberTable:
        """Inverse of `to_bytes`; raises ValueError/KeyError/TypeError on a bad entry."""
        obj = json.loads(data)
        if obj["format"] != CACHE_FORMAT:
            raise ValueError(f"format {obj['format']}")
        table = cls(stream_size=int(obj["stream_size"]), damage=str(obj["damage"]))
        for name, offset, size, magic in obj["files"]:
            table.files[str(name)] = Member(str(name), int(offset), int(size), bytes.fromhex(magic))
        table.links = {str(a): str(b) for a, b in obj["links"]}
        return table


def normalize(name: str) -> str | None:
    """A member name as a key: no `./`, no empty or `.` parts; None if it escapes."""
    if name.startswith("/"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _link_target(info: tarfile.TarInfo, key: str) -> str | None:
    """Normalized key a link member points at, or None if it leaves the archive."""
    target = info.linkname
    if info.issym():
        if target.startswith("/"):
            return None
        target = posixpath.normpath(posixpath.join(posixpath.dirname(key), target))
        if target == ".." or target.startswith("../"):
            return None
    return normalize(target)


def _add(table: MemberTable, info: tarfile.TarInfo, reader: BlobReader, where: str) -> None:
    key = normalize(info.name)
    if key is None:
        if info.name.strip("./"):
            log.warning("%s: member %r is outside the archive root; ignored", where, info.name)
        return
    # The last member of a name wins, whatever its type (as with extraction).
    table.files.pop(key, None)
    table.links.pop(key, None)
    if info.isreg():
        try:
            magic = reader.pread(info.offset_data, min(MAGIC_BYTES, info.size))
        except BlobUnavailable:  # cut short; reported when the member is read
            magic = b""
        table.files[key] = Member(key, info.offset_data, info.size, magic)
    elif info.issym() or info.islnk():
        target = _link_target(info, key)
        if target is None:
            log.warning(
                "%s: link %r -> %r points outside the archive; ignored",
                where,
                info.name,
                info.linkname,
            )
        else:
            table.links[key] = target


def _at(offset: int, compressed: bool) -> str:
    return f"byte {offset} of the decompressed tar" if compressed else f"byte {offset}"


def _stop_reason(reader: BlobReader, offset: int, error: str, compressed: bool) -> str:
    """'' if the stream ends with an end-of-archive block at `offset`, else why not."""
    block = reader.pread(offset, _BLOCK) if offset < reader.size else b""
    if len(block) < _BLOCK:
        return f"archive is truncated at {_at(reader.size, compressed)} (no end-of-archive marker)"
    if block == bytes(_BLOCK):
        return ""
    return f"archive is corrupt at {_at(offset, compressed)}: {error or 'invalid tar header'}"


def scan(reader: BlobReader, where: str, compressed: bool = False) -> MemberTable:
    """Read every member header of the tar stream `reader` (blocking).

    `compressed` only words messages: offsets are then in the decompressed tar.
    """
    table = MemberTable(stream_size=reader.size)
    error = ""
    try:
        tf = tarfile.open(fileobj=ReaderFile(reader), mode="r:")  # noqa: SIM115
    except (tarfile.TarError, BlobUnavailable) as exc:
        table.damage = f"not a readable tar archive: {exc}"
        return table
    count = 0
    while True:
        offset = tf.offset
        try:
            info = tf.next()
        except tarfile.TarError as exc:
            error = str(exc)
            break
        except (UnicodeError, BlobUnavailable) as exc:  # bad PAX data, bad gzip data
            error = str(exc)
            break
        if info is None:
            offset = tf.offset
            break
        tf.members.clear()  # type: ignore[attr-defined]  # do not keep every TarInfo
        count += 1
        if count > MAX_MEMBERS:
            raise LimitExceeded(f"{where}: more than {MAX_MEMBERS} archive members")
        _add(table, info, reader, where)
    table.damage = _stop_reason(reader, offset, error, compressed)
    for member in table.files.values():
        if not table.complete(member) and not table.damage:
            table.damage = f"archive is truncated at {_at(reader.size, compressed)}"
    return table


def load_or_scan(
    reader: BlobReader, cache: DiskCache, key: str, where: str, compressed: bool = False
) -> MemberTable:
    """The member table from the cache, or scanned and cached (see the module docstring)."""
    payload = cache.get(CACHE_KIND, key, version=CACHE_FORMAT)
    if payload is not None:
        try:
            table = MemberTable.from_bytes(payload)
            if table.stream_size == reader.size:
                return table
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: cached member table unusable (%s); rescanning", where, exc)
        cache.discard(CACHE_KIND, key)
    table = scan(reader, where, compressed)
    cache.put(CACHE_KIND, key, table.to_bytes(), version=CACHE_FORMAT)
    return table


class SliceReader:
    """A member's bytes inside a (possibly decompressed) tar stream. Thread-safe.

    `archive` (if given) is the archive file the stream comes from: a read that
    overlaps a change of that file after mounting fails instead of returning
    bytes inflated from the new content (checked after the read, the kernel
    updating the file's times before its data).
    """

    __slots__ = ("_archive", "_parent", "_size", "start")

    def __init__(
        self, parent: BlobReader, start: int, size: int, archive: ArchiveFile | None = None
    ) -> None:
        self._parent = parent
        self.start = start
        self._size = size
        self._archive = archive

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, size: int) -> bytes:
        size = clamp(offset, size, self._size)
        if not size:
            return b""
        try:
            data = self._parent.pread(self.start + offset, size)
        finally:
            self._check_archive()
        return data

    def _check_archive(self) -> None:
        if self._archive is not None and self._archive.changed():
            raise BlobUnavailable(
                f"{self._archive.path}: the archive changed on disk after mounting (remount it)"
            )

    def close(self) -> None:
        pass


def read_small(reader: BlobReader, member: Member, where: str) -> bytes:
    """A JSON member's bytes, refusing members over the document size limit."""
    if member.size > documents.MAX_DOCUMENT_BYTES:
        raise LimitExceeded(
            f"{where}: {member.name} is {member.size} bytes, over the "
            f"{documents.MAX_DOCUMENT_BYTES} byte limit"
        )
    data = reader.pread(member.offset, member.size)
    if len(data) != member.size:
        raise BlobUnavailable(f"{where}: {member.name} is cut short (archive truncated)")
    return data


def _tar_header(block: bytes) -> bool:
    """Whether `block` is a valid (checksummed) tar header block."""
    if len(block) < _BLOCK:
        return False
    try:
        tarfile.TarInfo.frombuf(block[:_BLOCK], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _gunzip_head(fd: int, size: int) -> bytes:
    """The first decompressed block of a gzip file (at most 1 MiB of input read)."""
    z = zlib.decompressobj(31)
    out = b""
    offset = 0
    try:
        while len(out) < _BLOCK and offset < min(size, 1 << 20):
            chunk = os.pread(fd, 64 * 1024, offset)
            if not chunk:
                break
            offset += len(chunk)
            out += z.decompress(chunk, _BLOCK - len(out))
            if z.eof:
                break
    except zlib.error:
        pass
    return out


def identity_of(path: str, st: os.stat_result) -> str:
    """Cache key of an archive file: changes whenever the file may have changed."""
    return f"{os.path.realpath(path)}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


class ArchiveFile:
    """An open archive file: the tar stream (plain or decompressed) and its member table.

    Owns the file descriptor. Detection by content happens here: anything that is
    not a tar (plain, gzip'd or zstd'd) is refused with NotAnImage before any indexing.
    """

    def __init__(
        self,
        path: str,
        fd: int,
        identity: str,
        stream: BlobReader,
        compression: mt.Compression,
        table: MemberTable,
    ) -> None:
        self.path = path
        self.fd = fd
        self.identity = identity
        self.stream = stream
        self.compression = compression
        self.table = table
        self.stamp = stamp_of(os.fstat(fd))

    @property
    def compressed(self) -> bool:
        return self.compression is not mt.Compression.NONE

    @classmethod
    def open(cls, path: str, cache: DiskCache) -> ArchiveFile:
        """Open, sniff and index `path` (blocking; cached per identity)."""
        try:
            # O_NONBLOCK: a FIFO given as SOURCE must be refused, not waited on.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise NotAnImage(f"{path}: cannot open: {exc.strerror}") from None
        try:
            return cls._open_fd(path, fd, cache)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def _open_fd(cls, path: str, fd: int, cache: DiskCache) -> ArchiveFile:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotAnImage(
                f"{path}: is {file_type(st.st_mode)}, not an image layout directory or archive"
            )
        if st.st_size == 0:
            raise NotAnImage(f"{path}: not an image archive (an empty file)")
        identity = identity_of(path, st)
        raw: BlobReader = FileRegionReader(fd, 0, st.st_size)
        head = raw.pread(0, _BLOCK)
        kind = mt.sniff_compression(head)
        if kind is mt.Compression.ZSTD:
            if not _tar_header(zstd_stream.head(raw, _BLOCK)):
                raise NotAnImage(f"{path}: not an image archive (zstd data that is not a tar)")
            stream = zstd_stream.open_zstd(raw, cache, identity, path)
        elif kind is mt.Compression.GZIP:
            if not _tar_header(_gunzip_head(fd, st.st_size)):
                raise NotAnImage(f"{path}: not an image archive (gzip data that is not a tar)")
            try:
                stream = seekable.open_gzip(raw, cache, f"archive:{identity}")
            except BlobUnavailable as exc:
                raise InvalidInput(
                    f"{path}: gzip stream is truncated or corrupt ({_cause(exc)})"
                ) from None
        elif _tar_header(head):
            kind, stream = mt.Compression.NONE, raw
        else:
            raise NotAnImage(f"{path}: not an image archive (not a tar file)")
        table = load_or_scan(stream, cache, identity, path, stream is not raw)
        return cls(path, fd, identity, stream, kind, table)

    def member_reader(self, member: Member) -> BlobReader:
        """Random access to a member's bytes; BlobUnavailable if the archive cut it short."""
        if not self.table.complete(member):
            raise BlobUnavailable(
                f"{self.path}: member {member.name} is cut short: {self.table.damage}"
            )
        if isinstance(self.stream, FileRegionReader):
            # A plain tar: read in place, so a change of the archive file must show.
            return StampedRegionReader(self.fd, member.offset, member.size, self.stamp)
        return SliceReader(self.stream, member.offset, member.size, self)

    def changed(self) -> bool:
        """Whether the archive file changed since it was opened (one fstat)."""
        return fd_changed(self.fd, self.stamp)

    def document(self, name: str) -> bytes | None:
        """A small JSON member's bytes, or None if there is no such member."""
        member = self.table.resolve(name)
        if member is None:
            return None
        return read_small(self.stream, member, self.path)

    def missing(self, what: str) -> str:
        """Why `what` is not in the archive, naming the damage if there is some."""
        if self.table.damage:
            return f"{self.path}: {what} is missing ({self.table.damage})"
        return f"{self.path}: {what} is not in the archive"

    def close(self) -> None:
        """Release the gzip reader and the file descriptor; idempotent."""
        if self.fd < 0:
            return
        if self.compressed:
            self.stream.close()
        os.close(self.fd)
        self.fd = -1


def _cause(exc: BaseException) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text
