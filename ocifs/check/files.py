"""The files of a layout directory's `blobs/`: stray entries and non-regular files.

Only a layout directory has files of its own to check; archives are checked
through their member tables. Nothing is opened here (`lstat` only): what
survives is read later with `open_regular`, so a FIFO or a symlink planted
under `blobs/` is reported, never followed or opened.
"""

from __future__ import annotations

import os
import stat

from ocifs.check.findings import PROBLEM, WARNING, Report
from ocifs.codec.blobio import file_type
from ocifs.errors import InvalidInput, Unsupported
from ocifs.model import digest as digest_mod
from ocifs.model.digest import HEX_LENGTHS, Digest


def _what(mode: int) -> str:
    return "a regular file" if stat.S_ISREG(mode) else file_type(mode)


def _entries(path: str, report: Report, name: str) -> list[tuple[str, int]] | None:
    """(name, lstat mode) of a directory's entries, sorted; None (reported) if unreadable."""
    try:
        with os.scandir(path) as it:
            out = [(e.name, e.stat(follow_symlinks=False).st_mode) for e in it]
    except OSError as exc:
        report.add(PROBLEM, name, f"cannot list: {exc.strerror}")
        return None
    return sorted(out)


def blob_files(layout: str, report: Report) -> list[Digest]:
    """Digests of the regular files under blobs/<alg>/; everything else is reported."""
    blobs = os.path.join(layout, "blobs")
    try:
        st = os.lstat(blobs)
    except FileNotFoundError:
        report.add(PROBLEM, "blobs/", "missing (an OCI layout must have a blobs directory)")
        return []
    if not stat.S_ISDIR(st.st_mode):
        report.add(PROBLEM, "blobs", f"is {_what(st.st_mode)}, not a directory")
        return []
    found: list[Digest] = []
    for alg, mode in _entries(blobs, report, "blobs/") or []:
        where = f"blobs/{alg}"
        if not stat.S_ISDIR(mode):
            report.add(PROBLEM, where, f"stray entry: {_what(mode)} where only digest "
                       "algorithm directories belong")
            continue
        if alg not in HEX_LENGTHS:
            report.add(WARNING, f"{where}/", f"digest algorithm {alg!r} is not supported; "
                       "its blobs were not checked")
            continue
        for name, file_mode in _entries(os.path.join(blobs, alg), report, f"{where}/") or []:
            path = f"{where}/{name}"
            try:
                digest = digest_mod.from_parts(alg, name)
            except (InvalidInput, Unsupported):
                report.add(PROBLEM, path, f"stray {_what(file_mode)}: the name is not a "
                           f"{alg} digest")
                continue
            if not stat.S_ISREG(file_mode):
                report.add(PROBLEM, path, f"is {_what(file_mode)}; blobs must be regular files "
                           "(not read)")
                continue
            found.append(digest)
    return found
