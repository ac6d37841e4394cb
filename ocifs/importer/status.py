"""Outcome of each import, readable inside the mount and written to the log.

`.import/.status` lists the most recent outcomes (one line each, newest last)
followed by the entries still waiting for blobs; `.import/.errors` lists the
failures only. A line reads::

    2026-11-23T15:04:05Z FAILED blobs/sha256/ab12...: content is sha256:..., name says ...

Kinds: OK (committed; the detail names the digest or the refs), PENDING (an
index.json entry waiting for blobs), FAILED (the writer's close() failed or the
file was released unverified), ABORTED (removed with rm before it completed).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("ocifs.import")

MAX_LINES = 1000


class StatusLog:
    """A bounded list of outcome lines; rendering pending entries is the caller's."""

    def __init__(self, pending_lines: Callable[[], list[str]] | None = None) -> None:
        self._lines: deque[tuple[str, str]] = deque(maxlen=MAX_LINES)
        self._pending_lines = pending_lines or (lambda: [])

    def record(self, kind: str, path: str, detail: str) -> None:
        detail = detail.removeprefix(f"{path}: ")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = f"{stamp} {kind} {path}: {detail}"
        self._lines.append((kind, line))
        if kind in ("FAILED", "ABORTED"):
            log.warning("import %s: %s: %s", kind.lower(), path, detail)
        else:
            log.info("import %s: %s: %s", kind.lower(), path, detail)

    def status_text(self) -> bytes:
        lines = [line for _, line in self._lines]
        lines += self._pending_lines()
        return "".join(f"{line}\n" for line in lines).encode("utf-8", "surrogateescape")

    def errors_text(self) -> bytes:
        lines = [line for kind, line in self._lines if kind == "FAILED"]
        return "".join(f"{line}\n" for line in lines).encode("utf-8", "surrogateescape")
