"""The daemon: open the source, build the tree, run pyfuse3, unmount cleanly.

Imported only by the process that serves (the forked daemon, or `ocifs mount
-f`), and only once the source is open (`ocifs.mount.open_source`: a bad one
is refused, in one line, before pyfuse3 and trio -- most of the start-up time
-- are imported, and before anything is mounted). The daemon never forks
inside a running trio loop.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import pyfuse3
import trio

from ocifs import fastloop
from ocifs.cache import DiskCache
from ocifs.errors import MountError
from ocifs.fuse import Operations
from ocifs.mount import MountOptions, option_suggestion
from ocifs.sources.base import Source
from ocifs.tree import symlinks
from ocifs.tree.tree import Tree

if TYPE_CHECKING:
    from ocifs.importer.area import ImportDir

log = logging.getLogger(__name__)

#: Readahead the daemon asks the kernel for (BASELINES §4: the biggest lever for
#: uncached sequential reads; requests are capped at 1 MiB by max_pages anyway).
READ_AHEAD_KB = 1024


def _fuse_options(source: Source, opts: MountOptions) -> set[str]:
    options = {"subtype=ocifs", "nosuid", "nodev", "noatime", f"fsname={_fsname(source)}"}
    if "allow_other" in opts.fuse_options:
        # Other users: the kernel enforces the image's modes and owners for them
        # (docs/permissions.md). Without other users, ocifs answers access()
        # itself so that only `.import/` looks writable, even to root.
        options |= set(pyfuse3.default_options)  # default_permissions
    if not source.writable:
        options.add("ro")
    # allow_other and any other FUSE option pass through; nonempty is ocifs's own
    # check, and rw cannot override a read-only source.
    options.update(
        o for o in opts.fuse_options if o not in ("nonempty", "rw") and not _ocifs_option(o)
    )
    return options


def _ocifs_option(option: str) -> bool:
    """`-o` options ocifs handles itself rather than passing them to FUSE."""
    return option.split("=", 1)[0] == "symlinks"


def _fsname(source: Source) -> str:
    """The source column of `findmnt`/`mount`/`/proc/mounts`: the absolute source path.

    Escaped for libfuse's option parser (`,` separates options, `\\ooo` is a
    byte); pyfuse3 passes options as ASCII.
    """
    raw = os.fsencode(source.path)
    return "".join(
        chr(b) if 0x20 < b < 0x7F and b not in b",\\" else f"\\{b:03o}" for b in raw
    )


def _set_readahead(mountpoint: str) -> None:
    """Raise the mount's readahead window (root only; silently skipped otherwise)."""
    try:
        dev = os.stat(mountpoint).st_dev
        path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
        with open(path, "w") as f:
            f.write(str(READ_AHEAD_KB))
    except OSError as exc:
        log.debug("could not set readahead: %s", exc)


#: What pyfuse3 raises when libfuse fails, saying only which call failed.
_GENERIC_FAILURES = ("fuse_session_new() failed", "fuse_session_mount failed")


def _init_fuse(ops: Operations, mountpoint: str, options: set[str]) -> None:
    """`pyfuse3.init`, failing with libfuse's own reason in one line.

    libfuse (and the fusermount3 it runs for non-root users) explains a failure
    only on file descriptor 2 -- `unknown option(s)`, `option allow_other only
    allowed if 'user_allow_other' is set` -- while pyfuse3 raises a bare
    `fuse_session_new() failed`, and a detached daemon's stderr is /dev/null.
    So fd 2 goes to a memory file for the call: on failure its text is the
    reason; on success anything said there is logged as a warning.
    """
    said = os.memfd_create("ocifs-libfuse-stderr")
    saved = os.dup(2)
    try:
        os.dup2(said, 2)
        try:
            pyfuse3.init(ops, mountpoint, options)
        finally:
            os.dup2(saved, 2)
        os.lseek(said, 0, os.SEEK_SET)
        for line in _libfuse_lines(_read_all(said)):
            log.warning("libfuse: %s", line)
    except RuntimeError as exc:
        os.lseek(said, 0, os.SEEK_SET)
        reason = "; ".join(_libfuse_lines(_read_all(said))) or str(exc)
        raise MountError(
            f"{mountpoint}: cannot mount: {reason}{option_suggestion(reason)}"
        ) from None
    finally:
        os.close(saved)
        os.close(said)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _libfuse_lines(text: bytes) -> list[str]:
    lines = [line.strip() for line in text.decode(errors="replace").splitlines()]
    return [line for line in lines if line and line not in _GENERIC_FAILURES]


