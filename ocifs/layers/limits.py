"""Budgets that bound what one layer may cost to index (RELIABILITY promise 11).

A layer over a limit raises LimitExceeded naming the layer and the limit; the
defaults are far above real images (the largest common base images have
~100k members and expand ~3-10x) and far below what would exhaust memory.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    #: tar members per layer (each costs ~0.5 KiB of index memory).
    max_members: int = 2_000_000
    #: bytes of one path component (Linux NAME_MAX); longer names are refused.
    max_name_bytes: int = 255
    #: bytes of a whole member path or link target (Linux PATH_MAX).
    max_path_bytes: int = 4096
    #: bytes of one PAX or GNU long-name/long-link header's data.
    max_header_bytes: int = 1 << 20
    #: decompressed bytes of one layer.
    max_uncompressed: int = 1 << 40
    #: decompressed/compressed ratio once past `ratio_floor` bytes (bomb guard).
    max_ratio: int = 1000
    #: the ratio check starts after this many decompressed bytes.
    ratio_floor: int = 64 << 20


DEFAULT = Limits()
