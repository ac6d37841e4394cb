"""One file being written into `.import/`: stage, verify at flush, commit.

Lifecycle (containerd's begin/write/commit/abort, adapted to FUSE):

* writes are staged — plain files into one staging file, hashed in order by a
  `Pipeline`; image archives parsed as they stream (`ArchiveImport`);
* the first error (while writing or verifying) is kept in `failure`: later
  writes are dropped, every flush raises it, so the writer's `close()` gets its
  errno and the status one FAILED line with its reason;
* `flush` verifies and commits what was written since the last flush; its
  error is what `close()` reports. A flush with no new writes does nothing —
  unless the content as it stands verifies (the empty blob), or nothing was
  ever written to a name that needs content (it fails, unrecorded: `dd` and
  shell redirection flush a duplicate before writing and ignore that);
* `release` (errors are discarded by the kernel) records anything that never
  verified in the status and removes staging — except for a hidden temporary
  (`temporary`), whose content is held until it is renamed.

The state lives per file, not per descriptor: with the writeback cache the
kernel may send one descriptor's pages through another. Everything runs on
the trio thread; blocking work is awaited in worker threads.
"""

from __future__ import annotations

import json
import os
from collections import deque
from typing import Any

import trio

from ocifs.errors import (
    DigestMismatch,
    InvalidInput,
    LimitExceeded,
    NotDurable,
    NotFound,
    OcifsError,
    Unsupported,
)
from ocifs.importer import classify, closure, indexjson
from ocifs.importer.archive_stream import ArchiveImport
from ocifs.importer.classify import Kind, Role
from ocifs.importer.commit import blob_path, read_range
from ocifs.importer.indexjson import entry_name
from ocifs.importer.pending import Batch, PendingEntry
from ocifs.importer.pipeline import Pipeline
from ocifs.importer.session import Session
from ocifs.importer.staging import StagedFile
from ocifs.model import descriptor as descriptor_mod
from ocifs.model import digest as digest_mod
from ocifs.model import documents
from ocifs.model import mediatypes as mt
from ocifs.model.descriptor import REF_NAME, Descriptor
from ocifs.model.digest import Digest

#: Archive bytes written ahead of a gap (sparse `cp`) kept until the gap fills.
MAX_AHEAD = 16 << 20
_RECENT = 4  # archive chunks kept to check (and serve) re-sent pages
#: Roles whose content is one JSON document, held to MAX_DOCUMENT_BYTES.
_DOCUMENT_KINDS = (Kind.INDEX, Kind.LAYOUT_MARKER, Kind.REF)


