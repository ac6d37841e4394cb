"""What a file written into `.import/` is, decided from its path and first bytes.

By path (at create, so a bad name fails before any data is copied):

* ``refs/<name...>`` (top-level ``refs/``): a manifest or index to tag as <name>;
* ``index.json`` (any directory): a layout's index, entries merged when complete;
* ``oci-layout`` (any directory): checked, nothing else;
* ``blobs/<alg>/<hex>`` (any depth) or a file named ``<alg>:<hex>``: a blob whose
  content must match that digest (sha256, sha512; others refused);
* anything else: ``AUTO``.

``AUTO`` files are sniffed at their first bytes (holes read as zeros): a tar
(plain, gzip'd or zstd'd) with, within its first `SNIFF_LIMIT` bytes, a member
that `archive_member` accepts is imported as an OCI archive or docker-save tar;
anything else is a plain blob, committed under its sha256. Name a file by its
digest to force blob handling of a layer tar that happens to look like an archive.

`archive_member` is the one rule for which members of an image archive mean
something, used both here and by the importer (`ocifs.importer.archive_stream`):
``oci-layout``, ``index.json``, ``manifest.json``, ``repositories``,
``blobs/<alg>/<hex>``, and docker-save's layers and configs, named by their
digest (``<hex>.json``, ``<hex>/layer.tar``, ``<hex>.tar.gz``, ``sha256:<hex>``,
...; the legacy ``<hex>/json`` and ``<hex>/VERSION`` are read by nobody).
Every other member is ignored with a warning.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from ocifs.errors import InvalidInput, Unsupported
from ocifs.importer.decoder import Decoder
from ocifs.importer.tarstream import Member, TarStream
from ocifs.model import digest as digest_mod
from ocifs.model import reference
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

#: Members whose content is kept in memory and interpreted.
ARCHIVE_DOCUMENTS = ("index.json", "oci-layout", "manifest.json", "repositories")
_DOCKER_FILE = re.compile(r"^(sha256:|sha512:)?[0-9a-f]{64,128}([./].*)?$")
_DOCKER_LEGACY = re.compile(r"^[0-9a-f]{64}/(json|VERSION)$")


class MemberRole(enum.Enum):
    DOCUMENT = "document"  # kept in memory: index.json, manifest.json, ...
    BLOB = "blob"  # blobs/<alg>/<hex>: checked against its name
    DOCKER_FILE = "docker file"  # a docker-save layer or config, known by manifest.json
    LEGACY = "legacy"  # docker-save metadata nobody reads: skipped quietly


def archive_member(name: str) -> tuple[MemberRole, Digest | None] | None:
    """What a (normalized) member name of an image archive is; None: ignore it."""
    if name in ARCHIVE_DOCUMENTS:
        return MemberRole.DOCUMENT, None
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "blobs":
        try:
            return MemberRole.BLOB, digest_mod.from_parts(parts[1], parts[2])
        except (InvalidInput, Unsupported):
            return None
    if _DOCKER_LEGACY.match(name):
        return MemberRole.LEGACY, None
    if _DOCKER_FILE.match(name):
        return MemberRole.DOCKER_FILE, None
    return None


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
        try:
            reference.check_ref_name(ref)
        except InvalidInput as exc:
            raise InvalidInput(f"refs/{ref}: {exc}") from None
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


class _AnyAccepted:
    """Sniffing handler: notes whether any member is one `archive_member` accepts."""

    def __init__(self) -> None:
        self.found = False

    def begin(self, member: Member) -> bool:
        if member.kind in ("file", "symlink", "hardlink") and archive_member(member.name):
            self.found = True
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
    seen = _AnyAccepted()
    tar = TarStream(seen)
    decoder = Decoder(tar)
    try:
        decoder.feed(head)
    except Exception:  # a decoding or parsing failure means "not an archive"
        return seen.found or False
    if seen.found:
        return True
    if tar.done or final or len(head) >= SNIFF_LIMIT:
        return False
    return None
