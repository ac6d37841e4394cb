"""The slowest transfer a registry answer may make before it counts as stalled.

Why: the read timeout only catches an answer that sends nothing at all. A
registry that trickles (a byte every few seconds: slow-loris) never trips it,
and a read waiting on such an answer would wait for ever. So every body
(documents in `client.py`, blobs in `download.py`) must also bring at least
`MIN_RATE` bytes per second over each window of `window` seconds (the
client's timeout); an answer that does not is a transient failure like a
timeout: retried or resumed, then EIO.
"""

from __future__ import annotations

import time

#: bytes per second an answer must average over each window (a 1 KiB/s link is not a link)
MIN_RATE = 1024


class TooSlow(Exception):
    """The answer brought fewer than MIN_RATE bytes per second over a whole window."""


class Pace:
    """Counts the bytes of one answer as they arrive; `add` raises TooSlow."""

    __slots__ = ("_got", "_need", "_start", "_window")

    def __init__(self, window: float) -> None:
        self._window = window
        self._need = MIN_RATE * window
        self._start = time.monotonic()
        self._got = 0

    def add(self, n: int) -> None:
        self._got += n
        now = time.monotonic()
        if now - self._start < self._window:
            return
        if self._got < self._need:
            raise TooSlow(
                f"stalled: {self._got} bytes in {now - self._start:.0f} s "
                f"(less than {MIN_RATE} bytes/s)"
            )
        self._start, self._got = now, 0
