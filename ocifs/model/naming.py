"""Names in the mounted tree: ref names as nested directories, platform directories.

Ref names may contain anything a JSON string can; a name maps to a directory
path by splitting on `/`. A name that cannot be a path (empty components, `.`
or `..`, NUL, a component over 255 bytes) gets no place under `refs/` and is
reachable under `by-digest/` only; the caller logs why.
"""

from __future__ import annotations

import os

from ocifs.model.descriptor import Platform

NAME_MAX = 255


def ref_path(name: str) -> tuple[str, ...] | None:
    """Path components for a ref name, or None if it cannot be shown as a path."""
    if not name:
        return None
    parts = tuple(name.split("/"))
    for part in parts:
        if part in ("", ".", "..") or "\0" in part:
            return None
        if len(os.fsencode(part)) > NAME_MAX:
            return None
    return parts


def platform_dir(platform: Platform | None, digest_hex: str) -> str:
    """`<os>-<arch>[-<variant>]`, or `unknown-<12 hex>` for children without a platform."""
    if platform is None or not platform.os or not platform.architecture:
        return f"unknown-{digest_hex[:12]}"
    name = f"{platform.os}-{platform.architecture}"
    if platform.variant:
        name += f"-{platform.variant}"
    name = name.replace("/", "_")
    if name in (".", ".."):
        name = f"unknown-{digest_hex[:12]}"
    return name
