"""A hand-written tar header walker: ustar, GNU (L/K, base-256) and PAX.

`tarfile` costs ~50 µs per PAX member (docs/layers.md); this walker only
decodes the fields ocifs shows and skips file data without copying it. It reads
from a `ChunkStream` (a pull interface over decompressed chunks), so one pass
over a compressed layer can hash, decompress, keep an unpacked copy and index.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from ocifs.errors import LimitExceeded
from ocifs.layers.limits import Limits

BLOCK = 512


class TarDamaged(Exception):
    """The tar stream is corrupt or truncated at `offset`; entries before it are good."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at offset {offset}")
        self.offset = offset


class ChunkStream:
    """Sequential reads and skips over an iterator of byte chunks."""

    __slots__ = ("_buf", "_chunks", "_off", "pos")

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._off = 0
        self.pos = 0  # bytes consumed so far

    def read(self, n: int) -> bytes:
        """Exactly `n` bytes, or fewer at the end of the stream."""
        end = self._off + n
        if end <= len(self._buf):
            data = self._buf[self._off : end]
            self._off = end
            self.pos += n
            return data
        parts = [self._buf[self._off :]]
        have = len(parts[0])
        self._buf, self._off = b"", 0
        while have < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            take = n - have
            if len(chunk) > take:
                parts.append(chunk[:take])
                self._buf, self._off = chunk, take
                have = n
            else:
                parts.append(chunk)
                have += len(chunk)
        self.pos += have
        return b"".join(parts)

    def skip(self, n: int) -> int:
        """Skip `n` bytes; returns how many were there."""
        left = n
        avail = len(self._buf) - self._off
        if avail >= left:
            self._off += left
            self.pos += left
            return n
        left -= avail
        self._buf, self._off = b"", 0
        while left > 0:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            if len(chunk) > left:
                self._buf, self._off = chunk, left
                left = 0
            else:
                left -= len(chunk)
        self.pos += n - left
        return n - left


@dataclass(slots=True)
class Member:
    """One tar member with extended headers applied (not yet normalised)."""

    name: str
    type: int  # the typeflag byte
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    link: str
    rdev: int
    xattrs: dict[str, bytes] | None
    data_offset: int
    sparse: bool = False


REGULAR = frozenset(b"0\x007")
HARDLINK, SYMLINK, CHAR, BLOCKDEV, DIRECTORY, FIFO = b"123456"
GNU_DUMPDIR = ord("D")
_HEADER_ONLY = frozenset(b"123456")
_SKIP_TYPES = frozenset(b"VMN")  # volume label, multi-volume continuation, old GNU names


def _num(field: bytes, offset: int) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 (sizes over 8 GiB, big uids)
        if field[0] == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarDamaged(f"invalid number {field!r} in tar header", offset) from None


def _str(field: bytes) -> str:
    return os.fsdecode(field.split(b"\0", 1)[0])


def _pax_time(value: bytes) -> int:
    text = value.decode("ascii", "replace")
    neg = text.startswith("-")
    sec, _, frac = text.lstrip("-").partition(".")
    ns = int(sec or "0") * 1_000_000_000 + int((frac + "000000000")[:9] or "0")
    return -ns if neg else ns


def parse_pax(data: bytes, offset: int) -> dict[str, bytes]:
    """PAX extended header records `<len> <key>=<value>\\n` (values are raw bytes)."""
    out: dict[str, bytes] = {}
    pos = 0
    end = len(data)
    while pos < end and data[pos] != 0:
        space = data.find(b" ", pos, pos + 24)
        try:
            length = int(data[pos:space]) if space > pos else -1
        except ValueError:
            length = -1
        if length <= 0 or pos + length > end or data[pos + length - 1] != 0x0A:
            raise TarDamaged("malformed PAX header record", offset)
        key, eq, value = data[space + 1 : pos + length - 1].partition(b"=")
        if not eq:
            raise TarDamaged("malformed PAX header record", offset)
        out[key.decode("utf-8", "surrogateescape")] = value
        pos += length
    return out


def _checksum_ok(header: bytes) -> bool:
    try:
        stored = int(header[148:156].split(b"\0", 1)[0].strip(b" ") or b"-1", 8)
    except ValueError:
        return False
    unsigned = sum(header) - sum(header[148:156]) + 8 * 32
    if stored == unsigned:
        return True
    signed = unsigned - 2 * sum(b for b in header if b > 127)  # old tars summed signed chars
    return stored == signed


