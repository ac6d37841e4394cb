"""Decide what kind of source a path is, by content, never by file name.

A directory is an OCI image layout. A file is opened as a tar (plain, gzip'd or zstd'd;
see `tarmembers.ArchiveFile`, which refuses anything else) and classified by the
members it holds:

- `manifest.json` and no `index.json`/`oci-layout`: legacy `docker save`;
- `index.json`/`oci-layout` and `manifest.json`: Docker 25+ `docker save`
  (an OCI layout plus manifest.json);
- `index.json`/`oci-layout` only: an OCI archive.

Anything else is refused with NotAnImage and one line saying what it is not.
Blocking (indexes the archive on first use): call from a worker thread or
before the trio loop starts.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import TYPE_CHECKING

from ocifs.cache import DiskCache
from ocifs.codec.blobio import file_type
from ocifs.errors import InvalidInput, NotAnImage
from ocifs.model import mediatypes as mt
from ocifs.sources.base import Source

if TYPE_CHECKING:
    from ocifs.sources.tarmembers import ArchiveFile

log = logging.getLogger(__name__)


def open_source(path: str, cache: DiskCache) -> Source:
    """The Source for `path`; NotAnImage/InvalidInput (one line) if it cannot be one."""
    if os.path.isdir(path):
        from ocifs.sources.layout_dir import LayoutDir

        return LayoutDir(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotAnImage(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise NotAnImage(f"{path}: cannot use: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the open; a socket cannot be opened
        raise NotAnImage(
            f"{path}: is {file_type(st.st_mode)}, not an image layout directory or archive"
        )
    # imported here: the archive readers (indexed_gzip, zstandard, isal) cost a
    # layout directory's mount start-up time it does not need
    from ocifs.sources.tarmembers import ArchiveFile

    archive = ArchiveFile.open(path, cache)
    try:
        source = _classify(archive, cache)
    except BaseException:
        archive.close()
        raise
    if archive.table.damage:
        # Mountable (the index was read), but blobs past the damage will fail with EIO.
        log.warning("%s: %s; blobs after that point are unavailable", path, archive.table.damage)
    return source


def _classify(archive: ArchiveFile, cache: DiskCache) -> Source:
    names = archive.table.files.keys() | archive.table.links.keys()
    oci = "oci-layout" in names or "index.json" in names
    docker = "manifest.json" in names
    if oci and docker:
        from ocifs.sources.docker_archive import DockerOciArchive

        return DockerOciArchive(archive, cache)
    if docker:
        from ocifs.sources.docker_archive import DockerArchive

        return DockerArchive(archive, cache)
    if oci:
        from ocifs.sources.oci_archive import OciArchive

        return OciArchive(archive)
    if archive.table.damage:
        raise InvalidInput(
            f"{archive.path}: {archive.table.damage}; no oci-layout, index.json or "
            "manifest.json before that point"
        )
    raise NotAnImage(_not_an_image(archive))


def _not_an_image(archive: ArchiveFile) -> str:
    what = {mt.Compression.GZIP: "a gzip'd tar", mt.Compression.ZSTD: "a zstd'd tar"}.get(
        archive.compression, "a tar"
    )
    if "repositories" in archive.table.files:
        return (
            f"{archive.path}: not a supported image archive ({what} with `repositories` "
            "but no manifest.json: a pre-1.10 docker save)"
        )
    return (
        f"{archive.path}: not an image archive ({what} without oci-layout, index.json "
        "or manifest.json)"
    )
