"""Names in the mounted tree: the one rule for what can be a file name, ref names
as nested directories, platform directories.

The rule (`name_problem`), applied to every name the tree shows (layer members,
ref name components, platform directories) and, as a last guard, to every
directory listing (`tree.nodes.DirNode`), so a listing and a lookup always
agree: a name is shown only if it is non-empty, not `.` or `..`, has no `/` or
NUL, is at most 255 bytes, and is the canonical spelling of its bytes (the
kernel hands lookups bytes; two names must never encode to the same bytes). A
name that fails is dropped, never escaped, with one warning naming it: an
escaped spelling could collide with a real name. What it named stays reachable
where it has another place (`by-digest/` for images).
"""

from __future__ import annotations

import os

from ocifs.model.descriptor import Platform

NAME_MAX = 255


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a file name in the mount, or None if it can (see above)."""
    if name.isascii() and 0 < len(name) <= NAME_MAX and "/" not in name and "\0" not in name:
        return f"{name!r} is not a file name" if name in (".", "..") else None
    if name in ("", ".", ".."):
        return f"{name!r} is not a file name"
    if "/" in name or "\0" in name:
        return "contains '/' or NUL"
    try:
        encoded = os.fsencode(name)
    except UnicodeError:
        return "cannot be encoded as bytes"
    if len(encoded) > NAME_MAX:
        return f"is longer than {NAME_MAX} bytes"
    if not name.isascii() and os.fsdecode(encoded) != name:
        return "is not the canonical spelling of its bytes"
    return None


def ref_path(name: str) -> tuple[str, ...] | None:
    """Path components for a ref name, or None if it cannot be shown as a path."""
    parts = tuple(name.split("/"))
    if any(name_problem(part) for part in parts):
        return None
    return parts


def platform_dir(platform: Platform | None, digest_hex: str) -> str:
    """`<os>-<arch>[-<variant>]`, or `unknown-<12 hex>` for children without a platform."""
    if platform is None or not platform.os or not platform.architecture:
        return f"unknown-{digest_hex[:12]}"
    name = f"{platform.os}-{platform.architecture}"
    if platform.variant:
        name += f"-{platform.variant}"
    return name  # the caller drops it if `name_problem` objects
