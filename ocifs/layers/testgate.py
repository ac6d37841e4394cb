"""Test-only: hold an indexing pass part-way, to prove what is answered before it ends.

`OCIFS_TEST_INDEX_GATE=<n>:<path>` (with OCIFS_TEST_MODE=1): every indexing pass
stops before adding its member number n+1 until the file `<path>` exists (at
most `GATE_SECONDS`, or until the store stops: unmounting). Tests use it to order
events instead of timing them.
"""

from __future__ import annotations

import os
import threading
import time

from ocifs.codec.limits import Limits
from ocifs.durable import test_env
from ocifs.layers.tarindex import IndexBuilder
from ocifs.layers.tarwalk import Member

#: longest a gated pass waits for its gate file
GATE_SECONDS = 120.0


class _GatedBuilder(IndexBuilder):
    def __init__(
        self, where: str, limits: Limits, after: int, gate: str, stop: threading.Event | None
    ) -> None:
        super().__init__(where, limits)
        self._after = after
        self._gate = gate
        self._stop = stop

    def add(self, member: Member) -> None:
        if self.members == self._after:
            deadline = time.monotonic() + GATE_SECONDS
            while not os.path.exists(self._gate) and time.monotonic() < deadline:
                if self._stop is None:
                    time.sleep(0.01)
                elif self._stop.wait(0.01):
                    break
        super().add(member)


def gated_builder(
    where: str, limits: Limits, stop: threading.Event | None = None
) -> IndexBuilder | None:
    """A builder that waits at the test gate, when the test environment sets one."""
    setting = test_env("OCIFS_TEST_INDEX_GATE")
    if not setting:
        return None
    after, _, gate = setting.partition(":")
    return _GatedBuilder(where, limits, int(after), gate, stop)
