"""Typed errors shared by every layer of ocifs.

Errors carry kinds, not numbers: only `ocifs.fuse` maps them to errno and only
`ocifs.cli` maps them to exit codes. Messages are one line, name the file or
digest concerned and say what is wrong, because they are shown to users as is.
"""

from __future__ import annotations


class OcifsError(Exception):
    """Base of every error ocifs raises on purpose."""


class NotFound(OcifsError):
    """A name does not exist in the tree."""


class NoSuchName(NotFound):
    """A directory's complete listing lacks this name.

    `final`: the listing can never gain it (an immutable directory whose
    children were all built), so the kernel may remember the absence (a
    cached negative entry); False where an import, a refresh or a retry of an
    unreadable document may add it.
    """

    def __init__(self, name: str, final: bool = False) -> None:
        super().__init__(name)
        self.final = final


class NotADirectory(OcifsError):
    """A directory operation on something that is not a directory."""


class IsADirectory(OcifsError):
    """A file operation on a directory."""


class ReadOnly(OcifsError):
    """A write outside `.import/`, or anywhere in a read-only source."""


class InvalidInput(OcifsError):
    """Malformed input: bad digest, bad JSON, ambiguous or invalid document."""


class Unsupported(OcifsError):
    """Well-formed input that ocifs does not support (unknown algorithm, schema 1...)."""


class NotAnImage(InvalidInput):
    """SOURCE is not an OCI layout, OCI archive or docker-save archive."""


class NotRegularFile(OcifsError):
    """A source file that is a FIFO, socket, device, directory or symlink (never opened)."""


class BlobUnavailable(OcifsError):
    """A blob is missing, has the wrong size, or failed verification."""


class Unmounting(BlobUnavailable):
    """Background work (an index pass, a download) ended early because the mount is going away."""


class LayerCorrupt(BlobUnavailable):
    """A layer could not be decompressed or parsed past some point."""


class DigestMismatch(OcifsError):
    """Content does not hash to the digest it was named or described by."""


class SizeMismatch(OcifsError):
    """Content does not have the size its descriptor says."""


class LimitExceeded(OcifsError):
    """An input exceeded a documented limit (JSON size, member count, ...)."""


class NameTooLong(OcifsError):
    """A path component is longer than the kernel accepts."""


class TooDeep(OcifsError):
    """Nesting beyond a documented depth (indexes inside indexes under `platforms/`)."""


class LockTimeout(OcifsError):
    """The layout lock could not be taken in time."""


class MountError(OcifsError):
    """The mount could not be set up (mountpoint problems, FUSE unavailable)."""


class InUse(OcifsError):
    """A blob cannot be removed: index.json still reaches it (the message names the ref)."""


class NotEmpty(OcifsError):
    """A directory of refs still holds refs, or a rename target is in the way."""


class AlreadyExists(OcifsError):
    """A name is taken and the operation must not replace it."""


class RegistryError(OcifsError):
    """A registry could not be reached, refused a request or answered nonsense.

    The message names the URL (or reference) and the cause in one line.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotDurable(OcifsError):
    """A change was made and is visible, but its fsync failed: it may not survive a crash."""
