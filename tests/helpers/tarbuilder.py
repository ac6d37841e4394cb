"""Declarative layer tars for tests (in the spirit of containerd's `tartest`).

Members are described as values (`File`, `Dir`, `Symlink`, `Hardlink`, `Fifo`,
`Char`, `Block`, `Raw`) and written with the standard `tarfile` writer, which
shares no code with ocifs's walker. `BlobSource` serves built blobs as an
ocifs `Source` (from files, so reads take the inline pread path).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

import zstandard

from ocifs.codec.blobio import BlobReader, BytesReader, FileRegionReader
from ocifs.errors import BlobUnavailable
from ocifs.model.descriptor import Descriptor
from ocifs.model.digest import Digest
from ocifs.sources.base import Source

MEDIA = {
    "tar": "application/vnd.oci.image.layer.v1.tar",
    "gz": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zst": "application/vnd.oci.image.layer.v1.tar+zstd",
    "docker-gz": "application/vnd.docker.image.rootfs.diff.tar.gzip",
}


@dataclass
class _Common:
    name: str
    _: KW_ONLY
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: float = 1_700_000_000
    xattrs: dict[str, bytes] = field(default_factory=dict)

    def info(self, kind: bytes) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(self.name)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = kind, self.mode, self.uid, self.gid, self.mtime
        if self.xattrs:
            ti.pax_headers = {
                f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                for k, v in self.xattrs.items()
            }
        return ti


@dataclass
class File(_Common):
    data: bytes = b""


@dataclass
class Dir(_Common):
    mode: int = 0o755


@dataclass
class Symlink(_Common):
    target: str = ""
    mode: int = 0o777


@dataclass
class Hardlink(_Common):
    target: str = ""


@dataclass
class Fifo(_Common):
    pass


@dataclass
class Char(_Common):
    major: int = 1
    minor: int = 3


@dataclass
class Block(_Common):
    major: int = 8
    minor: int = 0


@dataclass
class Raw:
    """A raw TarInfo (odd headers: huge sizes without data, unknown types...)."""

    info: tarfile.TarInfo
    data: bytes | None = None


@dataclass
class RawBytes:
    """Bytes written into the stream as they are (whole 512-byte blocks: hand-made headers)."""

    data: bytes


Member = File | Dir | Symlink | Hardlink | Fifo | Char | Block | Raw | RawBytes

#: (start, end) of the numeric fields of a tar header.
FIELDS = {
    "mode": (100, 108),
    "uid": (108, 116),
    "gid": (116, 124),
    "size": (124, 136),
    "mtime": (136, 148),
    "devmajor": (329, 337),
    "devminor": (337, 345),
}


def base256(value: int, width: int) -> bytes:
    """GNU base-256 encoding of a numeric field (negative values included)."""
    if value < 0:
        return value.to_bytes(width, "big", signed=True)
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


def header(info: tarfile.TarInfo, data: bytes = b"", **fields: bytes) -> bytes:
    """`info` as a GNU-format header (plus its data, padded), with the raw bytes of
    some numeric `fields` replaced (`uid=base256(-5, 8)`) and the checksum redone."""
    block = bytearray(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
    last = len(block) - tarfile.BLOCKSIZE  # long names come first as their own blocks
    for name, raw in fields.items():
        start, end = FIELDS[name]
        assert len(raw) == end - start, name
        block[last + start : last + end] = raw
    block[last + 148 : last + 156] = b"        "
    checksum = sum(block[last : last + tarfile.BLOCKSIZE])
    block[last + 148 : last + 156] = b"%06o\0 " % checksum
    return bytes(block) + data + bytes(-len(data) % tarfile.BLOCKSIZE)


def build(members: Iterable[Member], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """The tar stream of `members`, in order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        for m in members:
            if isinstance(m, RawBytes):
                assert tf.fileobj is not None and len(m.data) % tarfile.BLOCKSIZE == 0
                tf.fileobj.write(m.data)
                tf.offset += len(m.data)
            elif isinstance(m, Raw):
                tf.addfile(m.info, io.BytesIO(m.data) if m.data is not None else None)
            elif isinstance(m, File):
                ti = m.info(tarfile.REGTYPE)
                ti.size = len(m.data)
                tf.addfile(ti, io.BytesIO(m.data))
            elif isinstance(m, Dir):
                tf.addfile(m.info(tarfile.DIRTYPE))
            elif isinstance(m, Symlink | Hardlink):
                ti = m.info(tarfile.SYMTYPE if isinstance(m, Symlink) else tarfile.LNKTYPE)
                ti.linkname = m.target
                tf.addfile(ti)
            elif isinstance(m, Fifo):
                tf.addfile(m.info(tarfile.FIFOTYPE))
            else:
                ti = m.info(tarfile.CHRTYPE if isinstance(m, Char) else tarfile.BLKTYPE)
                ti.devmajor, ti.devminor = m.major, m.minor
                tf.addfile(ti)
    return out.getvalue()


def compress(data: bytes, how: str) -> bytes:
    if how in ("gz", "docker-gz"):
        return gzip.compress(data, compresslevel=6, mtime=0)
    if how == "zst":
        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


def digest_of(blob: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(blob).hexdigest())


class BlobSource(Source):
    """Blobs by digest, optionally stored as files under `directory`."""

    kind = "test"

    def __init__(self, directory: Path | None = None) -> None:
        super().__init__(str(directory or "/nonexistent"))
        self.directory = directory
        self.blobs: dict[Digest, bytes] = {}
        self.opened = 0
        self._fds: list[int] = []

    def add(self, blob: bytes, how: str = "tar", media_type: str | None = None) -> Descriptor:
        digest = digest_of(blob)
        self.blobs[digest] = blob
        if self.directory is not None:
            (self.directory / digest.hex).write_bytes(blob)
        return Descriptor(media_type or MEDIA[how], digest, len(blob))

    def layer(self, members: Iterable[Member], how: str = "tar") -> Descriptor:
        return self.add(compress(build(members), how), how)

    def oci_layout_bytes(self) -> bytes:
        return b'{"imageLayoutVersion":"1.0.0"}'

    def index_bytes(self) -> bytes:
        return b'{"schemaVersion":2,"manifests":[]}'

    def blob_size(self, digest: Digest) -> int | None:
        blob = self.blobs.get(digest)
        return None if blob is None else len(blob)

    def open_blob(self, digest: Digest) -> BlobReader:
        self.opened += 1
        if digest not in self.blobs:
            raise BlobUnavailable(f"blob {digest}: missing")
        if self.directory is None:
            return BytesReader(self.blobs[digest])
        fd = os.open(self.directory / digest.hex, os.O_RDONLY)
        self._fds.append(fd)
        return FileRegionReader(fd, 0, len(self.blobs[digest]))

    def list_blobs(self) -> list[Digest]:
        return list(self.blobs)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
