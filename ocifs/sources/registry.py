"""A repository in an OCI distribution registry as a Source, fetched lazily.

At mount the tag list (or the one tag or digest) is resolved: `HEAD` on each
tag's manifest gives its digest, media type and size, and those become the
synthesized `index.json` (one entry per tag, named by the tag). Nothing else
is fetched until it is opened.

Trust. A manifest is fetched by digest (or, when a registry gives no digest on
`HEAD`, by tag and hashed) and its bytes must hash to that digest; the
`Docker-Content-Digest` header only says which digest to ask for, it never
vouches for content. Verified manifests are cached by digest (kind
`registry-manifest`).

Blobs are downloaded once, whole, into the persistent cache (kind
`registry-blob`, keyed by digest) by one background thread per blob, with
range requests to resume after connection errors; `registry/download.py`
receives the body (few copies; writing and hashing in helper threads). The
copy is committed only if it hashes to the digest. Reads are answered as follows:

- from the verified copy once it exists (this mount or an earlier one);
- a read that continues a sequential pass (starts at 0 or where an earlier
  read ended) is answered from the bytes downloaded so far, except the read
  that reaches the end of the blob, which waits for verification and fails
  (EIO) if the digest does not match: a reader of the whole blob either gets
  every verified byte or an error, as with local blobs;
- any other (random) read waits for the verified copy.

A download that fails (registry gone, truncated answers after the retries)
fails the reads waiting on it with BlobUnavailable (EIO), logs the URL and the
cause, and leaves nothing in the cache: its partial file is deleted and closed
before the reads hear of the failure (when a pread still uses it, it is closed
on a thread of its own once that pread ends: the pread may run on the trio
thread, and freeing a big file's blocks takes a while), so failures do not
pile up descriptors or disk space. Reads in the next FAILURE_HOLD seconds get
the same error, the first one after that starts a new download. Unmounting
(`stop`) ends every download at once: the reads waiting on it fail and the
socket being read is shut down.
A digest mismatch marks the blob bad for the rest of the mount.

Layer trees and rootfs/ go through the LayerStore like any other source, so
their indexes and unpacked copies are shared with local layouts by digest. An
index pass over a download does not hash the blob again: the download is a
`blobio.SelfVerifying` reader (`claim_verification`, `verified`).
`--refresh SECONDS` re-resolves the tags in a background thread once that much
time has passed since the last resolution; `index_changed()` reports a new
view once it is ready, so the trio thread never waits on the network.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocifs import log as log_mod
from ocifs.cache import DiskCache
from ocifs.codec.blobio import BlobReader, BytesReader, clamp
from ocifs.errors import BlobUnavailable, OcifsError, RegistryError, Unmounting
from ocifs.model import digest as digest_mod
from ocifs.model import documents
from ocifs.model import mediatypes as mt
from ocifs.model.descriptor import REF_NAME
from ocifs.model.digest import Digest
from ocifs.model.reference import TAG_RE
from ocifs.registry import auth, download
from ocifs.registry.client import (
    BodyTooLarge,
    ClientOptions,
    RegistryClient,
    one_line,
    timings_for_tests,
)
from ocifs.registry.options import RegistryOptions
from ocifs.registry.reference import Reference
from ocifs.registry.reference import parse as parse_reference
from ocifs.sources.base import Source
from ocifs.threadname import name_os_thread

log = logging.getLogger(__name__)

BLOB_KIND = "registry-blob"
MANIFEST_KIND = "registry-manifest"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
#: seconds a failed download answers new reads with its error before one retries it
FAILURE_HOLD = 5.0
#: longest the unmount waits, in all, for download threads to clean up after the stop
STOP_WAIT = 5.0
#: bytes of verified manifests kept in memory (least recently used out; the disk
#: cache holds them all): one manifest may be 64 MiB, a count alone bounds nothing
MANIFEST_MEMORY = 64 * 1024 * 1024
#: how far from the furthest read so far a read still counts as sequential: the
#: kernel's readahead sends several reads at once, in no guaranteed order
STREAM_WINDOW = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Known:
    size: int
    media_type: str
    manifest: bool  # fetched from /manifests/ rather than /blobs/


class _BadTag(RegistryError):
    """One tag's own answers are unusable (its HEAD or its manifest lies or is over the
    limit): a whole-repository mount leaves that tag out with one warning and mounts
    the rest; a mount of that one tag fails with this line."""


def open_registry(text: str, options: RegistryOptions, cache: DiskCache) -> RegistrySource:
    """Parse, connect, authenticate and resolve; one-line errors naming the reference."""
    ref = parse_reference(text)
    try:
        creds = auth.find(ref, options.creds, options.authfile)
        client = RegistryClient(
            ref,
            ClientOptions(
                tls_verify=options.tls_verify,
                cert_dir=options.cert_dir,
                credentials=creds,
                **timings_for_tests(),
            ),
        )
        return RegistrySource(ref, client, cache, refresh=options.refresh)
    except OcifsError as exc:
        raise RegistryError(f"{ref}: {exc}") from None


class RegistrySource(Source):
    """See the module docstring."""

    kind = "registry"
    remote = True

    def __init__(
        self, ref: Reference, client: RegistryClient, cache: DiskCache, *, refresh: float
    ) -> None:
        super().__init__(str(ref))
        self.ref = ref
        self.client = client
        self.cache = cache
        self.refresh_s = refresh
        self._lock = threading.Lock()
        self._known: dict[Digest, _Known] = {}
        self._manifests: OrderedDict[Digest, bytes] = OrderedDict()  # oldest use first
        self._manifest_memory = 0  # bytes in `_manifests`
        #: manifests being fetched: the listing, the open and the read of one `cat`
        #: (and other readers) wait for that fetch instead of making their own
        self._manifest_fetching: dict[Digest, threading.Event] = {}
        #: manifests whose fetch failed: (when, why), answered for FAILURE_HOLD s
        self._manifest_failed: dict[Digest, tuple[float, str]] = {}
        self._downloads: dict[Digest, _Download] = {}
        self._closed = False
        client.ping()
        self._index = self._resolve()
        self._resolved_at = time.monotonic()
        self._pending: bytes | None = None
        self._refreshing = False

    # -- Source -----------------------------------------------------------------

    def oci_layout_bytes(self) -> bytes:
        return OCI_LAYOUT

    def index_bytes(self) -> bytes:
        with self._lock:
            if self._pending is not None:
                self._index, self._pending = self._pending, None
            return self._index

    def index_changed(self) -> bool:
        with self._lock:
            if self._pending is not None:
                return True
            due = time.monotonic() - self._resolved_at >= self.refresh_s
            if self.refresh_s <= 0 or not due or self._refreshing or self._closed:
                return False
            self._refreshing = True
        threading.Thread(target=self._refresh, name="ocifs-refresh", daemon=True).start()
        return False

    def blob_size(self, digest: Digest) -> int | None:
        with self._lock:
            known = self._known.get(digest)
        return None if known is None else known.size

    def open_blob(self, digest: Digest) -> BlobReader:
        with self._lock:
            known = self._known.get(digest)
            if known is None:
                raise BlobUnavailable(
                    f"blob {digest}: not referenced by anything resolved in {self.ref.repo_str}"
                )
            if known.manifest:
                return _ManifestReader(self, digest, known.size)
            download = self._downloads.get(digest)
            if download is None:
                # after `stop` it starts stopped: its reads fail (Unmounting), nothing starts
                download = _Download(self, digest, known.size, stopped=self._closed)
                self._downloads[digest] = download
            return download

    def list_blobs(self) -> list[Digest]:
        with self._lock:
            return sorted(self._known)

    def identity(self) -> str:
        return self.ref.repo_str

    def stop(self) -> None:
        """Unmounting: every download ends at once, and the reads waiting on it fail
        (so an index pass reading a layer being downloaded ends too). Does not wait.

        The downloads hear of it before the client does: a download thread woken
        from a retry wait by `client.stopping` then finds its own `_stop` set and
        ends as a stop, not as a failure (an ERROR line, BlobUnavailable)."""
        with self._lock:
            self._closed = True
            downloads = list(self._downloads.values())
        for running in downloads:
            running.request_stop()
        self.client.stop()  # and every request in flight (a manifest, a tag list) ends

    def close(self) -> None:
        self.stop()
        with self._lock:
            downloads = list(self._downloads.values())
        # one bound for all: the stop ended their connections, so only a thread
        # stuck where no socket exists yet (a name lookup) can use it up
        deadline = time.monotonic() + STOP_WAIT
        for running in downloads:
            running.stop(max(0.0, deadline - time.monotonic()))
        self.client.close()

    # -- tags -> index.json -------------------------------------------------------

    def _resolve(self) -> bytes:
        """The synthesized index.json: one descriptor per tag (or the one digest)."""
        ref = self.ref
        entries: list[dict[str, Any]] = []
        if ref.digest is not None:
            entries.append(self._describe(str(ref.digest), ref.tag or str(ref.digest)))
        elif ref.tag is not None:
            entries.append(self._describe(ref.tag, ref.tag))
        else:
            tags = self._valid_tags(self.client.list_tags())
            workers = self.client.options.max_connections
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(self._describe_listed, tags))
            entries.extend(e for e in results if e is not None)
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
        return (json.dumps(index, indent=2) + "\n").encode()

    def _valid_tags(self, listed: list[str]) -> list[str]:
        """The listed names that are tags. Anything else (`../x`, `a?b`, a newline) would
        become part of a request URL and a directory name: left out, one warning each."""
        tags = []
        for name in sorted(set(listed)):
            if TAG_RE.fullmatch(name):
                tags.append(name)
            else:
                log_mod.once(
                    log,
                    logging.WARNING,
                    f"{self.ref.repo_str}: the tag list names {one_line(name, 140)!r}, "
                    "which is not a valid tag; not shown",
                )
        return tags

    def _describe_listed(self, tag: str) -> dict[str, Any] | None:
        try:
            return self._describe(tag, tag)
        except RegistryError as exc:
            if exc.status == 404:  # deleted between listing and resolving
                log.warning("%s:%s: listed but gone (%s); not shown", self.ref.repo_str, tag, exc)
                return None
            if isinstance(exc, _BadTag):  # that tag's answers only: the rest mounts
                log.warning("%s:%s: %s; not shown", self.ref.repo_str, tag, exc)
                return None
            raise

    def _missing_tag(self, tag: str) -> str:
        """Why `tag` is not found: a HEAD's 404 has no body to tell a missing tag from
        a missing repository, the tag list does (404 NAME_UNKNOWN for the latter);
        a few tags that exist help with a typo."""
        repo = self.ref.repository
        try:
            tags = self.client.list_tags()
        except RegistryError as exc:
            if exc.status == 404:
                return f"repository {repo!r} not found (404)"
            return f"tag {tag!r} not found (404)"
        if not tags:
            return f"tag {tag!r} not found (404); the repository has no tags"
        shown = ", ".join(sorted(tags)[:5]) + (", …" if len(tags) > 5 else "")
        return f"tag {tag!r} not found (404); the repository has: {shown}"

    def _describe(self, reference: str, name: str) -> dict[str, Any]:
        """Descriptor of the manifest `reference` (a tag or digest) points at, named `name`.

        From a `HEAD`: digest, media type and size. The manifest itself is fetched
        (by digest, and checked against it) when its directory is opened; only a
        registry that gives no digest on `HEAD` makes us fetch it by tag now.
        """
        try:
            head = self.client.head_manifest(reference)
        except RegistryError as exc:
            if exc.status == 404:
                if reference.startswith(("sha256:", "sha512:")):
                    raise RegistryError(
                        f"manifest {reference!r} not found (404)", status=404
                    ) from None
                raise RegistryError(self._missing_tag(reference), status=404) from None
            raise
        digest = _header_digest(head.headers.get("Docker-Content-Digest"))
        if reference.startswith(("sha256:", "sha512:")):
            digest = digest_mod.parse(reference)
        media_type = head.headers.get("Content-Type", "").split(";")[0].strip()
        length = head.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > documents.MAX_DOCUMENT_BYTES:
            raise _BadTag(
                f"{reference}: the registry says its manifest has {length} bytes, over the "
                f"{documents.MAX_DOCUMENT_BYTES}-byte document limit"
            )
        if digest is not None and documents.kind_of(media_type) != "other" and length.isdigit():
            size = int(length)
            with self._lock:
                known = self._known.setdefault(digest, _Known(size, media_type, True))
            if known.size != size or not known.manifest:
                raise _BadTag(f"{reference}: registry answers disagree about {digest}")
        else:
            asked = digest
            data, digest = self._manifest_by_tag(reference)
            if asked is not None and digest != asked:
                raise _BadTag(f"{reference}: the manifest hashes to {digest}")
            size = len(data)
            media_type = self._media_type(digest)
        return {
            "mediaType": media_type,
            "digest": str(digest),
            "size": size,
            "annotations": {REF_NAME: name},
        }

    def _manifest_by_tag(self, tag: str) -> tuple[bytes, Digest]:
        """For registries that give no digest on HEAD: fetch by tag and hash."""
        try:
            response = self.client.get_manifest(tag)
        except BodyTooLarge as exc:
            raise _BadTag(str(exc)) from None
        data = response.content  # at most the document limit (`send`)
        digest = digest_mod.of_bytes(data)
        header = response.headers.get("Docker-Content-Digest")
        if header and header != str(digest):
            raise _BadTag(
                f"{response.url}: Docker-Content-Digest says {header} but the manifest "
                f"hashes to {digest}"
            )
        self._remember_manifest(digest, data, response.headers.get("content-type", ""))
        return data, digest

    def _media_type(self, digest: Digest) -> str:
        """The type the manifest declares (learned when it was remembered)."""
        with self._lock:
            known = self._known.get(digest)
        return known.media_type if known is not None else mt.OCI_MANIFEST

    def _refresh(self) -> None:
        try:
            data = self._resolve()
        except Unmounting:
            data = None
        except OcifsError as exc:
            log.warning("refresh of %s failed (keeping the previous view): %s", self.ref, exc)
            data = None
        with self._lock:
            if data is not None and data != self._index:
                self._pending = data
                log.info("%s: tags changed", self.ref)
            self._resolved_at = time.monotonic()
            self._refreshing = False

    # -- manifests ----------------------------------------------------------------

    def manifest_bytes(self, digest: Digest) -> bytes:
        """A verified manifest or index, from memory, the cache or the registry."""
        return self._manifest_for(digest, str(digest))

    def _manifest_for(self, digest: Digest, asked_as: str) -> bytes:
        while True:
            with self._lock:
                data = self._manifests.get(digest)
                if data is not None:
                    self._manifests.move_to_end(digest)
                    return data
            cached = self.cache.get(MANIFEST_KIND, str(digest))
            if cached is not None and digest.matches(cached):
                content_type = ""
                self._remember_manifest(digest, cached, content_type, store=False)
                return cached
            with self._lock:
                failed = self._manifest_failed.get(digest)
                if failed is not None and time.monotonic() - failed[0] < FAILURE_HOLD:
                    # the listing, the read and the kernel's retry of one `cat` ask in
                    # a row: one fetch (of up to 64 MiB from a hostile registry), not one each
                    raise RegistryError(failed[1])
                fetching = self._manifest_fetching.get(digest)
                if fetching is None:
                    self._manifest_fetching[digest] = threading.Event()
            if fetching is None:
                break
            # another thread fetches it: its outcome (in memory, on disk, or the
            # failure) answers this one too; if it was stopped, this one goes on
            fetching.wait()
        try:
            return self._fetch_manifest(digest, asked_as)
        except Unmounting:
            raise
        except RegistryError as exc:
            with self._lock:
                self._manifest_failed[digest] = (time.monotonic(), str(exc))
            raise
        finally:
            with self._lock:
                done = self._manifest_fetching.pop(digest)
            done.set()

    def _fetch_manifest(self, digest: Digest, asked_as: str) -> bytes:
        response = self.client.get_manifest(str(digest))
        data = response.content  # at most the document limit (`send`)
        if not digest.matches(data):
            raise RegistryError(
                f"{response.url}: manifest does not hash to {digest} (asked for {asked_as})"
            )
        with self._lock:
            known = self._known.get(digest)
        if known is not None and known.size != len(data):  # a HEAD's Content-Length lied
            raise RegistryError(
                f"{response.url}: manifest has {len(data)} bytes, the registry said {known.size}"
            )
        self._remember_manifest(digest, data, response.headers.get("content-type", ""))
        return data

    def _remember_manifest(
        self, digest: Digest, data: bytes, content_type: str, *, store: bool = True
    ) -> None:
        """Keep a verified manifest; learn the sizes and types of what it references."""
        if store:
            self.cache.put(MANIFEST_KIND, str(digest), data)
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        media_type = doc.get("mediaType") if isinstance(doc, dict) else None
        if not isinstance(media_type, str) or not media_type:
            media_type = content_type.split(";")[0].strip() or mt.OCI_MANIFEST
        learned: dict[Digest, _Known] = {digest: _Known(len(data), media_type, True)}
        if isinstance(doc, dict):
            for entry in doc.get("manifests") or []:
                self._learn(learned, entry, manifest=True)
            self._learn(learned, doc.get("config"), manifest=False)
            for key in ("layers", "blobs"):
                for entry in doc.get(key) or []:
                    self._learn(learned, entry, manifest=False)
        with self._lock:
            for d, known in learned.items():
                self._known.setdefault(d, known)
            if digest not in self._manifests:
                self._manifest_memory += len(data)
            self._manifests[digest] = data
            self._manifests.move_to_end(digest)
            while self._manifest_memory > MANIFEST_MEMORY and len(self._manifests) > 1:
                _, old = self._manifests.popitem(last=False)
                self._manifest_memory -= len(old)

    @staticmethod
    def _learn(learned: dict[Digest, _Known], entry: object, *, manifest: bool) -> None:
        if not isinstance(entry, dict):
            return
        size, media_type = entry.get("size"), entry.get("mediaType", "")
        try:
            d = digest_mod.parse(entry.get("digest"))
        except OcifsError:
            return
        if not isinstance(size, int) or size < 0 or not isinstance(media_type, str):
            return
        is_manifest = manifest and documents.kind_of(media_type) != "other"
        learned.setdefault(d, _Known(size, media_type, is_manifest))


def _header_digest(value: str | None) -> Digest | None:
    if not value:
        return None
    try:
        return digest_mod.parse(value)
    except OcifsError:
        return None


def _close_elsewhere(fd: int) -> None:
    """Close `fd` on a short-lived thread of its own.

    The last close of a failed download's partial file (deleted already) frees
    its blocks, which takes a while for a big one; the pread that ends up doing
    it may be running on the trio thread (`_Download.ready`). Nothing else uses
    the number any more: it was retired and its last user is done.
    """
    threading.Thread(target=os.close, args=(fd,), name="ocifs-close", daemon=True).start()


def _close_now(fd: int) -> None:
    """Close a retired fd here (-1: nothing to close)."""
    if fd >= 0:
        os.close(fd)


class _ManifestReader:
    """A manifest's bytes, fetched (and verified) on the first read."""

    __slots__ = ("_digest", "_size", "_source")

    def __init__(self, source: RegistrySource, digest: Digest, size: int) -> None:
        self._source = source
        self._digest = digest
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, size: int) -> bytes:
        try:
            data = self._source.manifest_bytes(self._digest)
        except Unmounting as exc:  # the stop is no failure of the manifest
            raise Unmounting(f"manifest {self._digest}: {exc}") from None
        except OcifsError as exc:
            raise BlobUnavailable(f"manifest {self._digest}: {exc}") from None
        return BytesReader(data).pread(offset, size)

    def close(self) -> None:
        pass


