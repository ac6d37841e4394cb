"""An OCI image layout directory as a Source.

Every file is opened with `base.open_regular`: a symlink planted under
`blobs/` is never followed, a FIFO, socket or device is refused without being
opened (a swap between the check and the open is caught by the fstat after an
open that cannot block). Paths are built only from validated digests.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator

from ocifs.codec.blobio import FileStamp, StampedRegionReader, open_regular, stamp_of
from ocifs.errors import BlobUnavailable, InvalidInput, NotAnImage, NotRegularFile
from ocifs.model import digest as digest_mod
from ocifs.model import documents
from ocifs.model.digest import Digest
from ocifs.sources.base import Source

log = logging.getLogger(__name__)


class OwnedFileReader(StampedRegionReader):
    """A whole blob file whose descriptor this reader owns, with its identity at open."""

    __slots__ = ()

    def __init__(self, fd: int, size: int, stamp: FileStamp) -> None:
        super().__init__(fd, 0, size, stamp)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _read_small(path: str, what: str) -> bytes:
    try:
        fd, st = open_regular(path)
    except FileNotFoundError:
        raise NotAnImage(f"{path}: missing (not an OCI image layout)") from None
    except NotRegularFile as exc:
        if "a symlink" in str(exc):
            raise InvalidInput(f"{path}: is a symlink; {what} must be a regular file") from None
        raise InvalidInput(str(exc)) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidInput(f"{path}: is a symlink; {what} must be a regular file") from None
        raise InvalidInput(f"{path}: cannot read: {exc.strerror}") from None
    try:
        if st.st_size > documents.MAX_DOCUMENT_BYTES:
            raise InvalidInput(
                f"{path}: {st.st_size} bytes exceeds the {documents.MAX_DOCUMENT_BYTES} byte limit"
            )
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)


def _is_empty(path: str) -> bool:
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except OSError:
        return False


class LayoutDir(Source):
    """See the module docstring. Validates `oci-layout` and `index.json` on open."""

    kind = "layout"

    def __init__(self, path: str, *, writable: bool = True) -> None:
        super().__init__(path)
        if not os.path.exists(path):
            raise NotAnImage(f"{path}: no such file or directory")
        if not os.path.isdir(path):
            raise NotAnImage(f"{path}: not a directory")
        self.writable = writable
        if not os.path.exists(os.path.join(path, "oci-layout")) and _is_empty(path):
            raise NotAnImage(
                f"{path}: empty directory, not an OCI image layout "
                f"(create one with `ocifs init {path}`)"
            )
        self._layout_path = os.path.join(path, "oci-layout")
        self._index_path = os.path.join(path, "index.json")
        self._oci_layout = _read_small(self._layout_path, "oci-layout")
        documents.parse_oci_layout(self._oci_layout, self._layout_path)
        self._index_stamp: tuple[int, ...] | None = None
        #: blobs/<alg>/ mtimes when blobs/ was last listed (None: never listed)
        # Stamped now, so a blob added from outside before blobs/ was ever listed
        # (skopeo or another mount supplying a missing layer) is noticed too.
        self._blobs_stamp = self._blob_dirs_identity()
        # Validate now so a broken index.json is a mount error, not a broken mount.
        documents.parse_index(self.index_bytes(), self._index_path, lenient=True)

    def oci_layout_bytes(self) -> bytes:
        return self._oci_layout

    def _index_identity(self) -> tuple[int, ...] | None:
        """index.json's identity: one stat, on every access to a mutable directory."""
        try:
            st = os.stat(self._index_path, follow_symlinks=False)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _blob_dirs_identity(self) -> tuple[int, ...]:
        """The mtimes of blobs/<alg>/: a blob added or removed by `ocifs gc`, `skopeo` or
        another mount changes them. Taken only where a listing of blobs/ is served."""
        mtimes = []
        for alg in sorted(digest_mod.HEX_LENGTHS):
            try:
                mtimes.append(os.stat(os.path.join(self.path, "blobs", alg)).st_mtime_ns)
            except OSError:
                mtimes.append(0)
        return tuple(mtimes)

    def index_bytes(self) -> bytes:
        # Stamp first: an index.json that cannot be read is then not re-read (and
        # its error not logged again) on every request, only once it changes.
        self._index_stamp = self._index_identity()
        try:
            return _read_small(self._index_path, "index.json")
        except NotAnImage:
            raise InvalidInput(f"{self._index_path}: missing") from None

    def index_changed(self) -> bool:
        return self._index_identity() != self._index_stamp

    def blobs_changed(self) -> bool:
        """Whether blobs/ changed since the last time this said so (or it was listed):
        the caller reacts once, not on every tick of the watcher."""
        now = self._blob_dirs_identity()
        if now == self._blobs_stamp:
            return False
        self._blobs_stamp = now
        return True

    def blob_path(self, digest: Digest) -> str:
        return os.path.join(self.path, "blobs", digest.algorithm, digest.hex)

    def blob_size(self, digest: Digest) -> int | None:
        try:
            st = os.stat(self.blob_path(digest), follow_symlinks=False)
        except OSError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def open_blob(self, digest: Digest) -> OwnedFileReader:
        path = self.blob_path(digest)
        try:
            fd, st = open_regular(path)
        except FileNotFoundError:
            raise BlobUnavailable(f"blob {digest}: missing ({path})") from None
        except NotRegularFile as exc:
            raise BlobUnavailable(f"blob {digest}: {exc}") from None
        except OSError as exc:
            reason = "a symlink" if exc.errno == errno.ELOOP else exc.strerror
            raise BlobUnavailable(f"blob {digest}: cannot open {path}: {reason}") from None
        return OwnedFileReader(fd, st.st_size, stamp_of(st))

    def list_blobs(self) -> Iterator[Digest]:
        blobs = os.path.join(self.path, "blobs")
        # stamp first: a blob added while the listing runs shows at the next check
        self._blobs_stamp = self._blob_dirs_identity()
        try:
            algorithms = sorted(os.listdir(blobs))
        except OSError:
            return
        for alg in algorithms:
            if alg not in digest_mod.HEX_LENGTHS:
                continue
            try:
                with os.scandir(os.path.join(blobs, alg)) as it:
                    names = sorted(e.name for e in it if e.is_file(follow_symlinks=False))
            except OSError:
                continue
            for name in names:
                try:
                    yield digest_mod.from_parts(alg, name)
                except (InvalidInput, ValueError):
                    continue

    def identity(self) -> str:
        return os.path.realpath(self.path)
