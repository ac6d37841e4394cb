"""What `ocifs mount` checks before it starts the daemon: options and the mountpoint.

Light on purpose: the command imports only this (and argparse) before it forks
the daemon (`ocifs.daemon`). The daemon opens the source here (`open_source`,
which imports only the readers of that kind of source), then imports pyfuse3,
trio and the tree (`ocifs.serve`) and mounts.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ocifs.errors import MountError
from ocifs.tree import symlinks

if TYPE_CHECKING:
    from pathlib import Path

    from ocifs.cache import DiskCache
    from ocifs.registry.options import RegistryOptions
    from ocifs.sources.base import Source


@dataclass
class MountOptions:
    #: `-o` options as given; passed to FUSE except those ocifs handles itself
    fuse_options: list[str] = field(default_factory=list)
    read_only: bool = False
    cache_dir: str | None = None
    cache_size: int | None = None
    #: busy poll between FUSE requests, µs (None: `fastloop.default_spin_us()`)
    busy_poll_us: int | None = None
    #: seconds an import waits for the layout lock before failing with EBUSY
    lock_timeout: float = 30.0
    #: symlink targets: "stored" (as in the layer) or "contained" (ocifs.tree.symlinks)
    symlinks: str = "stored"


def check_mountpoint(mountpoint: str, *, nonempty_ok: bool = False) -> None:
    """One-line errors for mountpoints that cannot be used."""
    try:
        st = os.stat(mountpoint)
    except FileNotFoundError:
        raise MountError(f"{mountpoint}: mountpoint does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountError(
                f"{mountpoint}: a dead FUSE mount is here; run `ocifs umount {mountpoint}` first"
            ) from None
        raise MountError(f"{mountpoint}: cannot use as mountpoint: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"{mountpoint}: mountpoint is not a directory")
    if os.path.ismount(mountpoint):
        try:
            os.listdir(mountpoint)
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:
                raise MountError(
                    f"{mountpoint}: a dead FUSE mount is here (its daemon is gone); "
                    f"run `ocifs umount {mountpoint}` first"
                ) from None
        raise MountError(f"{mountpoint}: already a mount point ({_what_is_mounted(mountpoint)})")
    if not nonempty_ok:
        try:
            if os.listdir(mountpoint):
                raise MountError(
                    f"{mountpoint}: mountpoint is not empty (use -o nonempty to mount anyway)"
                )
        except PermissionError:
            raise MountError(f"{mountpoint}: mountpoint is not readable") from None


#: skopeo/podman transports a user may type out of habit (`docker:` is a typo of `docker://`)
_TRANSPORTS = ("oci:", "oci-archive:", "docker-archive:", "dir:", "docker-daemon:",
               "containers-storage:")


def check_source_spelling(source: str) -> None:
    """A missing SOURCE spelled like a skopeo reference: say how ocifs wants it, in one line.

    Only for names that do not exist: a file may really be called `oci:x`.
    """
    if os.path.lexists(source):
        return
    lower = source.lower()
    if lower.startswith(("docker:", "docker//")):
        raise MountError(
            f"{source}: no such file or directory (a registry repository is written "
            "docker://HOST/REPO[:TAG])"
        )
    for transport in _TRANSPORTS:
        if lower.startswith(transport):
            raise MountError(
                f"{source}: no such file or directory (ocifs takes the path itself, without "
                f"skopeo's `{transport}` prefix or a `:TAG`: every tag is shown under refs/)"
            )


def layout_writable(source: str) -> bool:
    """False for a layout directory this user cannot write (a read-only filesystem,
    another user's layout): `ocifs mount` then mounts it read-only and says so, as
    mount(8) does for a write-protected device, instead of offering an `.import/`
    where every copy would fail. True for anything else (archives are read-only anyway).
    """
    return not os.path.isdir(source) or os.access(source, os.W_OK | os.X_OK)


def check_output_files(*, log: str | None, pid_file: str | None) -> None:
    """`--log` and `--pid-file` that cannot be written: one line now, not a daemon that
    dies without a word (the log is where it would have said why)."""
    if log:
        try:
            with open(log, "a"):
                pass
        except OSError as exc:
            raise MountError(f"{log}: cannot write the log: {exc.strerror}") from None
    if pid_file:
        parent = os.path.dirname(pid_file)
        if not os.path.isdir(parent):
            raise MountError(f"{pid_file}: cannot write the pid file: {parent} is not "
                             "a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise MountError(f"{pid_file}: cannot write the pid file: {parent} is not "
                             "writable")


def check_not_hidden(mountpoint: str, paths: dict[str, str | None]) -> None:
    """Refuse a source, cache, log or pid file at or under the mountpoint (possible with
    `-o nonempty`): the mount would hide it from the daemon, whose own reads of it would
    then go through itself and hang (`ocifs mount -o nonempty L L` did)."""
    top = os.path.realpath(mountpoint)
    for what, path in paths.items():
        if not path:
            continue
        real = os.path.realpath(path)
        if real == top or real.startswith(top.rstrip("/") + "/"):
            where = "the mountpoint" if real == top else "under it"
            raise MountError(
                f"{mountpoint}: the {what} {path} is {where}; the mount would hide it from "
                "ocifs itself (choose another mountpoint)"
            )


def _what_is_mounted(mountpoint: str) -> str:
    """What the refusal above names: `ocifs of /srv/layout; ...`, `tmpfs of none`."""
    from ocifs import mounttable

    entry = mounttable.find(mountpoint)
    if entry is None:
        return "choose an empty directory"
    if entry.is_ocifs:
        return f"ocifs of {entry.source}; `ocifs umount {mountpoint}` removes it"
    return f"{entry.fstype} of {entry.source}; choose an empty directory"


#: `-o` options ocifs itself documents (README "Use"), for suggestions after a typo
DOCUMENTED_OPTIONS = ("allow_other", "default_permissions", "nonempty", "ro",
                      "symlinks=stored", "symlinks=contained")
#: spellings people try for an option ocifs spells otherwise
_OPTION_ALIASES = {"read-only": "ro", "readonly": "ro", "read_only": "ro"}


def option_suggestion(fuse_reason: str) -> str:
    """` (did you mean -o ro?)` when libfuse refused an option that looks like a typo of
    one ocifs documents (`unknown option(s): `-o read-only'`), else ``."""
    import difflib
    import re

    for refused in re.findall(r"-o ([^'`]+)'", fuse_reason):
        for option in refused.split(","):
            name = option.strip()
            close = _OPTION_ALIASES.get(name) or next(
                iter(difflib.get_close_matches(name, DOCUMENTED_OPTIONS, n=1, cutoff=0.7)),
                None,
            )
            if close:
                return f" (did you mean -o {close}?)"
    return ""


def symlink_policy(options: list[str]) -> str:
    """The value of `-o symlinks=stored|contained` (the last one given wins)."""
    policy = symlinks.STORED
    for option in options:
        name, _, value = option.partition("=")
        if name == "symlinks":
            if value not in symlinks.POLICIES:
                choices = " or ".join(f"symlinks={p}" for p in symlinks.POLICIES)
                raise MountError(f"-o {option}: unknown value (use {choices})")
            policy = value
    return policy


def build_cache(opts: MountOptions) -> DiskCache:
    from pathlib import Path

    from ocifs.cache import DEFAULT_LIMIT, DiskCache, default_directory

    directory = Path(opts.cache_dir) if opts.cache_dir else default_directory()
    _check_cache_directory(directory, chosen=bool(opts.cache_dir))
    return DiskCache(directory, opts.cache_size or DEFAULT_LIMIT)


def _check_cache_directory(directory: Path, *, chosen: bool) -> None:
    """Refuse, in one line, a cache directory that cannot be created or written.

    The cache is where every layer is indexed: without it the mount would come
    up and then fail each `rootfs/` with a misleading ENOENT. `chosen`: given
    with --cache-dir (else the default, and the line says how to choose another).
    """
    problem = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        problem = "not a directory"
    except OSError as exc:
        problem = exc.strerror or str(exc)
    else:
        if not directory.is_dir():
            problem = "not a directory"
        elif not os.access(directory, os.W_OK | os.X_OK):
            problem = "not writable"
    if problem is not None:
        hint = "" if chosen else " (--cache-dir DIR chooses another)"
        raise MountError(f"{directory}: cannot use as cache directory: {problem}{hint}")


def open_source(
    source_path: str, registry: RegistryOptions | None, cache: DiskCache
) -> Source:
    """The source to serve (`registry`: a docker:// reference): NotAnImage and friends,
    one line, when it cannot be one. Before anything is mounted."""
    if registry is not None:
        from ocifs.sources.registry import open_registry

        return open_registry(source_path, registry, cache)
    from ocifs.sources.detect import open_source as open_local

    return open_local(source_path, cache)