class Ingest:
    """See the module docstring. `path` is relative to `.import/`."""

    def __init__(self, session: Session, path: tuple[str, ...], role: Role) -> None:
        self.s = session
        self.path = path
        self.role = role
        #: a hidden unnamed file (`.goutputstream-*`, rsync's `.name.XXXXXX`): the
        #: temporary of a write-then-rename writer. Its content is kept staged at
        #: close ("held"), and imported only when it is renamed to a real name, so
        #: a rename that fails leaves nothing committed.
        self.temporary = role.kind is Kind.AUTO and path[-1].startswith(".")
        self.mode: str | None = (
            None if role.kind is Kind.AUTO and not self.temporary else "blob"
        )
        self.staged: StagedFile | None = None
        self.archive: ArchiveImport | None = None
        self.pipeline: Pipeline | None = None
        self.head = bytearray()  # AUTO: leading bytes until sniffed (holes: zeros)
        self.head_ranges: list[tuple[int, int]] = []  # ...and which were written
        self.extended = 0  # size last set by a truncate while undecided
        self.size = 0
        self.dirty = False
        # open -> done (verified/committed) | held (temporary, see above) | aborted;
        # writes reopen
        self.state = "open"
        self.committed: Digest | None = None
        self.doc: bytes | None = None  # index.json / oci-layout content once processed
        self.error = ""
        #: the first error met while writing or verifying; every later write is
        #: dropped and every flush raises it again (see `write`)
        self.failure: OcifsError | OSError | None = None
        #: the process that opened the file for writing was exiting when it was
        #: flushed (killed, or exited without closing it)
        self.writer_exited = False
        # archive mode: stream position, writes ahead of a gap, recent chunks
        self.fed = 0
        self.ahead: dict[int, bytes] = {}
        self.recent: deque[tuple[int, bytes]] = deque(maxlen=_RECENT)
        # Several descriptors (or processes) may use one file: a write must not slip
        # into a commit in progress, nor two flushes commit one staging file.
        self._lock = trio.Lock()

    @property
    def name(self) -> str:
        return "/".join(self.path)

    # -- writing --------------------------------------------------------------

    async def write(self, offset: int, data: bytes) -> None:
        """Stage `data`; the first error is kept (see `failure`), never raised here.

        With the writeback cache this runs after the writer's write() returned:
        failing it would only make the kernel report a generic EIO at close().
        The kept error reaches the writer instead through its next write()
        (the area fails `getattr`, which the kernel asks first) and close().
        """
        async with self._lock:
            if self.failure is not None:
                return  # the import has failed: what still arrives is dropped
            try:
                await self._write(offset, data)
            except (OcifsError, OSError) as exc:
                if self.state == "aborted":
                    raise
                await self._fail(exc)

    async def _fail(self, exc: OcifsError | OSError) -> None:
        """Keep the first error, report it once, and free what was staged."""
        if self.failure is not None:
            return
        self.failure = exc
        self.error = (
            str(exc) if isinstance(exc, OcifsError) else f"{self.name}: {_os_message(exc)}"
        )
        if isinstance(exc, NotDurable):
            # what is true: the import is in index.json, only its durability is unknown
            self.s.status.record("UNSYNCED", self.name, self.error)
        else:
            self.s.status.record("FAILED", self.name, self.error)
        await self._drain_and_discard()

    async def _write(self, offset: int, data: bytes) -> None:
        if self.state == "aborted":
            raise NotFound(f"{self.name}: import was aborted (file removed)")
        if self.state in ("done", "held"):
            await self._reopen()
        self.dirty = True
        self.size = max(self.size, offset + len(data))
        if self.role.kind in _DOCUMENT_KINDS and self.size > documents.MAX_DOCUMENT_BYTES:
            raise LimitExceeded(  # said now, not after the rest was copied
                f"{self.name}: over the {documents.MAX_DOCUMENT_BYTES} byte document limit"
            )
        if self.mode is None:
            # Not decided yet: keep the bytes that fall in the sniffing window where
            # they go (holes read as zeros); judge the part written contiguously
            # from the start, or everything once a write goes past the window.
            cut = max(0, min(len(data), classify.SNIFF_LIMIT - offset))
            if cut:
                end = offset + cut
                if len(self.head) < end:
                    self.head.extend(bytes(end - len(self.head)))
                self.head[offset:end] = data[:cut]
                self.head_ranges.append((offset, end))
            prefix = bytes(self.head[: self._head_prefix()])
            decided = classify.sniff_archive(prefix, final=False)
            if decided is None and cut < len(data):
                decided = self._sniff_final()
            if decided is None:
                return
            await self._decide(decided)
            if cut == len(data):
                return
            data, offset = data[cut:], offset + cut
        if self.mode == "archive":
            await self._archive_write(offset, data)
        else:
            await self._blob_write(offset, data)

    def _head_prefix(self) -> int:
        """Length of the undecided head written contiguously from offset 0."""
        end = 0
        for start, stop in sorted(self.head_ranges):
            if start > end:
                break
            end = max(end, stop)
        return end

    def _sniff_final(self) -> bool:
        """Decide with what there is: holes (never written, or made by a
        truncate that extended the file) are zeros, as they read."""
        head = bytes(self.head) + bytes(max(0, min(self.size, classify.SNIFF_LIMIT)
                                            - len(self.head)))
        return bool(classify.sniff_archive(head, final=True))

    async def _decide(self, archive: bool) -> None:
        """Fix the mode of an AUTO file and replay the bytes written so far.

        The mode follows the content, never the order or shape of the writes:
        a sparse `cp`, or a writer that first extends the file with ftruncate,
        gets the same answer as a plain sequential copy.
        """
        head, self.head = bytes(self.head), bytearray()
        prefix = self._head_prefix()
        ranges, self.head_ranges = sorted(self.head_ranges), []
        if archive:
            self.mode = "archive"
            self.archive = ArchiveImport(self.s.layout, self.name)
            self.pipeline = Pipeline(self._parse, self.s.cpu)
            if prefix:
                await self._archive_write(0, head[:prefix])
            for start, stop in ranges:
                if stop > prefix:
                    start = max(start, prefix)
                    await self._archive_write(start, head[start:stop])
        else:
            self.mode = "blob"
            for start, stop in ranges:
                await self._blob_write(start, head[start:stop])
            if self.extended > max((stop for _, stop in ranges), default=0):
                # a truncate made the file longer than what was written: a hole
                # (only then: it makes the hash be computed from the file at flush)
                (await self._staged_idle()).truncate(self.extended)

    def _ensure_staged(self) -> StagedFile:
        if self.staged is None or self.staged.fd < 0:
            self.staged = StagedFile(self.s.layout, self.role.algorithm)
            self.pipeline = Pipeline(self._stage, self.s.cpu)
        return self.staged

    def _stage(self, offset: int, data: bytes) -> None:
        """Worker thread: store and (while writes are in order) hash."""
        staged = self.staged
        assert staged is not None
        staged.write(offset, data)
        staged.hash_chunk(data)  # a no-op once out of order: hashed from the file at flush

    def _parse(self, offset: int, data: bytes) -> None:
        assert self.archive is not None
        self.archive.feed(data)

    async def _staged_idle(self) -> StagedFile:
        """The staging file with every queued write applied (before using it here)."""
        staged = self._ensure_staged()
        assert self.pipeline is not None
        await self.pipeline.drain()
        # appends may still be on their way to the disk (directio): finish them
        # here, in a worker thread, so that reads and truncates never wait for it
        await trio.to_thread.run_sync(staged.settle, limiter=self.s.io)
        return staged

    async def _blob_write(self, offset: int, data: bytes) -> None:
        self._ensure_staged()
        assert self.pipeline is not None
        await self.pipeline.push(offset, data)

    async def _archive_write(self, offset: int, data: bytes) -> None:
        assert self.pipeline is not None
        end = offset + len(data)
        if offset < self.fed:
            self._check_resent(offset, data[: self.fed - offset])
            if end <= self.fed:
                return
            data, offset = data[self.fed - offset :], self.fed
        if offset > self.fed:
            self.ahead[offset] = data
            if sum(len(d) for d in self.ahead.values()) > MAX_AHEAD:
                # A gap this far behind is a hole (sparse cp seeks over zeros):
                # it reads as zeros, so it is zeros. Bytes arriving for it later
                # must be zeros too (checked as re-sent pages are).
                await self._fill_holes(self.fed)
            return
        await self._feed(data)
        while self.fed in self.ahead:
            await self._feed(self.ahead.pop(self.fed))

    async def _feed(self, data: bytes) -> None:
        assert self.pipeline is not None
        self.recent.append((self.fed, data))
        self.fed += len(data)
        await self.pipeline.push(self.fed - len(data), data)

    def _recent_bytes(self, offset: int, size: int) -> bytes | None:
        """Bytes of the archive stream at [offset, offset+size) if still held."""
        out = bytearray()
        pos = offset
        for start, chunk in self.recent:
            if start <= pos < start + len(chunk):
                take = chunk[pos - start : pos - start + (offset + size - pos)]
                out += take
                pos += len(take)
        return bytes(out) if len(out) == size else None

    def _check_resent(self, offset: int, data: bytes) -> None:
        """The kernel may re-send a page already written: it must be identical."""
        if self._recent_bytes(offset, len(data)) != data:
            raise Unsupported(f"{self.name}: archive rewritten at offset {offset}")

    async def truncate(self, size: int) -> None:
        async with self._lock:
            if self.failure is not None:
                raise self.failure
            try:
                await self._truncate(size)
            except (OcifsError, OSError) as exc:
                await self._fail(exc)
                raise

    async def _truncate(self, size: int) -> None:
        if self.role.kind in _DOCUMENT_KINDS and size > documents.MAX_DOCUMENT_BYTES:
            raise LimitExceeded(
                f"{self.name}: over the {documents.MAX_DOCUMENT_BYTES} byte document limit"
            )
        if self.state in ("done", "held"):
            await self._reopen()
        if self.mode is None:
            if size == 0 and not self.head:
                return
            # Still undecided: a size change says nothing about the content.
            self.dirty = True
            self.size = self.extended = size
            if size < len(self.head):
                del self.head[size:]
                self.head_ranges = [(a, min(b, size)) for a, b in self.head_ranges if a < size]
            return
        self.dirty = True
        if self.mode == "archive":
            if size < self.fed:
                raise Unsupported(f"{self.name}: an archive cannot be truncated once written")
            # an extension is a hole until written: filled with zeros at the end
        else:
            (await self._staged_idle()).truncate(size)
        self.size = size

    async def _fill_holes(self, upto: int) -> None:
        """Feed everything held ahead, and zeros for the holes between (and up to
        `upto`): holes in an archive (sparse source, ftruncate) read as zeros."""
        while self.ahead:
            start = min(self.ahead)
            if start > self.fed:
                await self._feed_zeros(start)
            await self._archive_write(start, self.ahead.pop(start))
        await self._feed_zeros(upto)

    async def _feed_zeros(self, upto: int) -> None:
        while self.fed < upto:
            await self._feed(bytes(min(upto - self.fed, 1 << 20)))

    async def _reopen(self) -> None:
        """Writes after a successful flush (a duplicated descriptor): continue the file.

        An archive simply continues (re-sent pages are checked, bytes after the
        end-of-archive marker are ignored, as tar does); a blob that was renamed
        into blobs/ is copied back into a staging file first.
        """
        self.state = "open"
        if self.mode == "archive" or (self.staged is not None and self.staged.fd >= 0):
            return
        committed = self.committed
        staged = self._ensure_staged()
        if self.doc is not None:
            staged.write(0, self.doc)
        elif committed is not None:
            src = blob_path(self.s.layout, committed)

            def copy() -> None:
                with open(src, "rb") as f:
                    offset = 0
                    while chunk := f.read(1 << 20):
                        staged.write(offset, chunk)
                        offset += len(chunk)

            # The copy bypassed the hasher, so the digest is recomputed at flush.
            await trio.to_thread.run_sync(copy, limiter=self.s.io)

    # -- reading (writeback cache reads partial pages back) -------------------

    async def read(self, offset: int, size: int) -> bytes:
        async with self._lock:
            return await self._read(offset, size)

    async def _read(self, offset: int, size: int) -> bytes:
        if self.mode is None:
            data = bytes(self.head[offset : offset + size])
            return data + bytes(max(0, min(size, self.size - offset) - len(data)))
        if self.mode == "blob" and self.staged is not None and self.staged.fd >= 0:
            return (await self._staged_idle()).pread(offset, size)
        if self.mode == "archive":
            return self._recent_bytes(offset, min(size, self.fed - offset)) or b""
        if self.doc is not None:
            return self.doc[offset : offset + size]
        if self.committed is not None:
            path = blob_path(self.s.layout, self.committed)
            return await trio.to_thread.run_sync(read_range, path, offset, size,
                                                 limiter=self.s.io)
        return b""

    # -- flush: verify and commit ---------------------------------------------

    async def flush(self, shared: bool = False) -> None:
        async with self._lock:
            await self._flush(shared)

    async def _flush(self, shared: bool = False) -> None:
        """Verify and commit; `shared`: other descriptors hold the file open for writing.

        Then content that does not verify yet is not an error — they may still be
        writing (two `cp` of one blob to one name) — and the last writer's flush
        decides.
        """
        if self.state == "aborted":
            return
        if self.failure is not None:
            raise self.failure
        if not self.dirty and not self._verifies_as_is():
            problem = None if shared else self._empty_problem()
            if problem is not None:
                # Not recorded: dd and shell redirection flush a duplicate descriptor
                # before writing; the import's line comes at the end (release).
                raise problem
            return
        self.dirty = False
        try:
            await self._complete()
        except (OcifsError, OSError) as exc:
            if shared and isinstance(exc, OcifsError):
                self.dirty = True
                return
            await self._fail(exc)
            raise
        self.state = "held" if self.temporary else "done"
        self.error = ""

    def _empty_problem(self) -> OcifsError | None:
        """Why a file nothing was ever written to cannot be imported (None: it can,
        or data may still come)."""
        if (self.state != "open" or self.size or self.dirty or self.role.kind is Kind.AUTO
                or self.staged is not None or self.committed is not None):
            return None  # written to (or truncated) at some point: not an empty file
        if self.role.kind is Kind.BLOB:
            if self.role.digest is None or self.role.digest.matches(b""):
                return None
            return DigestMismatch(
                f"{self.name}: nothing was written (empty content), its name says "
                f"{self.role.digest}"
            )
        return InvalidInput(f"{self.name}: empty file, not a valid {self.role.kind.value}")

    def _verifies_as_is(self) -> bool:
        """A never-written file named by the empty blob's digest is complete."""
        return (
            self.state == "open"
            and self.size == 0
            and self.role.kind is Kind.BLOB
            and self.role.digest is not None
            and self.role.digest.matches(b"")
        )

    async def _complete(self) -> None:
        if self.mode is None:
            await self._decide(self._sniff_final())
        if self.mode == "archive":
            await self._complete_archive()
            return
        staged = await self._staged_idle()
        kind = self.role.kind
        if self.temporary:
            return  # held: imported when renamed (see `temporary`)
        if kind in (Kind.BLOB, Kind.AUTO):
            digest = await self._digest(staged)
            if self.role.digest is not None and digest != self.role.digest:
                raise DigestMismatch(
                    f"{self.name}: content is {digest} ({staged.size} bytes), "
                    f"its name says {self.role.digest}"
                )
            size = staged.size
            await self._commit_blob(digest, staged)
            if self.writer_exited and kind is Kind.AUTO:
                self.s.status.record(
                    "UNVERIFIED", self.name,
                    f"committed {digest} ({size} bytes), but its writer exited without "
                    "closing it (killed?): an unnamed file cannot be checked for "
                    "completeness; name it by its digest to have it verified",
                )
            else:
                self.s.status.record("OK", self.name, f"committed {digest} ({size} bytes)")
        elif kind is Kind.LAYOUT_MARKER:
            data = await self._read_doc(staged)
            documents.parse_oci_layout(data, self.name)
            self.s.status.record("OK", self.name, "checked")
            await self._keep_doc(data)
        elif kind is Kind.INDEX:
            await self._keep_doc(await self._complete_index(staged))
        else:
            await self._complete_ref(staged)

    async def _keep_doc(self, data: bytes) -> None:
        """Processed documents need no staging file (released promptly after close).
        Removed in a worker thread: an unlink and a close are file I/O, and this
        runs on the trio thread."""
        self.doc = data
        staged = self.staged
        if staged is not None:
            await trio.to_thread.run_sync(staged.discard, limiter=self.s.io)

    async def _digest(self, staged: StagedFile) -> Digest:
        hex_ = await trio.to_thread.run_sync(staged.hexdigest, limiter=self.s.cpu)
        return Digest(staged.algorithm, hex_)

    async def _commit_blob(self, digest: Digest, staged: StagedFile) -> None:
        await self.s.commit([(digest, staged)])
        self.committed = digest

    async def _read_doc(self, staged: StagedFile) -> bytes:
        data = await trio.to_thread.run_sync(
            staged.read_all, documents.MAX_DOCUMENT_BYTES, limiter=self.s.io
        )
        if len(data) > documents.MAX_DOCUMENT_BYTES:
            raise LimitExceeded(
                f"{self.name}: over the {documents.MAX_DOCUMENT_BYTES} byte document limit"
            )
        return data

    async def _complete_archive(self) -> None:
        archive, pipeline = self.archive, self.pipeline
        assert archive is not None and pipeline is not None
        await self._fill_holes(self.size)
        await pipeline.drain()
        result = await trio.to_thread.run_sync(archive.finish, limiter=self.s.cpu)
        new = await self.s.commit(list(result.staged.items()), result.entries)
        archive.staged.clear()
        names = sorted({n for e in result.entries if (n := entry_name(e))})
        ignored = f", {archive.ignored} unknown member(s) ignored" if archive.ignored else ""
        self.s.status.record(
            "OK", self.name,
            f"{result.kind}: {len(new)} new blob(s), refs {', '.join(names) or '-'}{ignored}",
        )

    async def _complete_index(self, staged: StagedFile) -> bytes:
        data = await self._read_doc(staged)

        def parse_and_check() -> list[tuple[dict[str, Any], Descriptor, set[Digest]]]:
            entries = _index_entries(data, self.name)
            indexjson.check_names([e for e, _ in entries], self.name)
            view = closure.BlobView(self.s.layout)
            return [(e, d, closure.missing(view, d)) for e, d in entries]

        checked = await trio.to_thread.run_sync(parse_and_check, limiter=self.s.io)
        source = "/".join(self.path)
        ready = [e for e, _, m in checked if not m]
        batch = Batch(source, merged=len(ready))
        batch.waited = any(m for _, _, m in checked)
        waiting = [PendingEntry(source, e, d, m, batch) for e, d, m in checked if m]
        await self.s.commit([], ready)
        for dropped in self.s.pending.replace_source(source, waiting):
            self.s.status.record("ABORTED", dropped.source,
                                 "replaced by a newer index.json before its blobs arrived")
        if waiting:
            self.s.status.on_change()  # listed in .pending; .status gets its line at the end
        else:
            self.s.finish_batch(batch)
        return data

    async def _complete_ref(self, staged: StagedFile) -> None:
        data = await self._read_doc(staged)
        entry, desc = await trio.to_thread.run_sync(
            _ref_entry, data, self.role.ref, self.name, limiter=self.s.cpu
        )
        await self._wait_for_closure(desc, desc.digest, staged)
        await self.s.commit([(desc.digest, staged)], [entry])
        self.committed = desc.digest
        self.s.status.record("OK", self.name, f"tagged {self.role.ref} as {desc.digest}")

    async def _wait_for_closure(
        self, desc: Descriptor, digest: Digest, staged: StagedFile
    ) -> None:
        """Missing blobs fail at once unless other open imports may still bring them."""
        deadline = trio.current_time() + self.s.ref_wait
        while True:
            view = closure.BlobView(self.s.layout, {digest: staged})
            absent = await trio.to_thread.run_sync(closure.missing, view, desc, limiter=self.s.io)
            others = [i for i in self.s.active if i is not self and i.state == "open"]
            if not absent:
                return
            if not others or trio.current_time() >= deadline:
                names = ", ".join(sorted(str(a) for a in absent)[:5])
                raise InvalidInput(f"{self.name}: references missing blob(s) {names}")
            with trio.move_on_at(deadline):
                await self.s.changed.wait()

    # -- end of life ----------------------------------------------------------

    async def release(self) -> None:
        async with self._lock:
            await self._release()

    async def _release(self) -> None:
        """Last descriptor closed: record what never verified, remove staging."""
        if self.pipeline is not None:
            try:
                await self.pipeline.drain()
            except Exception:
                pass
        if self.state == "open" and not self.error:
            if self.size:
                self.s.status.record("FAILED", self.name, "closed before it could be verified")
            elif (problem := self._empty_problem()) is not None:
                self.s.status.record("FAILED", self.name, str(problem))
            elif self.role.kind is Kind.AUTO and not self.temporary:
                self.s.status.record("OK", self.name, "empty file; nothing to import")
        if self.state != "held":
            await self.discard_off_loop()
        self.s.poke()

    async def abort(self) -> None:
        async with self._lock:
            await self._abort()

    async def _drain_and_discard(self) -> None:
        """Let the worker finish (its errors no longer matter), then drop the staged data."""
        if self.pipeline is not None:
            try:
                await self.pipeline.drain()
            except Exception:
                pass
        await self.discard_off_loop()

    async def discard_off_loop(self) -> None:
        """`discard` in a worker thread: staging writes may still be in flight
        (directio), and closing their file waits for them."""
        await trio.to_thread.run_sync(self.discard, limiter=self.s.io)

    async def _abort(self) -> None:
        """`rm` of a file being imported: drop everything staged."""
        if self.state == "open" and self.size:
            self.s.status.record("ABORTED", self.name, "removed before it was committed")
        self.state = "aborted"
        await self._drain_and_discard()

    async def replay_into(self, fresh: Ingest) -> None:
        """Write this held temporary's content into `fresh` (its new name's import)."""
        staged = self.staged
        assert self.state == "held" and staged is not None
        offset = 0
        while offset < self.size:
            chunk = await trio.to_thread.run_sync(
                staged.pread, offset, min(1 << 20, self.size - offset), limiter=self.s.io
            )
            if not chunk:
                break
            await fresh.write(offset, chunk)
            offset += len(chunk)
        if self.size > offset:
            await fresh.truncate(self.size)

    def discard(self) -> None:
        if self.staged is not None:
            self.staged.discard()
        if self.archive is not None:
            self.archive.discard()
        self.ahead.clear()
        self.recent.clear()


