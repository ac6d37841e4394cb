"""Budgets that bound what one layer may cost to index (RELIABILITY promise 11).

A layer over a limit raises LimitExceeded naming the layer and the limit; the
defaults are far above real images (the largest common base images have
~100k members and expand ~3-10x) and far below what would exhaust memory.
There is no compression-ratio limit: a layer of zeros legitimately compresses
1000:1 (zstd: far more). Memory is bounded by design (fixed-size decoder
buffers, see decode.py), the unpacked copy's disk by the cache's unpack limit
(and zeros are holes in it); what remains bounded by these budgets is time and
total decompressed bytes. docs/layers.md lists them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    #: tar members per layer (index memory per member: docs/layers.md).
    max_members: int = 2_000_000
    #: bytes of a whole member path or link target (Linux PATH_MAX); longer
    #: members are hidden with a warning (a component over 255 bytes, too:
    #: `model.naming.name_problem`).
    max_path_bytes: int = 4096
    #: bytes of one PAX or GNU long-name/long-link header's data.
    max_header_bytes: int = 1 << 20
    #: decompressed bytes of one layer.
    max_uncompressed: int = 1 << 40
    #: seconds one indexing pass may decompress for (a bomb hidden in a real
    #: tar member: many TiB of zeros); 1 TiB of zeros decodes in ~10 minutes here.
    max_index_seconds: float = 1800.0


DEFAULT = Limits()
