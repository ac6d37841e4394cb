"""Run a check: open the source, walk its documents, verify its blobs on a pool.

The blob half reads every byte once: a layer goes through the same one-pass
decoder the mount indexes with (`layers.indexer.build`: digest of the blob,
decompression, tar walk, diff_id), every other blob is hashed. hashlib, isal
and zstd release the GIL, so a small thread pool keeps both cores busy.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from ocifs.cache import DiskCache
from ocifs.check.files import blob_files
from ocifs.check.findings import PROBLEM, UNREFERENCED, WARNING, Report
from ocifs.check.walk import LayerUse, Walk, Walker
from ocifs.codec.blobio import BlobReader, open_regular, stamp_of
from ocifs.codec.limits import DEFAULT as DEFAULT_LIMITS
from ocifs.errors import InvalidInput, OcifsError
from ocifs.model.digest import Digest
from ocifs.sources.base import Source

READ_SIZE = 1 << 20


class _Capture(logging.Handler):
    """ocifs's own warnings and errors while checking become findings.

    A docker-save image the source had to leave out, a duplicate ref name or
    JSON key, a layer member name clamped inside the root: the mount logs
    them; the check reports them. The indexer's lines are left out: the layer
    job reports what they say.
    """

    def __init__(self, report: Report) -> None:
        super().__init__(logging.WARNING)
        self.report = report
        self._seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.name == "ocifs.layers.indexer" or message.endswith("(entry skipped)"):
            return  # the layer job and the walk report these themselves
        for prefix in (f"{self.report.source}/", f"{self.report.source}: "):
            message = message.removeprefix(prefix)
        if message in self._seen:  # the source and the walk parse index.json alike
            return
        self._seen.add(message)
        kind = PROBLEM if record.levelno >= logging.ERROR else WARNING
        self.report.add(kind, "", message)


@contextmanager
def captured(report: Report) -> Iterator[None]:
    logger = logging.getLogger("ocifs")
    handler = _Capture(report)
    saved = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = saved


def _layout_reader(layout: str) -> Callable[[Digest], BlobReader]:
    """Open layout blob files directly (also when index.json is too broken for a Source)."""
    from ocifs.sources.layout_dir import OwnedFileReader

    def open_blob(digest: Digest) -> BlobReader:
        fd, st = open_regular(os.path.join(layout, "blobs", digest.algorithm, digest.hex))
        return OwnedFileReader(fd, st.st_size, stamp_of(st))

    return open_blob


def _open(
    open_blob: Callable[[Digest], BlobReader], digest: Digest, subject: str, report: Report
) -> BlobReader | None:
    """The blob's reader, or None with the reason reported."""
    try:
        return open_blob(digest)
    except (OcifsError, OSError) as exc:
        report.add(PROBLEM, subject, f"cannot open: {exc}")
        return None


def _hash_job(open_blob: Callable[[Digest], BlobReader], digest: Digest, report: Report) -> None:
    subject = f"blob {digest}"
    reader = _open(open_blob, digest, subject, report)
    if reader is None:
        return
    hasher, offset = digest.hasher(), 0
    try:
        while offset < reader.size:
            data = reader.pread(offset, min(READ_SIZE, reader.size - offset))
            if not data:
                report.add(PROBLEM, subject, f"ends early at byte {offset} of {reader.size}")
                return
            hasher.update(data)
            offset += len(data)
    except (OcifsError, OSError) as exc:
        report.add(PROBLEM, subject, f"cannot read at byte {offset}: {exc}")
        return
    finally:
        reader.close()
        report.hashed(offset)
    if hasher.hexdigest() != digest.hex:
        report.add(PROBLEM, subject, f"content hashes to {digest.algorithm}:{hasher.hexdigest()}, "
                   "not to its name (blob corrupt)")


def _layer_job(
    open_blob: Callable[[Digest], BlobReader], digest: Digest, uses: list[LayerUse], report: Report
) -> None:
    """Decode, tar-walk and hash a layer; compare its diff_id with every config using it."""
    from ocifs.layers import indexer

    subject = f"layer {digest} ({uses[0].via})"
    reader = _open(open_blob, digest, subject, report)
    if reader is None:
        return
    try:
        key = str(digest)
        compression = indexer.choose_compression(uses[0].desc.media_type, reader.pread(0, 512), key)
        record, _ = indexer.build(reader, digest, compression, DEFAULT_LIMITS)
    except (OcifsError, OSError) as exc:
        text = str(exc)
        report.add(PROBLEM, subject, text.removeprefix(f"layer {key}: "))
        return
    finally:
        reader.close()
        report.hashed(reader.size)
    if not record.index.complete:
        error = record.index.error or "the tar archive is damaged"
        report.add(PROBLEM, subject, error.removeprefix(f"layer {key}: "))
        return
    for use in uses:
        if use.diff_id is not None and use.diff_id != record.diff_id:
            report.add(PROBLEM, f"layer {digest} ({use.via})",
                       f"uncompressed content hashes to {record.diff_id}; the config's "
                       f"rootfs.diff_ids[{use.position}] says {use.diff_id}")


