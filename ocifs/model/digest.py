"""Digest value object: strict parsing, hashing and safe path fragments.

Every path that names a blob is built from a `Digest` that passed `parse`, so a
digest string from an untrusted document can never traverse outside `blobs/`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ocifs.errors import InvalidInput, Unsupported

if TYPE_CHECKING:
    from hashlib import _Hash

# Registered algorithms of the OCI image spec and their hex lengths.
HEX_LENGTHS = {"sha256": 64, "sha512": 128}

# Grammar of the image spec: algorithm ":" encoded.
_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_LOWER_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    """A validated `algorithm:hex` digest of a registered algorithm."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def path_fragment(self) -> str:
        """`<alg>/<hex>`: the blob's path under `blobs/`, safe by construction."""
        return f"{self.algorithm}/{self.hex}"

    def hasher(self) -> _Hash:
        return hashlib.new(self.algorithm)

    def matches(self, data: bytes) -> bool:
        return hashlib.new(self.algorithm, data).hexdigest() == self.hex


def parse(text: object) -> Digest:
    """Parse a digest string, refusing anything ocifs cannot verify.

    Raises `InvalidInput` for strings outside the spec's grammar or with a
    malformed encoded part, `Unsupported` for well-formed digests of algorithms
    other than sha256 and sha512.
    """
    if not isinstance(text, str) or not _GRAMMAR.match(text):
        raise InvalidInput(f"invalid digest {text!r}")
    algorithm, encoded = text.split(":", 1)
    length = HEX_LENGTHS.get(algorithm)
    if length is None:
        raise Unsupported(f"unsupported digest algorithm {algorithm!r} in {text!r}")
    if len(encoded) != length or not _LOWER_HEX.match(encoded):
        raise InvalidInput(f"invalid {algorithm} digest {text!r}")
    return Digest(algorithm, encoded)


def from_parts(algorithm: str, hex_: str) -> Digest:
    """Parse `<alg>/<hex>` as found in a `blobs/` path."""
    return parse(f"{algorithm}:{hex_}")


def of_bytes(data: bytes, algorithm: str = "sha256") -> Digest:
    return Digest(algorithm, hashlib.new(algorithm, data).hexdigest())


EMPTY_SHA256 = of_bytes(b"")
