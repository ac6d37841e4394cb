"""Start the serving process: detached (forked, `ready` on a pipe) or in the foreground.

Light on purpose: `ocifs mount` imports this before it forks, and only the
forked daemon imports `ocifs.serve` (pyfuse3, trio, the tree, the source
readers). Forking rather than starting a new interpreter saves a second Python
start-up; it is safe because no trio loop and no thread exists yet.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ocifs.errors import OcifsError

if TYPE_CHECKING:
    from ocifs.mount import MountOptions
    from ocifs.registry.options import RegistryOptions

EXIT_ERROR = 1


@dataclass(frozen=True)
class Job:
    """Everything the daemon needs, decided by the command before it forks."""

    source: str
    #: how to reach the registry when `source` is a docker:// reference, else None
    registry: RegistryOptions | None
    mountpoint: str
    options: MountOptions
    debug: bool = False
    log_file: str | None = None
    pid_file: str | None = None


def run_foreground(job: Job) -> int:
    """`ocifs mount -f`: open the source, then log to stderr and serve here."""
    from ocifs.mount import build_cache, open_source

    if job.registry is not None:
        # retries while resolving are logged by the daemon, not printed here
        logging.getLogger("ocifs").addHandler(logging.NullHandler())
    cache = build_cache(job.options)
    source = open_source(job.source, job.registry, cache)
    _setup_log(job, job.log_file)
    from ocifs import trioimport

    trioimport.import_trio()
    from ocifs import serve

    def run() -> int:
        _write_pid(job)
        return serve.serve(source, cache, job.mountpoint, job.options, None)

    return _guarded(run, ready_fd=None)


def start(job: Job, inherited_fds: set[int]) -> int:
    """Fork the daemon and wait for its `ready` line or its one error line.

    The daemon opens the source (a bad one is refused, in one line, before
    anything is mounted) and mounts; the command only waits, so it imports
    nothing the daemon does not need.
    """
    log_file = job.log_file or _default_log_file()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        status = EXIT_ERROR
        try:
            os.close(read_fd)
            os.setsid()
            os.chdir("/")
            _close_inherited(inherited_fds, keep=write_fd)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            if devnull > 2:
                os.close(devnull)
            _setup_log(job, log_file)
            status = _guarded(lambda: _open_and_serve(job, write_fd), ready_fd=write_fd)
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        try:
            message = pipe.read().decode(errors="replace").strip()
        except KeyboardInterrupt:
            # Ctrl-C while waiting: the daemon (in its own session) would mount
            # anyway. SIGTERM stops it: before the mount it just ends, after it
            # the daemon unmounts as `ocifs umount` would have it.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            raise
    if message == "ready":
        return 0
    _pid, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    print(
        message or f"ocifs: the mount process exited (status {code}); see {log_file}",
        file=sys.stderr,
    )
    return EXIT_ERROR


def _open_and_serve(job: Job, ready_fd: int) -> int:
    from ocifs.mount import build_cache, open_source

    cache = build_cache(job.options)
    source = open_source(job.source, job.registry, cache)
    from ocifs import trioimport

    trioimport.import_trio()
    from ocifs import serve  # pyfuse3 and trio: only for a source that opened

    _write_pid(job)
    return serve.serve(source, cache, job.mountpoint, job.options, ready_fd)


def _write_pid(job: Job) -> None:
    if job.pid_file:
        try:
            with open(job.pid_file, "w") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as exc:
            from ocifs.errors import MountError

            raise MountError(
                f"{job.pid_file}: cannot write the pid file: {exc.strerror}"
            ) from None


def _setup_log(job: Job, log_file: str | None) -> None:
    from ocifs import log as log_setup

    log_setup.setup(debug=job.debug, log_file=log_file)


def _guarded(serve: Callable[[], int], ready_fd: int | None) -> int:
    """`serve()`, its errors reported in one line (to the command, through `ready_fd`)."""
    try:
        return serve()
    except OcifsError as exc:
        if ready_fd is None:
            raise
        _report_to_parent(ready_fd, f"ocifs: {exc}")
        return EXIT_ERROR
    except Exception as exc:
        logging.getLogger("ocifs").exception("internal error while mounting")
        message = f"ocifs: internal error while mounting: {exc!r} (see the log)"
        if ready_fd is None:
            print(message, file=sys.stderr)
        else:
            _report_to_parent(ready_fd, message)
        return EXIT_ERROR


def _report_to_parent(ready_fd: int, message: str) -> None:
    try:
        os.write(ready_fd, f"{message}\n".encode())
    except OSError:
        pass


def _close_inherited(inherited: set[int], keep: int) -> None:
    """Close what the caller passed us (its flocks, pipes, sockets), except 0-2 and `keep`.

    A detached daemon outlives `ocifs mount`: holding the caller's descriptors
    would keep a shell's `flock` held, or a pipe reader waiting for EOF, until
    unmount. Descriptors ocifs opened itself (the source, the cache) stay open.
    """
    for fd in sorted(inherited - {0, 1, 2, keep}):
        try:
            os.close(fd)
        except OSError:
            pass


def _default_log_file() -> str:
    from platformdirs import user_log_dir

    directory = user_log_dir("ocifs")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        from ocifs.errors import MountError

        raise MountError(
            f"{directory}: cannot create the log directory: {exc.strerror} "
            "(--log FILE chooses another)"
        ) from None
    return os.path.join(directory, "ocifs.log")