def open_source(path: str, cache: DiskCache, report: Report) -> tuple[Source | None, bool]:
    """(source, index usable). Raises OcifsError when `path` is not a source at all.

    A layout directory whose index.json cannot be parsed is still checked (its
    blob files); the index.json problem is a finding, not a refusal.
    """
    if os.path.isdir(path):
        from ocifs.sources.layout_dir import LayoutDir

        index_path = os.path.join(path, "index.json")
        try:
            return LayoutDir(path, writable=False), True
        except InvalidInput as exc:
            if not str(exc).startswith(index_path):
                raise
            report.add(PROBLEM, "index.json", str(exc)[len(index_path) :].lstrip(": "))
            return None, False
    from ocifs.sources.detect import open_source as detect

    return detect(path, cache), True


def check(path: str, *, quick: bool = False, workers: int | None = None) -> Report:
    """Check the source at `path` (absolute). Raises OcifsError if it is not one."""
    report = Report(source=path, quick=quick)
    with tempfile.TemporaryDirectory(prefix="ocifs-check-") as temp, captured(report):
        source, usable = open_source(path, DiskCache(temp), report)
        try:
            _check(path, source, usable, report, quick, workers)
        finally:
            if source is not None:
                source.close()
    rank = {PROBLEM: 0, WARNING: 1, UNREFERENCED: 2}
    report.findings.sort(key=lambda f: (rank[f.kind], f.subject, f.message))
    return report


def _check(
    path: str, source: Source | None, usable: bool, report: Report, quick: bool,
    workers: int | None,
) -> None:
    is_layout = os.path.isdir(path)
    report.kind = source.kind if source is not None else "layout"
    if is_layout:
        present = blob_files(path, report)
        open_blob = _layout_reader(path)
    else:
        assert source is not None
        present = list(source.list_blobs())
        open_blob = source.open_blob
        # OciArchive.archive, DockerArchive._archive: sources have no common accessor yet
        archive = getattr(source, "archive", None) or getattr(source, "_archive", None)
        damage = getattr(getattr(archive, "table", None), "damage", "")
        if damage:
            report.add(PROBLEM, os.path.basename(path), f"{damage}; members after it are lost")
    walk = Walk()
    if source is not None and usable:
        try:
            index_bytes = source.index_bytes()
        except OcifsError as exc:
            report.add(PROBLEM, "index.json", str(exc))
        else:
            walk = Walker(source, report).run(index_bytes)
    report.blobs = len(present)
    _verify_blobs(source, present, walk, open_blob, report, quick, workers)
    if usable:
        _unreferenced(path, source, present, walk, is_layout, report)


def _verify_blobs(
    source: Source | None, present: list[Digest], walk: Walk,
    open_blob: Callable[[Digest], BlobReader], report: Report, quick: bool,
    workers: int | None,
) -> None:
    report.layers = sum(1 for d in present if d in walk.layers)
    if quick:
        return
    synthesized = source.synthesized if source is not None else (lambda _d: False)
    todo = [d for d in present if d not in walk.verified and not synthesized(d)]
    n = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="ocifs-check") as pool:
        futures = [
            pool.submit(_layer_job, open_blob, d, walk.layers[d], report)
            if d in walk.layers
            else pool.submit(_hash_job, open_blob, d, report)
            for d in todo
        ]
        for future in futures:
            future.result()


def _unreferenced(
    path: str, source: Source | None, present: list[Digest], walk: Walk, is_layout: bool,
    report: Report,
) -> None:
    """Blobs nothing reaches: for a layout, exactly what `ocifs gc --grace 0` would remove."""
    reached: set[Digest] = walk.reached
    if is_layout:
        from ocifs.layout import reach

        try:
            reached = set(reach.compute(path).via)
        except OcifsError as exc:
            report.add(WARNING, "unreferenced blobs", f"not computed: {exc}")
            return
    for digest in present:
        if digest in reached:
            continue
        size = source.blob_size(digest) if source is not None else None
        report.unreferenced_bytes += size or 0
        what = "`ocifs gc` would remove it" if is_layout else "nothing references it"
        report.add(UNREFERENCED, f"blob {digest}", f"{size} bytes, not reachable from "
                   f"index.json ({what})")