def walk(stream: ChunkStream, limits: Limits, where: str) -> Iterator[Member]:
    """Members of the tar in `stream`, in order. Raises TarDamaged on corruption.

    Yields a member as soon as its header is read, then skips its data, so a
    member whose data is cut short is still listed (reads past the damage fail).
    """
    global_pax: dict[str, bytes] = {}
    pax: dict[str, bytes] = {}
    long_name: bytes | None = None
    long_link: bytes | None = None
    while True:
        offset = stream.pos
        header = stream.read(BLOCK)
        if len(header) == 0 and not pax and long_name is None:
            return  # clean end without the end-of-archive blocks: tar accepts it
        if len(header) < BLOCK:
            raise TarDamaged("tar header cut short", offset)
        if header.count(0) == BLOCK:
            return  # end-of-archive marker (the next block, if any, is zeros too)
        if not _checksum_ok(header):
            raise TarDamaged("tar header checksum mismatch", offset)
        typeflag = header[156]
        size = _num(header[124:136], offset)
        if size < 0:
            raise TarDamaged("negative member size", offset)
        if typeflag in (ord("x"), ord("g"), ord("L"), ord("K")):
            if size > limits.max_header_bytes:
                raise LimitExceeded(
                    f"layer {where}: extended header of {size} bytes at offset {offset} "
                    f"exceeds the {limits.max_header_bytes} byte limit"
                )
            data = stream.read(size)
            if len(data) < size or stream.skip(-size % BLOCK) < -size % BLOCK:
                raise TarDamaged("extended header cut short", offset)
            if typeflag == ord("x"):
                pax.update(parse_pax(data, offset))
            elif typeflag == ord("g"):
                global_pax.update(parse_pax(data, offset))
            elif typeflag == ord("L"):
                long_name = data.split(b"\0", 1)[0]
            else:
                long_link = data.split(b"\0", 1)[0]
            continue
        member = _member(header, typeflag, size, offset, stream.pos, global_pax, pax)
        if long_name is not None and "path" not in pax:
            member.name = os.fsdecode(long_name)
        if long_link is not None and "linkpath" not in pax:
            member.link = os.fsdecode(long_link)
        pax, long_name, long_link = {}, None, None
        has_data = typeflag not in _HEADER_ONLY
        if typeflag not in _SKIP_TYPES:
            yield member
        if has_data:
            data_size = size if ord("S") == typeflag else member.size  # old GNU sparse
            padding = -data_size % BLOCK
            if stream.skip(data_size) < data_size:
                raise TarDamaged(f"data of member {member.name!r} cut short", stream.pos)
            if stream.skip(padding) < padding:
                # The data is whole; only the padding (and end-of-archive blocks) are
                # missing, as in tars written by umoci 0.4.7: GNU tar extracts these.
                return


def _member(
    header: bytes,
    typeflag: int,
    size: int,
    offset: int,
    data_offset: int,
    global_pax: dict[str, bytes],
    local_pax: dict[str, bytes],
) -> Member:
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:263] == b"ustar\x00" and header[345] != 0:
        name = header[345:500].split(b"\0", 1)[0] + b"/" + name
    member = Member(
        name=os.fsdecode(name),
        type=typeflag,
        mode=_num(header[100:108], offset) & 0o7777,
        uid=_num(header[108:116], offset),
        gid=_num(header[116:124], offset),
        size=size,
        mtime_ns=_num(header[136:148], offset) * 1_000_000_000,
        link=_str(header[157:257]),
        rdev=0,
        xattrs=None,
        data_offset=data_offset,
        sparse=typeflag == ord("S"),
    )
    if typeflag in (ord("3"), ord("4")):
        member.rdev = os.makedev(_num(header[329:337], offset), _num(header[337:345], offset))
    if global_pax or local_pax:
        _apply_pax(member, {**global_pax, **local_pax}, local_pax, offset)
    return member


def _apply_pax(member: Member, pax: dict[str, bytes], local: dict[str, bytes], offset: int) -> None:
    try:
        # path, linkpath and size describe one member: never taken from a global header.
        if "path" in local:
            member.name = os.fsdecode(local["path"])
        if "linkpath" in local:
            member.link = os.fsdecode(local["linkpath"])
        if "size" in local:
            member.size = int(local["size"])
        if "mtime" in pax:
            member.mtime_ns = _pax_time(pax["mtime"])
        if "uid" in pax:
            member.uid = int(pax["uid"])
        if "gid" in pax:
            member.gid = int(pax["gid"])
    except ValueError:
        raise TarDamaged("invalid value in PAX header", offset) from None
    if member.size < 0:
        raise TarDamaged("negative member size", offset)
    for key, value in pax.items():
        if key.startswith("SCHILY.xattr."):
            if member.xattrs is None:
                member.xattrs = {}
            member.xattrs[key[13:]] = value
        elif key.startswith("GNU.sparse."):
            member.sparse = True
