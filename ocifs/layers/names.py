"""Member name normalisation, clamped inside the layer root as containerd does.

containerd extracts `hdr.Name` at `filepath.Join("/", Clean(name))` under the
root: `./` prefixes and `//` vanish, `..` cannot climb above the root, and a
leading `/` is relative to the root. We compute the same path, and report
whether the name tried to escape so the caller can log it.
"""

from __future__ import annotations


def normalise(name: str) -> tuple[str, bool]:
    """(relative path without leading/trailing '/', "" for the root; escaped?)."""
    escaped = name.startswith("/")
    out: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            else:
                escaped = True
            continue
        out.append(part)
    if not out and not escaped_by_dotdot(name):
        escaped = False  # "/" or "./" names the root itself: nothing to clamp
    return "/".join(out), escaped


def escaped_by_dotdot(name: str) -> bool:
    """Whether `..` components climb above the root (a leading '/' alone does not count)."""
    depth = 0
    for part in name.split("/"):
        if part == "..":
            if depth == 0:
                return True
            depth -= 1
        elif part not in ("", "."):
            depth += 1
    return False


WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
