"""A layer's tree while its indexing pass still runs: names answered before the end.

The pass runs in a worker thread and adds members to an `IndexBuilder`; the
trio thread reads the builder's tree as it grows (see `layers.tarindex`). A
name found here is a *provisional* answer: a later member of the same path
replaces it, and a digest mismatch at the end makes the whole layer fail. So
only the final index answers "no such name", lists a directory (a tar may add
to any directory up to its last member, so nothing before the end proves a
listing complete), or says that an answer is final; the tree marks provisional
answers as not cacheable by the kernel (`tree.layertree`).

A lookup of a name the pass has not reached yet waits for it: it registers in
the builder's `watched` table, which the builder's thread fires when the name
is set, or until the pass ends, whichever comes first.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from ocifs.layers.entry import LayerIndex
from ocifs.layers.tarindex import IndexBuilder


class LiveIndex:
    """One running pass as the trio thread sees it. Trio-thread methods except `attach`."""

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        #: shared with the builder once attached (it fires and removes entries)
        self.watched: dict[tuple[int, str], Callable[[], None]] = {}
        self._events: dict[tuple[int, str], trio.Event] = {}
        #: the builder's tree (same lists), once the pass has started building
        self.view: LayerIndex | None = None
        self.ended = False

    def attach(self, builder: IndexBuilder) -> None:
        """Called in the worker thread by the pass that builds the index."""
        builder.watched = self.watched
        self.view = LayerIndex(builder.entries, builder.children, complete=False)

    def find(self, directory: int, name: str) -> int | None:
        """Entry number of `name` in directory entry `directory`, if seen so far."""
        view = self.view
        if view is None:
            return None
        kids = view.children[directory]
        return None if kids is None else kids.get(name)

    async def wait_for(self, directory: int, name: str) -> None:
        """Return once `name` is in `directory`, or the pass has ended."""
        key = (directory, name)
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = trio.Event()
            # registered before the check below: a name set in between is seen
            # either by that check or by the builder's look at `watched`
            self.watched[key] = lambda: self._token.run_sync_soon(self._fire, key)
        if self.ended or self.find(directory, name) is not None:
            return
        await event.wait()

    def _fire(self, key: tuple[int, str]) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    def end(self) -> None:
        """The pass is over (final index, or failure): wake every waiter."""
        self.ended = True
        self.watched.clear()
        for event in self._events.values():
            event.set()
        self._events.clear()
