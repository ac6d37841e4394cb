"""`DirParents` mirrors the kernel's lookup count of each directory (see ocifs/dirparents.py)."""

from __future__ import annotations

from ocifs.dirparents import DirParents


def test_an_entry_lives_until_every_reference_is_forgotten() -> None:
    parents = DirParents()
    parents.seen(10, 1)  # lookup
    parents.seen(10, 1)  # READDIRPLUS of its parent
    parents.forget(10, 1)
    assert parents.parent(10) == 1 and len(parents) == 1
    parents.forget(10, 1)
    assert parents.parent(10) is None and len(parents) == 0


def test_the_last_place_seen_is_the_parent() -> None:
    parents = DirParents()
    parents.seen(10, 1)
    parents.seen(10, 2)
    assert parents.parent(10) == 2


def test_forgetting_more_than_was_counted_or_unknown_inodes_is_harmless() -> None:
    parents = DirParents()
    parents.forget(99, 3)
    parents.seen(10, 1)  # e.g. a mkdir reference the table did not see
    parents.forget(10, 2)
    assert len(parents) == 0
