"""`-o symlinks=contained`: show symlink targets that stay inside the image's root.

By default a symlink shows the target stored in the layer, byte for byte, so
`cp -a`, `rsync -l` and `tar` copy the image faithfully. But an absolute target
(`etc/x -> /etc/os-release`) is resolved by the kernel on the host: a file
manager shows, and `gio copy` copies, the host's file. With the option, every
target that would leave the image's root is shown rewritten as a relative path
from the link's own directory to the same place inside the root, resolved
lexically as if the root were `/` (`..` at the root stays there, as in a
chroot). Relative targets that stay inside are shown unchanged.
"""

from __future__ import annotations

import posixpath

STORED = "stored"
CONTAINED = "contained"
POLICIES = (STORED, CONTAINED)


def contained_target(link_path: str, target: str) -> str:
    """The target of the link at `link_path` (relative to the image root), kept inside it."""
    if not target:
        return target
    link_dir = [p for p in link_path.split("/")[:-1] if p]
    absolute = target.startswith("/")
    resolved = [] if absolute else list(link_dir)
    escaped = absolute
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            else:
                escaped = True
            continue
        resolved.append(part)
    if not escaped:
        return target
    return posixpath.relpath("/" + "/".join(resolved), "/" + "/".join(link_dir))
