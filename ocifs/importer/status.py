"""Outcome of each import, readable inside the mount and written to the log.

`.import/.status` lists the most recent outcomes, one line per import, newest
last, written once the import has ended: lines are only ever appended (so
`tail -f` follows it), except that the oldest are dropped beyond `MAX_LINES`.
`.import/.errors` lists the failures only. `.import/.pending` lists the
index.json entries still waiting for blobs (current state, not history); their
import's line goes to `.status` when the last of them is merged. A line reads::

    2026-11-23T15:04:05Z FAILED blobs/sha256/ab12...: content is sha256:..., name says ...

Kinds: OK (committed; the detail names the digest or the refs), FAILED (the
writer's close() failed, or the file was released before it could be verified),
ABORTED (removed with rm before it completed), UNVERIFIED (an unnamed file
whose writer went away without a final close: what it had written was
committed under its own digest, but whether that was all of it cannot be told),
UNSYNCED (committed and visible in index.json, but an fsync after it failed, so
it may not survive a crash; its close() failed with EIO).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

log = logging.getLogger("ocifs.import")

MAX_LINES = 1000
#: Kinds listed in `.errors` (and logged as warnings).
ERROR_KINDS = ("FAILED", "UNSYNCED")
#: Lines dropped at once when the list is full: rarely rewriting the start keeps
#: the file append-only for `tail -f` between trims.
TRIM_LINES = 200


def stamp(when: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


class StatusLog:
    """A bounded list of outcome lines, plus the pending entries' lines (the caller's)."""

    def __init__(self, pending_lines: Callable[[], list[str]] | None = None) -> None:
        self._lines: deque[tuple[str, str]] = deque()
        self._pending_lines = pending_lines or (lambda: [])
        #: called after every change (the `.import/` area updates its report files)
        self.on_change: Callable[[], None] = lambda: None

    def record(self, kind: str, path: str, detail: str) -> None:
        detail = detail.removeprefix(f"{path}: ")
        line = f"{stamp()} {kind} {path}: {detail}"
        if len(self._lines) >= MAX_LINES:
            for _ in range(TRIM_LINES):
                self._lines.popleft()
        self._lines.append((kind, line))
        if kind in (*ERROR_KINDS, "ABORTED", "UNVERIFIED"):
            log.warning("import %s: %s: %s", kind.lower(), path, detail)
        else:
            log.info("import %s: %s: %s", kind.lower(), path, detail)
        self.on_change()

    def status_text(self) -> bytes:
        return _text(line for _, line in self._lines)

    def errors_text(self) -> bytes:
        return _text(line for kind, line in self._lines if kind in ERROR_KINDS)

    def pending_text(self) -> bytes:
        return _text(self._pending_lines())


def _text(lines: Iterable[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode("utf-8", "surrogateescape")
