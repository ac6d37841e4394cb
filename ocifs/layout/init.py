"""`ocifs init DIR`: an empty OCI image layout, ready to be mounted and imported into.

Creates `oci-layout`, an empty `index.json` and `blobs/sha256/`, each file
written to a temp file, fsynced and renamed, so a crash leaves either no
layout file or a complete one. An existing layout is left as it is; any other
non-empty directory is refused.
"""

from __future__ import annotations

import json
import os

from ocifs import durable
from ocifs.errors import InvalidInput
from ocifs.importer.staging import staging_dir
from ocifs.model import mediatypes as mt

OCI_LAYOUT = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
EMPTY_INDEX = json.dumps(
    {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}, separators=(",", ":")
).encode()


def _interrupted_init(path: str, names: set[str]) -> bool:
    """What a crashed `ocifs init` leaves (no oci-layout yet): safe to finish."""
    if not names <= {"blobs", "index.json", ".ocifs-staging"}:
        return False
    try:
        with open(os.path.join(path, "index.json"), "rb") as f:
            if f.read() != EMPTY_INDEX:
                return False
    except FileNotFoundError:
        pass
    for root, _dirs, files in os.walk(os.path.join(path, "blobs")):
        if files or root.count(os.sep) - path.count(os.sep) > 2:
            return False
    return True


def init_layout(path: str) -> bool:
    """Create an empty layout at `path`; False if one is already there."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise InvalidInput(f"{path}: exists and is not a directory")
    if os.path.isdir(path):
        names = set(os.listdir(path))
        if "oci-layout" in names:
            from ocifs.sources.layout_dir import LayoutDir

            LayoutDir(path, writable=False)  # a broken layout is reported, not papered over
            return False
        if names and not _interrupted_init(path, names):
            shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
            raise InvalidInput(
                f"{path}: directory is not empty and not an OCI image layout ({shown})"
            )
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InvalidInput(f"{parent}: no such directory")
    durable.makedirs(path)
    durable.makedirs(os.path.join(path, "blobs", "sha256"))
    durable.makedirs(staging_dir(path))
    # index.json first: a directory with oci-layout is a layout, so that file comes last
    durable.replace_file(os.path.join(path, "index.json"), EMPTY_INDEX, staging_dir(path),
                         "init-write")
    durable.replace_file(os.path.join(path, "oci-layout"), OCI_LAYOUT, staging_dir(path),
                         "init-write")
    try:
        os.rmdir(staging_dir(path))
    except OSError:
        pass  # leftovers of an interrupted init: recovered at the first mount
    return True
