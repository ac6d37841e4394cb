"""A tar archive laid out in advance: exact size and byte positions before any read.

Used by `image.tar` exports (`ocifs.export`). Every member's header is built
from its name and size alone, so the archive is a fixed sequence of segments:
header bytes (in memory) and member bodies (blobs, read on demand). A read at
any offset bisects the segment table; nothing is generated from the start and
nothing is written to disk. FUSE-free and I/O-free.

The format is what Go's `archive/tar` writes for containerd's exporter and
Docker 25+ `docker save`, with every variable field fixed so the bytes depend
only on the member list:

- POSIX ustar headers (`ustar\\0` + `00`), owner and group 0/0 with empty
  names, mtime 0 (1970-01-01), mode 0644 for files and 0755 for directories,
  no device numbers;
- `blobs/sha256/<64 hex>` is 77 bytes and fits the 100-byte name field; a
  longer name is split into the ustar prefix field at a `/` when the parts fit;
  names that cannot be split (`blobs/sha512/<128 hex>`: its base name alone is
  128 bytes) and sizes of 8 GiB or more get a PAX extended header (`x`) with
  `path=` / `size=` records first, named `PaxHeaders/<base name>` cut to 100
  bytes; the ustar header after it holds the name cut to 100 bytes and size 0
  if the size did not fit;
- each body is padded with zeros to a 512-byte boundary; the archive ends with
  two zero blocks and is not padded further (Go's writer, not GNU tar's 10 KiB
  records).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ocifs.errors import InvalidInput

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
FILE_MODE = 0o644
DIR_MODE = 0o755
#: largest size the 11-digit octal field holds
_MAX_OCTAL_SIZE = 0o77777777777

Body = TypeVar("Body")


def padding(size: int) -> int:
    """Zero bytes after a body of `size` bytes up to the next block."""
    return -size % BLOCK


def _octal(value: int, width: int) -> bytes:
    """`width-1` octal digits and a NUL, as Go and GNU tar write them."""
    return b"%0*o\0" % (width - 1, value)


def _checksum(header: bytearray) -> bytes:
    """Header checksum (sum of bytes, the field itself as spaces): 6 digits, NUL, space."""
    header[148:156] = b" " * 8
    return b"%06o\0 " % sum(header)


def _split_name(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) fields for a path, or None if it needs a PAX record."""
    if len(name) <= 100:
        return b"", name
    # The prefix takes everything up to some '/', the name field the rest.
    for i in range(min(len(name) - 1, 155), 0, -1):
        if name[i : i + 1] == b"/" and len(name) - i - 1 <= 100:
            return name[:i], name[i + 1 :]
    return None


def _ustar(name: bytes, prefix: bytes, size: int, mode: int, typeflag: bytes) -> bytes:
    header = bytearray(BLOCK)
    header[0 : len(name)] = name
    header[100:108] = _octal(mode, 8)
    header[108:116] = _octal(0, 8)  # uid
    header[116:124] = _octal(0, 8)  # gid
    header[124:136] = _octal(size, 12)
    header[136:148] = _octal(0, 12)  # mtime
    header[156:157] = typeflag
    header[257:263] = b"ustar\0"
    header[263:265] = b"00"
    header[329:337] = _octal(0, 8)  # devmajor
    header[337:345] = _octal(0, 8)  # devminor
    header[345 : 345 + len(prefix)] = prefix
    header[148:156] = _checksum(header)
    return bytes(header)


def _pax_record(key: str, value: bytes) -> bytes:
    """`<len> <key>=<value>\\n` where <len> counts the whole record, itself included."""
    body = b" " + key.encode() + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length).encode()) + len(body) != length:
        length += 1
    return str(length).encode() + body


def member_header(name: str, size: int, *, directory: bool = False) -> bytes:
    """Header block(s) of one member (PAX header and its padded body first if needed)."""
    raw = name.encode()
    if b"\0" in raw:
        raise InvalidInput(f"tar member name {name!r} contains NUL")
    mode, typeflag = (DIR_MODE, b"5") if directory else (FILE_MODE, b"0")
    split = _split_name(raw)
    records = b""
    if split is None:
        records += _pax_record("path", raw)
        split = (b"", raw[:100])
    if size > _MAX_OCTAL_SIZE:
        records += _pax_record("size", str(size).encode())
    if not records:
        return _ustar(split[1], split[0], size, mode, typeflag)
    base = raw.rstrip(b"/").rsplit(b"/", 1)[-1]
    pax_name = (b"PaxHeaders/" + base)[:100]
    pax = _ustar(pax_name, b"", len(records), FILE_MODE, b"x")
    body = records + b"\0" * padding(len(records))
    shown_size = size if size <= _MAX_OCTAL_SIZE else 0
    return pax + body + _ustar(split[1], split[0], shown_size, mode, typeflag)


@dataclass(frozen=True, slots=True)
class Member(Generic[Body]):
    """One archive member: a directory, in-memory bytes, or a body read on demand."""

    name: str
    size: int = 0
    directory: bool = False
    data: bytes | None = None
    #: what to read the body from (for members without `data`)
    body: Body | None = None


@dataclass(slots=True)
class Segment(Generic[Body]):
    """A run of bytes at `start`: in-memory `data`, or `length` bytes of `body`."""

    start: int
    length: int
    data: bytes | None = None
    body: Body | None = None


@dataclass(slots=True)
class TarLayout(Generic[Body]):
    """The archive as a sorted segment table; see the module docstring."""

    segments: list[Segment[Body]] = field(default_factory=list)
    size: int = 0
    _starts: list[int] = field(default_factory=list)

    @classmethod
    def build(cls, members: list[Member[Body]]) -> TarLayout[Body]:
        """Members in the given order (the caller fixes the order)."""
        layout: TarLayout[Body] = cls()
        pending = bytearray()  # header and padding bytes not yet emitted
        for m in members:
            size = 0 if m.directory else (len(m.data) if m.data is not None else m.size)
            pending += member_header(m.name, size, directory=m.directory)
            if m.directory:
                continue
            if m.data is not None:
                pending += m.data
            else:
                layout._add_bytes(bytes(pending))
                pending.clear()
                layout._add_body(m.body, size)
            pending += b"\0" * padding(size)
        pending += END_OF_ARCHIVE
        layout._add_bytes(bytes(pending))
        layout._starts = [s.start for s in layout.segments]
        return layout

    def _add_bytes(self, data: bytes) -> None:
        if data:
            self.segments.append(Segment(self.size, len(data), data=data))
            self.size += len(data)

    def _add_body(self, body: Body | None, size: int) -> None:
        if size:
            self.segments.append(Segment(self.size, size, body=body))
            self.size += size

    def locate(self, offset: int) -> int:
        """Index of the segment holding byte `offset` (0 <= offset < size)."""
        return bisect.bisect_right(self._starts, offset) - 1
