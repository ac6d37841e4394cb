"""Logging setup: stderr in the foreground, a log file when detached; --debug for detail."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s: %(message)s"


def setup(*, debug: bool, log_file: str | None) -> None:
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # pyfuse3 and trio are chatty at DEBUG; keep them at INFO unless asked.
    for name in ("pyfuse3", "trio"):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)
