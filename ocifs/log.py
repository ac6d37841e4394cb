"""Logging setup: stderr in the foreground, a log file when detached; --debug for detail."""

from __future__ import annotations

import errno
import logging
import os
import sys

FORMAT = "%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s: %(message)s"


def setup(*, debug: bool, log_file: str | None) -> None:
    # backslashreplace: names from images may hold lone surrogates (undecodable bytes)
    handler: logging.Handler = (
        logging.FileHandler(log_file, errors="backslashreplace")
        if log_file
        else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    _SEEN.clear()  # "once" is per log: what the CLI met before the daemon's log began
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # pyfuse3 and trio are chatty at DEBUG; keep them at INFO unless asked.
    for name in ("pyfuse3", "trio", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)
    pyfuse3_log = logging.getLogger("pyfuse3")
    for old in [f for f in pyfuse3_log.filters if isinstance(f, _GoneRequestFilter)]:
        pyfuse3_log.removeFilter(old)
    pyfuse3_log.addFilter(_GoneRequestFilter())


class _GoneRequestFilter(logging.Filter):
    """Demote pyfuse3's "fuse_reply_* failed with No such file or directory" to DEBUG.

    The kernel answers a reply with ENOENT when it no longer waits for that request:
    the caller was interrupted, or the mount was unmounted while an asynchronous
    `release` was still being handled (`cp f /mnt/x && umount /mnt` does that).
    Nothing is lost and nobody can be told, so it is not an error.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        args = record.args if isinstance(record.args, tuple) else ()
        if msg.endswith("fuse_reply_* failed with %s") and args == (os.strerror(errno.ENOENT),):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg += " (the kernel no longer waits for this request)"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


#: messages already logged by `once` (bounded: past the cap, repeats may be logged again)
_SEEN: set[str] = set()
_SEEN_CAP = 100_000


def once(logger: logging.Logger, level: int, message: str, *, cause: str | None = None) -> None:
    """Log `message` (one line, already formatted) the first time only.

    For problems met on every request for a bad object (a FIFO blob, a manifest
    that cannot be used, a layer that fails its diff_id): the log says it once,
    each request still fails. `cause` (default: the message) is what counts as
    "the same problem": the text of the underlying error, so that a blob that
    breaks its own file, a layer tree and a rootfs is reported once, by whichever
    view met it first.
    """
    key = message if cause is None else cause
    if key in _SEEN:
        return
    if len(_SEEN) >= _SEEN_CAP:
        _SEEN.clear()
    _SEEN.add(key)
    logger.log(level, "%s", message)
