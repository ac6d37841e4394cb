"""Decide what kind of source a path is (placeholder: layout directories only)."""

from __future__ import annotations

import os

from ocifs.cache import DiskCache
from ocifs.errors import NotAnImage
from ocifs.sources.base import Source


def open_source(path: str, cache: DiskCache) -> Source:
    if os.path.isdir(path):
        from ocifs.sources.layout_dir import LayoutDir

        return LayoutDir(path)
    if not os.path.exists(path):
        raise NotAnImage(f"{path}: no such file or directory")
    raise NotAnImage(f"{path}: not an OCI image layout directory")
