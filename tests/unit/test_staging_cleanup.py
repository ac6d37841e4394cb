"""Issue 13: `.ocifs-staging/` is removed when unused, never under a live import."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from ocifs.importer import staging
from ocifs.importer.staging import LOCK_FILE, StagedFile


def test_empty_staging_directory_is_removed(tmp_path: Path) -> None:
    layout = str(tmp_path)
    staged = StagedFile(layout)
    staged.discard()
    assert os.path.isdir(staging.staging_dir(layout))
    staging.remove_if_unused(layout)
    assert not os.path.exists(staging.staging_dir(layout))
    staging.remove_if_unused(layout)  # nothing there: nothing to do


def test_staging_directory_in_use_is_kept(tmp_path: Path) -> None:
    layout = str(tmp_path)
    live = StagedFile(layout)
    staging.remove_if_unused(layout)  # not empty: a live import of another mount
    assert os.path.exists(live.path)
    live.discard()
    # another process holds the layout lock: it may be about to use the directory
    holder = os.open(os.path.join(layout, LOCK_FILE), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        staging.remove_if_unused(layout)
        assert os.path.isdir(staging.staging_dir(layout))
    finally:
        os.close(holder)
    staging.remove_if_unused(layout)
    assert not os.path.exists(staging.staging_dir(layout))


def test_staging_file_is_created_even_if_the_directory_vanished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another mount's unmount removes the empty directory between mkdir and open."""
    layout = str(tmp_path)
    real_makedirs = staging.durable.makedirs
    calls = []

    def makedirs_then_lose_it(path: str) -> None:
        real_makedirs(path)
        calls.append(path)
        if len(calls) == 1:
            staging.remove_if_unused(layout)

    monkeypatch.setattr(staging.durable, "makedirs", makedirs_then_lose_it)
    staged = StagedFile(layout)
    try:
        staged.append(b"data")
        staged.settle()  # appends are on disk once settled (importer.directio)
        assert os.path.getsize(staged.path) == 4
        assert len(calls) == 2
    finally:
        staged.discard()