def serve(
    source: Source, cache: DiskCache, mountpoint: str, opts: MountOptions, ready_fd: int | None
) -> int:
    """Mount and serve until unmounted or signalled. Returns the exit status."""
    from ocifs.layers.store import LayerStore

    if opts.read_only:
        source.writable = False
    tree = Tree(
        source, LayerStore(source, cache), contain_symlinks=opts.symlinks == symlinks.CONTAINED
    )
    area = None
    if source.writable:
        from ocifs.importer.area import ImportDir, recover
        from ocifs.tree.edits import TreeEdits

        recover(source.path)
        area = ImportDir(source.path, tree.refresh, lock_timeout=opts.lock_timeout)
        edits = TreeEdits(tree, source.path, opts.lock_timeout, area.session.status.record)
    else:
        edits = None
    _install_status(source, mountpoint, cache, tree, area)
    ops = Operations(tree, area, edits)
    _hold_signals()
    _init_fuse(ops, mountpoint, _fuse_options(source, opts))
    _test_signal_after_init()
    log.info("mounted %s (%s) on %s", source.path, source.kind, mountpoint)
    # count the cache now, off the trio thread: that also removes the temporary
    # files a dead daemon left (a download it could not end before exiting)
    threading.Thread(target=cache.evict, name="ocifs-cache-count", daemon=True).start()
    status = 0

    def stop_background() -> None:
        tree.layers.stop()
        source.stop()

    try:
        spin_us = fastloop.default_spin_us() if opts.busy_poll_us is None else opts.busy_poll_us
        trio.run(_main, ops, mountpoint, ready_fd, spin_us, stop_background)
    except BaseException:
        log.exception("ocifs stopped on an internal error")
        status = 1
    finally:
        if area is not None:
            area.close()
        tree.blob_access.close()
        tree.layers.close()
        source.close()
        pyfuse3.close(unmount=True)
        log.info("unmounted %s", mountpoint)
    return status


def _install_status(
    source: Source, mountpoint: str, cache: DiskCache, tree: Tree, area: ImportDir | None
) -> None:
    from ocifs import status

    facts = status.MountFacts(
        mountpoint=mountpoint,
        source=source.path,
        kind=source.kind,
        read_only=area is None,
        cache_dir=str(cache.directory),
        cache_limit=cache.limit_bytes,
    )
    status.install(tree, status.StatusReport(facts, tree.layers, cache, area))


async def _main(
    ops: Operations,
    mountpoint: str,
    ready_fd: int | None,
    spin_us: int,
    stop_background: Callable[[], None],
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ops.run_invalidations)
        nursery.start_soon(ops.watch_outside_changes)
        nursery.start_soon(_on_signals, stop_background)
        nursery.start_soon(_announce_ready, mountpoint, ready_fd)
        fastloop.install(spin_us)
        try:
            await pyfuse3.main()
        finally:
            fastloop.uninstall()
            # Unmounted: index passes and downloads in worker threads end now.
            # trio.run waits for every `to_thread` call (they cannot be
            # cancelled), so without this the daemon outlives the unmount by
            # as long as the biggest layer takes to index or download.
            stop_background()
        nursery.cancel_scope.cancel()


#: what ends the daemon: it unmounts (and exits 0)
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: signals that came before `_on_signals` listened (`_hold_signals`)
_early_signals: list[int] = []


def _hold_signals() -> None:
    """Record SIGINT/SIGTERM/SIGHUP from now until `_on_signals` listens.

    Installed just before `pyfuse3.init`: a Ctrl-C there (KeyboardInterrupt
    outside the `try` that unmounts) or a SIGTERM (the default action kills the
    process) would leave the mount behind with nobody serving it. Recorded, the
    signal unmounts as soon as the loop runs. trio restores this handler when
    `trio.run` ends, so one during the clean-up after it is recorded (ignored) too.
    """
    _early_signals.clear()
    for signum in _SIGNALS:
        signal.signal(signum, lambda n, _frame: _early_signals.append(n))


def _test_signal_after_init() -> None:
    """Test hook: the daemon signals itself right after the mount exists, in the
    window `_hold_signals` covers (OCIFS_TEST_SIGNAL_AFTER_INIT=INT|TERM|HUP)."""
    from ocifs.durable import test_env

    name = test_env("OCIFS_TEST_SIGNAL_AFTER_INIT")
    if name:
        os.kill(os.getpid(), getattr(signal, f"SIG{name}"))


async def _on_signals(stop_background: Callable[[], None]) -> None:
    with trio.open_signal_receiver(*_SIGNALS) as signals:
        signum = _early_signals[0] if _early_signals else await signals.__anext__()
        log.info("signal %d: unmounting", signum)
        # before terminate: requests waiting for a pass must end for main() to return
        stop_background()
        pyfuse3.terminate()


async def _announce_ready(mountpoint: str, ready_fd: int | None) -> None:
    # stat() of the mountpoint goes through our own loop, so it proves the mount answers.
    # Abandoned if the loop ends first (a signal right after the mount): the stat
    # would wait for a loop that no longer reads, and trio.run for the stat.
    await trio.to_thread.run_sync(_set_readahead, mountpoint, abandon_on_cancel=True)
    if ready_fd is not None:
        try:
            os.write(ready_fd, b"ready\n")
            # The command waits for end-of-file; the fd number stays taken (by
            # /dev/null) so that a late error report cannot land in a reused fd.
            null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            os.dup2(null, ready_fd, inheritable=False)
            os.close(null)
        except OSError:
            pass