def _index_entries(data: bytes, where: str) -> list[tuple[dict[str, Any], Descriptor]]:
    """A layout's index.json: its entries, raw (kept as written) and parsed."""
    obj = documents.load_json(data, where)
    if isinstance(obj, dict) and obj.get("manifests", ()) is None:
        obj["manifests"] = []  # umoci's empty layout
    documents.parse_index(json.dumps(obj).encode(), where)
    return [
        (e, descriptor_mod.parse(e, f"{where}: manifests[{i}]"))
        for i, e in enumerate(obj["manifests"])
    ]


def _ref_entry(data: bytes, ref: str, where: str) -> tuple[dict[str, Any], Descriptor]:
    """The index entry that tags the manifest or index `data` as `ref`."""
    obj = documents.load_json(data, where)
    if not isinstance(obj, dict):
        raise InvalidInput(f"{where}: not a manifest or index (not a JSON object)")
    media_type = obj.get("mediaType")
    if media_type in mt.INDEX_TYPES or (media_type is None and "manifests" in obj):
        documents.parse_index(data, where)
        media_type = media_type or mt.OCI_INDEX
    else:
        documents.parse_manifest(data, where)
        media_type = media_type or mt.OCI_MANIFEST
    entry = {
        "mediaType": media_type,
        "digest": str(digest_mod.of_bytes(data)),
        "size": len(data),
        "annotations": {REF_NAME: ref},
    }
    return entry, descriptor_mod.parse(entry, where)


def _os_message(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)