class _Failed(Exception):
    """A download attempt that ended; `permanent` for content that can never be right."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class _Download:
    """One blob's download into the cache, and the reads waiting on it (module docstring).

    It is the blob's BlobReader too: every reader of the digest shares it.
    """

    def __init__(
        self, source: RegistrySource, digest: Digest, size: int, *, stopped: bool = False
    ) -> None:
        self.source = source
        self.digest = digest
        self._size = size
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._have = 0
        self._temp_fd = -1
        self._temp_path: Path | None = None  # the partial file, for `stop` to delete
        self._verified_fd = -1
        #: downloads started so far; the one running (or last run) is number `_gen`
        self._gen = 0
        #: the download that hashed the blob and matched (the verified copy is the
        #: file it wrote), None before: `claim_verification`, `verified`
        self._fetched_gen: int | None = None
        self._error: str | None = None
        self._permanent = False
        self._failed_at = 0.0
        self._stop = stopped
        #: furthest end of a read of a sequential pass; lowest end a pass waits for
        self._frontier = 0
        self._waiting = 1 << 62
        #: preads in progress per fd, and fds to close when their last pread ends: a
        #: failed download's partial file is closed (its disk space freed) as soon as
        #: no read uses it, not at unmount
        self._users: dict[int, int] = {}
        self._retired: set[int] = set()
        self._owned: set[int] = set()  # fds opened here and not yet retired
        #: the socket of the answer being received, for `request_stop` to interrupt
        self._sock: socket.socket | None = None
        self._url = source.client.repo_url(f"blobs/{digest}")

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        pass  # shared; the download goes on so the next reader finds the blob cached

    def request_stop(self) -> None:
        """Stop the download and fail the reads waiting on it, without waiting (any thread)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            if self._sock is not None:  # still open: `_attempt` clears it under the lock first
                download.interrupt(self._sock)

    def stop(self, wait: float = 5.0) -> None:
        """Stop the download and wait (at most `wait` s) for its thread to clean up."""
        self.request_stop()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=wait)
            temp = self._temp_path
            if thread.is_alive() and temp is not None:
                # blocked where the stop cannot reach (a name lookup: the client's
                # stop ends connects and reads): the process exits with it, and its
                # partial file must not stay behind (`DiskCache.evict` would remove it
                # at a later mount, this removes it now)
                temp.unlink(missing_ok=True)
        with self._cond:  # unmounting: reads still in os.pread close them when done
            idle = [self._retire(fd) for fd in {self._verified_fd, self._temp_fd} - {-1}]
            self._verified_fd = self._temp_fd = -1
        for fd in idle:
            _close_now(fd)

    def _retire(self, fd: int) -> int:
        """Give up `fd`: returns it if no pread uses it (the caller closes it once it
        has let go of `_cond`), else leaves it to the last pread using it; -1 then,
        or if it was retired already. Hold `_cond`.

        Never closed under `_cond`: the trio thread takes it (`request_stop`, inline
        `pread`), and the last close of a big deleted partial file takes a while."""
        if fd not in self._owned:
            return -1
        self._owned.discard(fd)
        if self._users.get(fd):
            self._retired.add(fd)
            return -1
        return fd

    def _release(self, fd: int) -> None:
        with self._cond:
            left = self._users[fd] - 1
            if left:
                self._users[fd] = left
                return
            del self._users[fd]
            if fd in self._retired:
                self._retired.discard(fd)
                _close_elsewhere(fd)  # this pread may have run on the trio thread

    def claim_verification(self) -> int | None:
        """`blobio.SelfVerifying`: the number of the download (starting it if needed)
        whose hash covers the reads that follow, so an index pass need not hash them
        again. None for a copy an earlier mount left in the cache: that one was
        verified when it was written, not since, and the pass hashes it.

        Only that download's verdict counts: if it fails and a later read starts
        another (FAILURE_HOLD after), the pass may hold bytes of both, and
        `verified` of this number stays False however the next one ends."""
        with self._cond:
            if self._fetched_gen is not None:
                return self._fetched_gen
            if self._stop or self._verified_fd >= 0 or self._from_cache() >= 0:
                return None
            self._start()  # `_from_cache` is asked only before the first download starts
            return self._gen if self._thread is not None else None

    def verified(self, token: object) -> bool:
        """`blobio.SelfVerifying`: download number `token` ran here and matched its digest."""
        return self._fetched_gen is not None and self._fetched_gen == token

    def ready(self, offset: int, size: int) -> bool:
        """Whether `pread` would answer without waiting: the verified copy is open, or the
        read continues a sequential pass over bytes already downloaded (not the last read,
        which waits for the digest check). The caller then preads on its own (trio) thread
        instead of paying a worker-thread hop per read. Read without the lock: a download
        failing in between makes `pread` raise at once; a new download (which could
        make it wait) starts only FAILURE_HOLD seconds after a failure."""
        if self._verified_fd >= 0:
            return True
        end = offset + clamp(offset, size, self._size)
        return (
            self._error is None
            and self._temp_fd >= 0
            and end < self._size
            and self._have >= end
            and (offset == 0 or abs(offset - self._frontier) <= STREAM_WINDOW)
        )

    def pread(self, offset: int, size: int) -> bytes:
        n = clamp(offset, size, self._size)
        if n == 0:
            return b""
        end = offset + n
        with self._cond:
            if self._stop:
                raise Unmounting(f"blob {self.digest}: unmounting")
            fd = self._verified_fd
            if fd < 0:
                fd = self._from_cache()
            if fd < 0:
                self._start()  # first: a new download starts a new pass (`_frontier` 0)
                # part of a sequential pass: it starts at 0 or near the furthest read so far
                streamed = offset == 0 or abs(offset - self._frontier) <= STREAM_WINDOW
                if streamed:
                    self._frontier = max(self._frontier, end)
                while True:
                    if streamed:  # set before looking at _have, which is set before it is read
                        self._waiting = min(self._waiting, end)
                    if self._verified_fd >= 0:
                        fd = self._verified_fd
                        break
                    if self._stop:  # first: a stopped download's error is the stop
                        raise Unmounting(f"blob {self.digest}: unmounting")
                    if self._error is not None:
                        raise BlobUnavailable(f"blob {self.digest}: {self._error}")
                    if (
                        streamed
                        and end < self._size
                        and self._have >= end
                        and self._temp_fd >= 0
                    ):
                        fd = self._temp_fd
                        break
                    self._cond.wait(1.0)
            self._users[fd] = self._users.get(fd, 0) + 1
        try:
            return os.pread(fd, n, offset)
        finally:
            self._release(fd)

    def _from_cache(self) -> int:
        """A verified copy left by an earlier mount (or another process)."""
        if self._thread is not None:
            return -1
        fd = self.source.cache.open_file(BLOB_KIND, str(self.digest), self._size)
        if fd is not None:
            self._verified_fd = fd
            self._owned.add(fd)
            return fd
        return -1

    def _start(self) -> None:
        """Start a download unless one runs; a failed one is retried unless it was permanent
        or failed less than FAILURE_HOLD seconds ago (the reads of one `read()` call, the
        kernel's readahead and its retry, all get that failure instead of a new download).
        None once stopped (unmounting): the caller sees `_stop` and fails."""
        if self._stop:
            return
        if self._thread is not None and (self._thread.is_alive() or self._error is None):
            return
        if self._error is not None and (
            self._permanent or time.monotonic() - self._failed_at < FAILURE_HOLD
        ):
            return
        self._error = None
        self._have = 0
        # a pass over the failed download does not go on over this one (its bytes
        # were never hashed together with them): reads far from 0 wait for the
        # verified copy, and a pass's token (`claim_verification`) no longer matches
        self._frontier = 0
        self._gen += 1
        self._thread = threading.Thread(
            target=self._run, args=(self._gen,), name="ocifs-blob-rx", daemon=True
        )
        self._thread.start()

    def _run(self, gen: int) -> None:
        """The download thread: commit the verified copy, or clean up and report why not.

        On failure the partial file is deleted and its read fd closed (or retired to
        the last pread using it) *before* the readers hear of the failure, so a failed
        download holds neither a descriptor nor disk space once its reads have ended.
        """
        name_os_thread()
        cache = self.source.cache
        temp = None
        rfd = -1
        permanent = False
        try:
            temp, sink = cache.new_temp(BLOB_KIND)
            self._temp_path = temp
            with sink:
                rfd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
                with self._cond:
                    self._temp_fd = rfd
                    self._owned.add(rfd)
                self._fetch(sink.fileno())
            cache.commit_file(temp, BLOB_KIND, str(self.digest))
            self._temp_path = None
        except _Failed as exc:
            if self._stop or self.source.client.stopping.is_set():
                log.info("GET %s: stopped (unmounting)", self._url)
            else:
                log.error("GET %s: %s", self._url, exc)
            error, permanent = str(exc), exc.permanent
        except Exception as exc:
            log.exception("GET %s: unexpected failure", self._url)
            error = f"download failed: {exc!r}"
        else:
            with self._cond:
                self._verified_fd = rfd
                self._fetched_gen = gen
                self._cond.notify_all()
            log.info("fetched blob %s (%d bytes)", self.digest, self._size)
            return
        if temp is not None:
            temp.unlink(missing_ok=True)
        self._temp_path = None
        if rfd >= 0:
            with self._cond:  # readers wait (no bytes, no error) until the error is set
                if self._temp_fd == rfd:
                    self._temp_fd = -1
                    self._have = 0
                idle = self._retire(rfd)
            _close_now(idle)  # this worker thread frees the blocks, not under `_cond`
        with self._cond:
            self._error = error
            self._permanent = permanent
            self._failed_at = time.monotonic()
            self._cond.notify_all()

    def _fetch(self, out: int) -> None:
        """Download the blob into `out`, resuming with ranges; verify it."""
        options = self.source.client.options
        sink = download.BodySink(out, self.digest.hasher(), self._written)
        received, failures = 0, 0
        try:
            while True:
                try:
                    received = self._attempt(sink, received)
                except download.Transient as exc:
                    if self._stop:  # request_stop cut the connection
                        raise _Failed("stopped (unmounting)") from None
                    received = sink.queued
                    failures += 1
                    if failures > options.retries:
                        raise _Failed(
                            f"{exc} at byte {received} of {self._size} "
                            f"(after {failures} attempts)"
                        ) from None
                    delay = options.backoff * (2 ** (failures - 1))
                    log.warning(
                        "GET %s: %s at byte %d; resuming in %.2f s",
                        self._url,
                        exc,
                        received,
                        delay,
                    )
                    with self._cond:
                        if self._cond.wait_for(lambda: self._stop, delay):
                            raise _Failed("stopped (unmounting)") from None
                    continue
                except download.TooLarge as exc:
                    raise _Failed(str(exc), permanent=True) from None
                except Unmounting:  # the client refused a request (`send`)
                    raise _Failed("stopped (unmounting)") from None
                except RegistryError as exc:  # the client's line names the URL: once is enough
                    raise _Failed(self._without_url(str(exc))) from None
                except (download.WriteFailed, download.Stopped) as exc:
                    raise _Failed(str(exc)) from None
                break
            matches = sink.finish() == self.digest.hex
        finally:
            sink.close()
        if not matches:
            raise _Failed("content does not match its digest (not cached)", permanent=True)

    def _without_url(self, message: str) -> str:
        """The client's error without the request it names (`_run` names it)."""
        for prefix in (f"GET {self._url}: ", f"{self._url}: "):
            if message.startswith(prefix):
                return message[len(prefix) :]
        return message

    def _attempt(self, sink: download.BodySink, have: int) -> int:
        """One request for the bytes from `have` on; returns the end received."""
        options = self.source.client.options
        with self.source.client.blob_stream(str(self.digest), have) as response:
            with self._cond:
                self._sock = download.connection_socket(response)
                if self._stop and self._sock is not None:
                    download.interrupt(self._sock)
            skip = 0
            if response.status_code == 206:
                content_range = response.headers.get("Content-Range", "")
                if not content_range.startswith(f"bytes {have}-"):
                    raise _Failed(f"asked for bytes {have}- but got range {content_range!r}")
            elif have:
                skip = have  # ranges ignored: the whole blob again
            try:
                have = download.receive(
                    response, sink, have, self._size, skip, options.timeout, lambda: self._stop
                )
            finally:
                with self._cond:
                    self._sock = None
            if self._stop:
                raise download.Stopped("unmounting")
        if have < self._size:
            raise download.Transient("the answer ended early")
        return have

    def _written(self, end: int) -> None:
        """The sink wrote the bytes up to `end`: readers waiting for them can go on."""
        self._have = end
        if end >= self._waiting:  # wake readers only when one can go on
            with self._cond:
                self._waiting = 1 << 62
                self._cond.notify_all()
