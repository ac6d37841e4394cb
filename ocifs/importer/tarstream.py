"""A push parser for tar streams, fed as bytes arrive (`decoder` decompresses first).

`tarfile` wants to pull from a file object; an import receives bytes pushed by
FUSE writes. This parser keeps only one header block (and PAX/GNU long-name
records, bounded) in memory and hands member data to a handler chunk by chunk,
so an archive of any size is processed in bounded memory as it is written.
Member names are normalised (``./`` stripped); names that would leave the
archive root are reported as-is and left for the handler to refuse.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Protocol

from ocifs.errors import InvalidInput, LimitExceeded

BLOCK = 512
MAX_EXTENDED_HEADER = 1 << 20
MAX_MEMBERS = 1_000_000


@dataclass(slots=True)
class Member:
    name: str
    kind: str  # "file", "dir", "symlink", "hardlink", "other"
    size: int
    linkname: str = ""


class MemberHandler(Protocol):
    def begin(self, member: Member) -> bool:
        """A member starts; return True to receive its data."""
        ...

    def data(self, chunk: memoryview) -> None: ...

    def end(self) -> None: ...


def normalize(name: str) -> str:
    """`./a//b/` -> `a/b`; leading `/` and `..` are kept for the caller to judge."""
    name = name.rstrip("/")
    while name.startswith("./"):
        name = name[2:]
    return "" if name in ("", ".") else posixpath.normpath(name)


def _octal(field: bytes, what: str) -> int:
    if field and field[0] & 0x80:  # base-256 (GNU) for large values
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip(b" \0")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise InvalidInput(f"tar header: invalid {what} field {text!r}") from None


def _cstr(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise InvalidInput("tar: malformed PAX header") from None
        if length <= 0 or pos + length > len(data):
            raise InvalidInput("tar: malformed PAX header")
        record = data[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


_KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"1": "hardlink", b"2": "symlink", b"5": "dir"}


class TarStream:
    """Parses a tar stream pushed with `feed`; `done` once the end marker is seen."""

    def __init__(self, handler: MemberHandler) -> None:
        self._handler = handler
        self._header = bytearray()
        self._remaining = 0  # data bytes left in the current member
        self._padding = 0  # padding bytes left after it
        self._delivering = False
        self._extended: bytearray | None = None  # collecting a PAX / GNU long-name record
        self._extended_kind = b""
        self._pax: dict[str, str] = {}
        self._longname: str | None = None
        self._longlink: str | None = None
        self.members = 0
        self.done = False

    @property
    def at_boundary(self) -> bool:
        return not self._header and self._remaining == 0 and self._padding == 0

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view and not self.done:
            if self._remaining:
                n = min(self._remaining, len(view))
                self._member_data(view[:n])
                view = view[n:]
                self._remaining -= n
                if self._remaining == 0:
                    self._member_end()
            elif self._padding:
                n = min(self._padding, len(view))
                view = view[n:]
                self._padding -= n
            else:
                n = min(BLOCK - len(self._header), len(view))
                self._header += view[:n]
                view = view[n:]
                if len(self._header) == BLOCK:
                    block = bytes(self._header)
                    self._header.clear()
                    self._on_header(block)

    def _member_data(self, chunk: memoryview) -> None:
        if self._extended is not None:
            self._extended += chunk
        elif self._delivering:
            self._handler.data(chunk)

    def _member_end(self) -> None:
        if self._extended is not None:
            data, kind = bytes(self._extended), self._extended_kind
            self._extended = None
            if kind == b"x":
                self._pax.update(_parse_pax(data))
            elif kind == b"L":
                self._longname = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif kind == b"K":
                self._longlink = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif self._delivering:
            self._delivering = False
            self._handler.end()

    def _on_header(self, block: bytes) -> None:
        if block == bytes(BLOCK):
            self.done = True  # end-of-archive marker; what follows is padding
            return
        stored = _octal(block[148:156], "checksum")
        computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
        if stored != computed:
            raise InvalidInput("not a tar archive (header checksum mismatch)")
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise LimitExceeded(f"archive has over {MAX_MEMBERS} members")
        typeflag = block[156:157]
        size = _octal(block[124:136], "size")
        if size < 0:
            raise InvalidInput("tar header: negative size")
        self._padding = -size % BLOCK
        self._remaining = size
        if typeflag in (b"x", b"g", b"L", b"K"):
            if size > MAX_EXTENDED_HEADER:
                raise LimitExceeded(f"tar extended header of {size} bytes")
            self._extended = bytearray() if typeflag != b"g" else None
            self._extended_kind = typeflag
            if size == 0:
                self._member_end()
            return
        name = _cstr(block[0:100])
        if block[257:262] == b"ustar" and block[345:500].strip(b"\0"):
            name = _cstr(block[345:500]) + "/" + name
        linkname = _cstr(block[157:257])
        name = self._pax.pop("path", "") or self._longname or name
        linkname = self._pax.pop("linkpath", "") or self._longlink or linkname
        if "size" in self._pax:
            try:
                size = int(self._pax.pop("size"))
            except ValueError:
                raise InvalidInput("tar: invalid PAX size") from None
            self._remaining, self._padding = size, -size % BLOCK
        self._pax.clear()
        self._longname = self._longlink = None
        kind = _KINDS.get(typeflag, "other")
        member = Member(normalize(name), kind, size if kind == "file" else 0, linkname)
        self._delivering = self._handler.begin(member) and kind == "file"
        if self._remaining == 0:
            self._member_end()
