"""What is mounted where, from `/proc/self/mountinfo` (for `ocifs umount`, `list`, `status`).

The kernel's table is the only reliable witness: `os.path.ismount()` stats the
mountpoint, which fails with ENOTCONN once a FUSE daemon has died, and a dead
mount is exactly the one a user needs to remove. ocifs mounts are recognised by
their type, `fuse.ocifs` (the `subtype=ocifs` mount option); their source
column is the image source (`fsname=`, see `ocifs.mount`).
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass

from ocifs.errors import MountError

MOUNTINFO = "/proc/self/mountinfo"
OCIFS_FSTYPE = "fuse.ocifs"

_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as `\\ooo`."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class MountEntry:
    """One line of mountinfo."""

    mountpoint: str
    fstype: str
    source: str
    mount_options: tuple[str, ...]
    super_options: tuple[str, ...]

    @property
    def is_ocifs(self) -> bool:
        return self.fstype == OCIFS_FSTYPE

    @property
    def read_only(self) -> bool:
        return "ro" in self.mount_options or "ro" in self.super_options

    @property
    def user_id(self) -> int | None:
        """The uid that owns a FUSE mount (`user_id=` super option)."""
        for opt in self.super_options:
            if opt.startswith("user_id="):
                try:
                    return int(opt.split("=", 1)[1])
                except ValueError:
                    return None
        return None


def parse(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 4:
            continue
        entries.append(
            MountEntry(
                mountpoint=_unescape(fields[4]),
                fstype=_unescape(fields[sep + 1]),
                source=_unescape(fields[sep + 2]),
                mount_options=tuple(fields[5].split(",")),
                super_options=tuple(fields[sep + 3].split(",")),
            )
        )
    return entries


def read() -> list[MountEntry]:
    with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
        return parse(f.read())


def find(path: str) -> MountEntry | None:
    """The mount whose mountpoint is `path` (the topmost one if stacked), or None.

    `path` is compared as given (made absolute) and with its parent resolved,
    so a dead mountpoint, which cannot be stat'ed, still matches.
    """
    absolute = os.path.abspath(path)
    candidates = {
        absolute,
        os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute)),
        os.path.realpath(absolute),
    }
    found = None
    for entry in read():
        if entry.mountpoint in candidates:
            found = entry  # later lines are mounted on top of earlier ones
    return found


def find_ocifs(path: str, *, unmounting: bool = False) -> MountEntry:
    """The ocifs mount (live or dead) at `path`; MountError naming what is there instead.

    `unmounting`: the refusal also names the other mount's source and says it is
    left alone (`ocifs umount`)."""
    entry = find(path)
    if entry is None:
        absolute = os.path.abspath(path)
        around = _enclosing_ocifs(absolute)
        if around is not None:
            raise MountError(
                f"{absolute}: not a mountpoint; it is inside the ocifs mount {around.mountpoint}"
            )
        mounted_at = [e.mountpoint for e in ocifs_mounts() if e.source == absolute]
        if mounted_at:
            raise MountError(
                f"{absolute}: not a mountpoint; it is the source of the ocifs mount "
                f"{' and '.join(mounted_at)}"
            )
        raise MountError(f"{absolute}: not mounted")
    if entry.is_ocifs:
        return entry
    if unmounting:
        raise MountError(
            f"{entry.mountpoint}: not an ocifs mount (it is a {entry.fstype} mount of "
            f"{entry.source}); not unmounting it"
        )
    raise MountError(f"{entry.mountpoint}: not an ocifs mount (it is {entry.fstype})")


def _enclosing_ocifs(absolute: str) -> MountEntry | None:
    """The innermost mount holding `absolute` if it is an ocifs mount (`ocifs status .`
    run in `MNT/refs`), from the table alone: a dead mount cannot be stat'ed."""
    best = None
    for entry in read():
        prefix = entry.mountpoint.rstrip("/") + "/"
        if absolute.startswith(prefix) and (
            best is None or len(entry.mountpoint) >= len(best.mountpoint)
        ):
            best = entry
    return best if best is not None and best.is_ocifs else None


def ocifs_mounts(uid: int | None = None) -> list[MountEntry]:
    """Every ocifs mount, or those owned by `uid`."""
    return [
        e for e in read() if e.is_ocifs and (uid is None or e.user_id in (uid, None))
    ]


def is_dead(mountpoint: str) -> bool:
    """A FUSE mount whose daemon is gone answers ENOTCONN to everything."""
    try:
        os.stat(mountpoint)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False
