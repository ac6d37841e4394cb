"""Log setup: pyfuse3's benign "request gone" replies are not reported as errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocifs import log


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root, pyfuse3_log = logging.getLogger(), logging.getLogger("pyfuse3")
    saved = (root.handlers[:], root.level, pyfuse3_log.level, pyfuse3_log.filters[:])
    yield
    for h in root.handlers:
        h.close()
    root.handlers[:], root.level = saved[0], saved[1]
    pyfuse3_log.setLevel(saved[2])
    pyfuse3_log.filters[:] = saved[3]


def _emit(path: Path, *, debug: bool) -> str:
    log.setup(debug=debug, log_file=str(path))
    pyfuse3_log = logging.getLogger("pyfuse3")
    # exactly how pyfuse3's handlers.pxi logs a failed reply
    pyfuse3_log.error("fuse_release(): fuse_reply_* failed with %s", "No such file or directory")
    pyfuse3_log.error("fuse_read(): fuse_reply_* failed with %s", "Invalid argument")
    for h in logging.getLogger().handlers:
        h.flush()
    return path.read_text()


def test_reply_to_a_request_the_kernel_dropped_is_not_an_error(tmp_path: Path) -> None:
    text = _emit(tmp_path / "a.log", debug=False)
    assert "fuse_release()" not in text
    assert " ERROR pyfuse3: fuse_read(): fuse_reply_* failed with Invalid argument" in text


def test_debug_still_shows_it_at_debug_level(tmp_path: Path) -> None:
    text = _emit(tmp_path / "b.log", debug=True)
    assert " DEBUG pyfuse3: fuse_release(): fuse_reply_* failed with No such file or" in text
    assert " ERROR pyfuse3: fuse_read()" in text
