"""What a file written into `.import/` is, decided from its path and first bytes.

By path (at create, so a bad name fails before any data is copied):

* ``refs/<name...>`` (top-level ``refs/``): a manifest or index to tag as <name>;
* ``index.json`` (any directory): a layout's index, entries merged when complete;
* ``oci-layout`` (any directory): checked, nothing else;
* ``blobs/<alg>/<hex>`` (any depth) or a file named ``<alg>:<hex>``: a blob whose
  content must match that digest (sha256, sha512; others refused);
* anything else: ``AUTO``.

``AUTO`` files are sniffed at their first bytes: a tar (plain, gzip'd or zstd'd) whose first
member is named like an image archive's (``oci-layout``, ``index.json``,
``manifest.json``, ``repositories``, ``blobs/...``, ``[sha256:]<hex>...``) is imported
as an OCI archive or docker-save tar; anything else is a plain blob, committed
under its sha256. Name a file by its digest to force blob handling of a layer
tar that happens to look like an archive.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from ocifs.errors import InvalidInput, Unsupported
from ocifs.importer.decoder import Decoder
from ocifs.importer.tarstream import Member, TarStream
from ocifs.model import digest as digest_mod
from ocifs.model.digest import Digest
from ocifs.model.naming import ref_path


class Kind(enum.Enum):
    BLOB = "blob"
    INDEX = "index.json"
    LAYOUT_MARKER = "oci-layout"
    REF = "ref"
    AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Role:
    kind: Kind
    digest: Digest | None = None  # BLOB: the digest the content must have
    ref: str = ""  # REF: the name to tag

    @property
    def algorithm(self) -> str:
        return self.digest.algorithm if self.digest else "sha256"


_DIGEST_LIKE = re.compile(r"^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
_HEXISH = re.compile(r"^[0-9a-fA-F]{32,}$")
_ARCHIVE_FIRST = re.compile(
    r"^(oci-layout|index\.json|manifest\.json|repositories|blobs(/.*)?"
    r"|(sha256:|sha512:)?[0-9a-f]{64,128}([./].*)?)$"
)


#: Algorithm names a user may mean in `<alg>:<hex>` (registered or not, any case).
_DIGEST_ALGORITHMS = frozenset({"sha256", "sha512", "sha384", "sha1", "md5", "blake3"})


def _digest_name(name: str) -> Digest | None:
    """`sha256:<hex>` names are digests; `image:latest` is just a name.

    A name that looks like a digest but is not a valid one (`SHA256:<hex>`,
    `sha256:`, a stray space, a short or non-hex encoding) is refused: storing it
    as an unnamed blob would silently skip the verification the user asked for.
    """
    if ":" not in name:
        return None
    algorithm, _, encoded = name.partition(":")
    looks = (
        algorithm.strip().lower() in _DIGEST_ALGORITHMS
        or _HEXISH.match(encoded.strip()) is not None
    )
    m = _DIGEST_LIKE.match(name)
    if not looks and (m is None or m.group(1) not in digest_mod.HEX_LENGTHS):
        return None
    try:
        return digest_mod.parse(name)
    except InvalidInput:
        raise InvalidInput(
            f"{name!r}: looks like a digest but is not a valid one (lower-case "
            "<algorithm>:<hex>, nothing around it)"
        ) from None


def role_of(path: tuple[str, ...]) -> Role:
    """The role of a file at `path` (components below `.import/`). Raises on bad names."""
    name = path[-1]
    if path[0] == "refs" and len(path) > 1:
        ref = "/".join(path[1:])
        if ref_path(ref) is None:
            raise InvalidInput(f"refs/{ref}: not a valid ref name")
        return Role(Kind.REF, ref=ref)
    if name == "index.json":
        return Role(Kind.INDEX)
    if name == "oci-layout":
        return Role(Kind.LAYOUT_MARKER)
    if len(path) >= 3 and path[-3] == "blobs" and not name.startswith("."):
        return Role(Kind.BLOB, digest=digest_mod.from_parts(path[-2], name))
    digest = _digest_name(name)
    if digest is not None:
        return Role(Kind.BLOB, digest=digest)
    return Role(Kind.AUTO)


def check_mkdir(path: tuple[str, ...]) -> None:
    """`blobs/<alg>/` must name a supported algorithm: fail `cp -r` early otherwise."""
    if len(path) >= 2 and path[-2] == "blobs" and not path[-1].startswith("."):
        alg = path[-1]
        if alg not in digest_mod.HEX_LENGTHS:
            if re.fullmatch(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*", alg):
                raise Unsupported(f"blobs/{alg}: unsupported digest algorithm {alg!r}")
            raise InvalidInput(f"blobs/{alg}: not a digest algorithm")


class _FirstMember:
    def __init__(self) -> None:
        self.name: str | None = None

    def begin(self, member: Member) -> bool:
        if self.name is None and member.name:
            self.name = member.name
        return False

    def data(self, chunk: memoryview) -> None:
        pass

    def end(self) -> None:
        pass


#: How many leading bytes `sniff_archive` may need before it must decide.
SNIFF_LIMIT = 256 * 1024


def sniff_archive(head: bytes, final: bool) -> bool | None:
    """True if `head` starts an image archive, False if not, None if more bytes are needed.

    `final` means no more bytes will come (decide with what there is).
    """
    first = _FirstMember()
    tar = TarStream(first)
    decoder = Decoder(tar)
    try:
        decoder.feed(head)
    except Exception:  # a decoding or parsing failure means "not an archive"
        return False
    if first.name is not None:
        return bool(_ARCHIVE_FIRST.match(first.name))
    if tar.done or final or len(head) >= SNIFF_LIMIT:
        return False
    return None
