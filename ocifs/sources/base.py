"""The small read interface every kind of image source implements.

A source presents itself as an OCI image layout: the raw bytes of `oci-layout`
and `index.json`, and blobs addressed by digest. Sources that lack some of these
(a legacy `docker save` tar has no manifests) synthesize them and say so via
`synthesized()`. Nothing here knows about FUSE.

Thread-safety: `BlobReader.pread`, `open_blob`, `blob_size` and `list_blobs`
and `index_bytes` may be called from worker threads concurrently (documents,
blob listings and a changed index.json are read off the trio thread);
`index_changed` (one stat) and `blobs_changed` are called on the trio thread. No method may block
on a file another program controls: opens are non-blocking and anything but a
regular file is refused (`open_regular`).
Remote sources (`remote = True`, registries) may wait on the network in any
method but `index_changed`; the tree calls those only from worker threads.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable

from ocifs.codec.blobio import BlobReader
from ocifs.model.digest import Digest


class Source(ABC):
    """An image source seen as an OCI layout. See the module docstring."""

    #: "layout", "oci-archive" or "docker-archive"; shown in logs.
    kind: str = ""
    #: whether `.import/` is offered (layout directories only).
    writable: bool = False
    #: True when `open_blob(...).pread` may wait on the network (registries): the
    #: tree then calls it in worker threads, and such readers verify blobs
    #: themselves (BlobAccess skips its own sequential check).
    remote: bool = False

    def __init__(self, path: str) -> None:
        self.path = path

    @abstractmethod
    def oci_layout_bytes(self) -> bytes:
        """Raw `oci-layout` file (synthesized for sources that lack one)."""

    @abstractmethod
    def index_bytes(self) -> bytes:
        """Raw `index.json` (synthesized for legacy docker-save archives)."""

    def index_changed(self) -> bool:
        """Cheap check whether `index.json` changed since the last `index_bytes()`."""
        return False

    def blobs_changed(self) -> bool:
        """Cheap check whether the stored blob set changed since the last `list_blobs()`
        (blobs added or removed by another program); asked only where blobs/ is listed."""
        return False

    @abstractmethod
    def blob_size(self, digest: Digest) -> int | None:
        """Size of the stored blob, or None if it is not present."""

    @abstractmethod
    def open_blob(self, digest: Digest) -> BlobReader:
        """Random access to a blob. Raises `BlobUnavailable` if it cannot be read."""

    @abstractmethod
    def list_blobs(self) -> Iterable[Digest]:
        """Every blob present in the source (for the `blobs/` directory)."""

    def synthesized(self, digest: Digest) -> bool:
        """True for blobs ocifs made up (legacy docker-save manifests)."""
        return False

    def identity(self) -> str:
        """A string that changes when the source's content may have changed.

        Used to key persistent caches of derived data for archive sources.
        """
        st = os.stat(self.path)
        return (
            f"{os.path.realpath(self.path)}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        )

    def stop(self) -> None:  # noqa: B027 - optional hook; most sources run nothing
        """Unmounting: end background work (downloads) now, without waiting for it.

        Called on the trio thread before `close()`, so that no read waiting on
        that work keeps a worker thread -- and with it the daemon -- alive.
        """

    def close(self) -> None:  # noqa: B027 - optional hook; most sources hold nothing
        """Release file descriptors."""
