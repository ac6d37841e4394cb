"""A hand-written tar header walker: ustar, GNU (L/K, base-256, sparse) and PAX.

`tarfile` costs ~50 µs per PAX member (docs/layers.md); this walker only
decodes the fields ocifs shows and skips file data without copying it. It reads
from a `ChunkStream` (a pull interface over decompressed chunks), so one pass
over a compressed layer can hash, decompress, keep an unpacked copy and index.

Every numeric field is range-checked here (what the kernel's stat can hold):
a bad size is damage (the next header cannot be found), any other bad field
only marks its member (`Member.problem`), which the index then hides. GNU
sparse maps (old 'S', PAX 0.0/0.1/1.0) become `Member.sparse`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from ocifs.codec.damage import StreamDamaged
from ocifs.codec.limits import Limits
from ocifs.errors import LimitExceeded

BLOCK = 512


class TarDamaged(StreamDamaged):
    """The tar stream is corrupt or truncated at `offset`; entries before it are good."""


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
    #: sparse file: flattened (offset, length) pairs of the data segments, stored
    #: back to back from `data_offset`; `size` is then the file's real size.
    sparse: tuple[int, ...] | None = None
    #: why this member cannot be shown (an out-of-range field...); the walk goes on.
    problem: str | None = None


REGULAR = frozenset(b"0\x007")
HARDLINK, SYMLINK, CHAR, BLOCKDEV, DIRECTORY, FIFO = b"123456"
GNU_DUMPDIR = ord("D")
_HEADER_ONLY = frozenset(b"123456")
_SKIP_TYPES = frozenset(b"VMN")  # volume label, multi-volume continuation, old GNU names


#: Largest value an int64 field of the kernel's stat (size, mtime in ns) can hold.
INT64_MAX = (1 << 63) - 1
#: uid_t/gid_t and the major/minor halves of dev_t are 32-bit; (uid_t)-1 means "none".
ID_LIMIT = (1 << 32) - 1
_MODE_LIMIT = 0o7777777  # what the 8-byte octal mode field can hold
_MTIME_LIMIT = INT64_MAX // 1_000_000_000  # seconds whose nanoseconds fit int64
# Linux device numbers (and the FUSE protocol's 32-bit rdev): 12-bit major, 20-bit minor;
# `mknod` refuses anything larger, so `tar -x` cannot create it either.
_MAJOR_LIMIT = (1 << 12) - 1
_MINOR_LIMIT = (1 << 20) - 1
_GNU_SPARSE = ord("S")


def _num(field: bytes) -> int:
    """A numeric header field (octal, or GNU base-256). Raises ValueError if malformed."""
    if field[:1] and field[0] & 0x80:  # GNU base-256 (sizes over 8 GiB, big uids)
        if field[0] == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    return int(text, 8) if text else 0


def _size(field: bytes, offset: int) -> int:
    """The size field: without it the next header cannot be found, so a bad one is damage."""
    try:
        size = _num(field)
    except ValueError:
        raise TarDamaged(f"invalid size {field!r} in tar header", offset) from None
    if not 0 <= size <= INT64_MAX:
        raise TarDamaged(f"member size {size} out of range", offset)
    return size


def _str(field: bytes) -> str:
    return os.fsdecode(field.split(b"\0", 1)[0])


def _pax_time(value: bytes) -> int:
    text = value.decode("ascii")
    neg = text.startswith("-")
    sec, _, frac = text.lstrip("-").partition(".")
    if not sec.isdigit() or (frac and not frac.isdigit()):
        raise ValueError(text)
    ns = int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])
    return -ns if neg else ns


def _pax_int(value: bytes) -> int:
    text = value.decode("ascii")
    if not text.isdigit():  # decimal digits only: no sign, spaces or underscores
        raise ValueError(text)
    return int(text)


_SPARSE_PAIR_KEYS = ("GNU.sparse.offset", "GNU.sparse.numbytes")


def parse_pax(data: bytes, offset: int) -> dict[str, bytes]:
    """PAX extended header records `<len> <key>=<value>\\n` (values are raw bytes).

    GNU sparse 0.0 repeats `GNU.sparse.offset`/`GNU.sparse.numbytes` pairs; they
    are collected, in order, into `GNU.sparse.map` (the 0.1 spelling).
    """
    out: dict[str, bytes] = {}
    pairs: list[bytes] = []
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
        name = key.decode("utf-8", "surrogateescape")
        if name in _SPARSE_PAIR_KEYS:
            pairs.append(value)
        else:
            out[name] = value
        pos += length
    if pairs and "GNU.sparse.map" not in out:
        out["GNU.sparse.map"] = b",".join(pairs)
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

    Yields a member as soon as its header (and sparse map) is read, then skips
    its data, so a member whose data is cut short is still listed (reads past
    the damage fail). A member with a bad field that does not hide where the
    next header is (uid, mtime, mode, device numbers...) is yielded with
    `problem` set; a bad size ends the walk (nothing after it can be found).
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
        size = _size(header[124:136], offset)
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
        old_sparse: list[int] | None = None
        if typeflag == _GNU_SPARSE:
            old_sparse = _old_gnu_sparse(header, stream, limits, offset)
        member = _member(header, typeflag, size, offset, stream.pos, global_pax, pax)
        if long_name is not None and "path" not in pax:
            member.name = os.fsdecode(long_name)
        if long_link is not None and "linkpath" not in pax:
            member.link = os.fsdecode(long_link)
        stored = member.size  # bytes of data that follow the header in the stream
        if typeflag in _HEADER_ONLY:
            stored = 0
        elif old_sparse is not None:
            _set_sparse(member, old_sparse, _num_or(header[483:495], -1), stored)
        elif "GNU.sparse.map" in pax or "GNU.sparse.size" in pax:
            _pax_sparse_0x(member, pax, stored)
        elif pax.get("GNU.sparse.major") == b"1" and pax.get("GNU.sparse.minor") == b"0":
            used = _pax_sparse_10(member, pax, stream, stored, limits, offset)
            stored -= used
        elif pax and any(key.startswith("GNU.sparse.") for key in pax):
            member.problem = member.problem or "unknown GNU sparse format"
        pax, long_name, long_link = {}, None, None
        if typeflag not in _SKIP_TYPES:
            yield member
        if stored or typeflag not in _HEADER_ONLY:
            padding = -stored % BLOCK  # a sparse 1.0 map takes whole blocks
            if stream.skip(stored) < stored:
                raise TarDamaged(f"data of member {member.name!r} cut short", stream.pos)
            if stream.skip(padding) < padding:
                # The data is whole; only the padding (and end-of-archive blocks) are
                # missing, as in tars written by umoci 0.4.7: GNU tar extracts these.
                return


def _num_or(field: bytes, default: int) -> int:
    try:
        return _num(field)
    except ValueError:
        return default


def _old_gnu_sparse(header: bytes, stream: ChunkStream, limits: Limits, offset: int) -> list[int]:
    """Old GNU ('S') sparse map: 4 pairs in the header, 21 per extension block after it."""
    pairs: list[int] = []

    def take(block: bytes, start: int, count: int) -> None:
        for i in range(count):
            at = start + 24 * i
            off, length = _num_or(block[at : at + 12], -1), _num_or(block[at + 12 : at + 24], -1)
            if block[at : at + 24].count(0) == 24:
                return  # unused slot
            pairs.extend((off, length))

    take(header, 386, 4)
    extended = header[482]
    blocks = 0
    while extended:
        blocks += 1
        if blocks * BLOCK > limits.max_header_bytes:
            raise LimitExceeded(f"sparse map at offset {offset} exceeds the header size limit")
        block = stream.read(BLOCK)
        if len(block) < BLOCK:
            raise TarDamaged("sparse map cut short", offset)
        take(block, 0, 21)
        extended = block[504]
    return pairs


def _pax_sparse_0x(member: Member, pax: dict[str, bytes], stored: int) -> None:
    """GNU sparse 0.0 (offset/numbytes records) and 0.1 (`GNU.sparse.map`)."""
    try:
        text = pax.get("GNU.sparse.map", b"").decode("ascii")
        pairs = [int(x) for x in text.split(",")] if text else []
        real = _pax_int(pax["GNU.sparse.size"]) if "GNU.sparse.size" in pax else -1
    except (ValueError, UnicodeDecodeError):
        member.problem = member.problem or "malformed GNU sparse map"
        return
    _set_sparse(member, pairs, real, stored)


def _pax_sparse_10(
    member: Member, pax: dict[str, bytes], stream: ChunkStream, stored: int, limits: Limits,
    offset: int,
) -> int:
    """GNU sparse 1.0: the map is decimal lines at the start of the data, padded to a block.

    Returns how many data bytes the map took.
    """
    lines: list[bytes] = []
    buf = b""
    used = 0
    count = -1
    while count < 0 or len(lines) < 1 + 2 * count:
        if used + BLOCK > min(stored, limits.max_header_bytes):
            member.problem = member.problem or "malformed GNU sparse 1.0 map"
            return used
        block = stream.read(BLOCK)
        if len(block) < BLOCK:
            raise TarDamaged("sparse map cut short", offset)
        used += BLOCK
        *done, buf = (buf + block).split(b"\n")
        lines.extend(done)
        if count < 0 and lines:
            count = int(lines[0]) if lines[0].isdigit() else -2
            if count == -2:
                member.problem = member.problem or "malformed GNU sparse 1.0 map"
                return used
    member.data_offset = stream.pos
    try:
        pairs = [int(x) for x in lines[1 : 1 + 2 * count]]
        real = _pax_int(pax["GNU.sparse.realsize"]) if "GNU.sparse.realsize" in pax else -1
    except ValueError:
        member.problem = member.problem or "malformed GNU sparse 1.0 map"
        return used
    _set_sparse(member, pairs, real, stored - used)
    return used


def _set_sparse(member: Member, pairs: list[int], real: int, stored: int) -> None:
    """Check a sparse map against the stored data and the real size, and apply it."""
    if len(pairs) % 2 or real < 0:
        member.problem = member.problem or "malformed GNU sparse map"
        return
    end = 0
    total = 0
    for i in range(0, len(pairs), 2):
        off, length = pairs[i], pairs[i + 1]
        if off < end or length < 0 or off + length > real:
            member.problem = member.problem or "GNU sparse map out of order or out of range"
            return
        end = off + length
        total += length
    if total > stored or real > INT64_MAX:
        member.problem = member.problem or "GNU sparse map larger than the member's data"
        return
    member.size = real
    member.sparse = tuple(pairs)


def _field(
    header: bytes, label: str, start: int, end: int, low: int, high: int, problems: list[str]
) -> int:
    """A numeric field checked against its range; 0 (and a problem noted) if it fails."""
    try:
        value = _num(header[start:end])
    except ValueError:
        problems.append(f"invalid {label} {header[start:end]!r}")
        return 0
    if not low <= value <= high:
        problems.append(f"{label} {value} out of range")
        return 0
    return value


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
    problems: list[str] = []
    try:  # the common case: every field valid, checked in one go
        mode, uid, gid, mtime = (_num(header[100:108]), _num(header[108:116]),
                                 _num(header[116:124]), _num(header[136:148]))
        valid = (0 <= mode <= _MODE_LIMIT and 0 <= uid < ID_LIMIT and 0 <= gid < ID_LIMIT
                 and -_MTIME_LIMIT <= mtime <= _MTIME_LIMIT)
    except ValueError:
        valid = False
    if not valid:
        mode = _field(header, "mode", 100, 108, 0, _MODE_LIMIT, problems)
        uid = _field(header, "uid", 108, 116, 0, ID_LIMIT - 1, problems)
        gid = _field(header, "gid", 116, 124, 0, ID_LIMIT - 1, problems)
        mtime = _field(header, "mtime", 136, 148, -_MTIME_LIMIT, _MTIME_LIMIT, problems)
    member = Member(
        name=os.fsdecode(name),
        type=typeflag,
        mode=mode & 0o7777,
        uid=uid,
        gid=gid,
        size=size,
        mtime_ns=mtime * 1_000_000_000,
        link=_str(header[157:257]),
        rdev=0,
        xattrs=None,
        data_offset=data_offset,
    )
    if typeflag in (ord("3"), ord("4")):
        major = _field(header, "devmajor", 329, 337, 0, _MAJOR_LIMIT, problems)
        minor = _field(header, "devminor", 337, 345, 0, _MINOR_LIMIT, problems)
        member.rdev = os.makedev(major, minor)
    if global_pax or local_pax:
        _apply_pax(member, {**global_pax, **local_pax}, local_pax, offset, problems)
    if problems:
        member.problem = "; ".join(problems)
    return member


def _apply_pax(
    member: Member,
    pax: dict[str, bytes],
    local: dict[str, bytes],
    offset: int,
    problems: list[str],
) -> None:
    # path, linkpath and size describe one member: never taken from a global header.
    if "path" in local:
        member.name = os.fsdecode(local["path"])
    if "GNU.sparse.name" in local:  # sparse files: `path` is a GNUSparseFile.<pid>/ stand-in
        member.name = os.fsdecode(local["GNU.sparse.name"])
    if "linkpath" in local:
        member.link = os.fsdecode(local["linkpath"])
    if "size" in local:
        try:
            member.size = _pax_int(local["size"])
        except (ValueError, UnicodeDecodeError):
            raise TarDamaged(f"invalid size {local['size'][:40]!r} in PAX header", offset) from None
        if member.size > INT64_MAX:
            raise TarDamaged(f"member size {member.size} out of range", offset)
    for key, low, high in (("uid", 0, ID_LIMIT - 1), ("gid", 0, ID_LIMIT - 1)):
        if key in pax:
            try:
                number = _pax_int(pax[key])
            except (ValueError, UnicodeDecodeError):
                problems.append(f"invalid PAX {key} {pax[key][:40]!r}")
                continue
            if not low <= number <= high:
                problems.append(f"PAX {key} {number} out of range")
            elif key == "uid":
                member.uid = number
            else:
                member.gid = number
    if "mtime" in pax:
        try:
            mtime = _pax_time(pax["mtime"])
        except (ValueError, UnicodeDecodeError):
            problems.append(f"invalid PAX mtime {pax['mtime'][:40]!r}")
        else:
            if -INT64_MAX <= mtime <= INT64_MAX:
                member.mtime_ns = mtime
            else:
                problems.append(f"PAX mtime {pax['mtime'][:40]!r} out of range")
    for key, value in pax.items():
        if key.startswith("SCHILY.xattr."):
            if member.xattrs is None:
                member.xattrs = {}
            member.xattrs[key[13:]] = value
