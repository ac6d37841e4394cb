"""The `ocifs` command: argument parsing, dispatch, one-line errors, exit codes.

Exit codes: 0 success, 1 a problem with the source, mountpoint or mount
(one line on stderr naming the file and the problem), 2 bad usage.

Light on purpose: every subcommand's module is imported when it runs, and
`ocifs mount` forks its daemon before anything heavy is imported
(`ocifs.daemon`, `ocifs.serve`).
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ocifs import package_version
from ocifs.argparser import OneLineParser
from ocifs.argtypes import seconds
from ocifs.errors import MountError, OcifsError

if TYPE_CHECKING:
    import subprocess

EXIT_ERROR = 1


def _size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMGT]?)i?B?", text.strip(), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (e.g. 500M, 10G)")
    exponent: int = "_KMGT".index(m.group(2).upper() or "_")
    size = int(m.group(1)) * int(1024**exponent)
    if size == 0:  # would have meant the default, 10G, without a word
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (more than 0, e.g. 500M, 10G)")
    return size


def _busy_poll(text: str) -> int:
    if not text.isdigit() or int(text) > 10_000:
        raise argparse.ArgumentTypeError(f"invalid microseconds {text!r} (0 to 10000)")
    return int(text)


class _VersionAction(argparse.Action):
    """`--version`: the package metadata's version, read only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kw: Any) -> None:
        print(f"ocifs {package_version()}")
        parser.exit()


_EXAMPLES = """\
examples:
  ocifs mount ./my-layout /mnt/img     an OCI image layout (read-write: .import/)
  ocifs mount ./image.tar /mnt/img     an OCI archive or docker-save tar (read-only)
  ocifs mount docker://HOST/REPO:TAG /mnt/img   a registry repository (read-only)
  ls /mnt/img/refs                     one directory per tag: manifest.json, config.json,
                                       layers/, rootfs/ (all layers merged), image.tar
  ocifs umount /mnt/img

`ocifs COMMAND --help` describes each command; README.md describes the tree.
"""

_MOUNT_DESCRIPTION = """\
Mount an image source at MOUNTPOINT and return once the mount answers. The
daemon stays in the background (its log: --log) until `ocifs umount
MOUNTPOINT`. Every tag appears as refs/<name>/ with manifest.json,
config.json, layers/<n>/ and rootfs/ (the layers merged), and image.tar.
"""


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="ocifs",
        description="Mount container images (OCI layouts, OCI archives, docker-save tars,\n"
        "registry repositories) as browsable filesystems.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action=_VersionAction, help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, title="commands")

    m = sub.add_parser(
        "mount",
        help="mount an OCI layout, OCI archive, docker-save tar or registry repository",
        description=_MOUNT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument(
        "source",
        metavar="SOURCE",
        help="OCI image layout directory, OCI archive or docker-save tar (plain, gzip'd "
        "or zstd'd), or docker://HOST[:PORT]/REPO[:TAG|@DIGEST]",
    )
    m.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing, empty directory")
    m.add_argument("-f", "--foreground", action="store_true", help="stay attached; log to stderr")
    m.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPT[,OPT...]",
        help="mount options: allow_other (let other users in), ro (same as --read-only), "
        "nonempty (mount over a non-empty directory), symlinks=stored|contained (show "
        "absolute symlink targets as stored, or rewritten to stay inside the image), "
        "or any FUSE option",
    )
    m.add_argument("-d", "--debug", action="store_true", help="log every detail")
    m.add_argument(
        "--log",
        metavar="FILE",
        help="write the log to FILE (default: ~/.local/state/ocifs/log/ocifs.log; "
        "with -f: stderr)",
    )
    m.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="persistent layer-index and download cache (default: ~/.cache/ocifs)",
    )
    m.add_argument(
        "--cache-size", metavar="SIZE", type=_size, help="cache size limit (default 10G)"
    )
    m.add_argument(
        "--read-only", action="store_true", help="no .import/ even for layout directories"
    )
    m.add_argument("--pid-file", metavar="FILE", help="write the daemon's pid to FILE")
    m.add_argument(
        "--busy-poll",
        metavar="USEC",
        type=_busy_poll,
        help="keep polling for the next FUSE request this long before sleeping "
        "(default 50 with more than one CPU, else 0; 0 turns it off)",
    )
    m.add_argument(
        "--lock-timeout",
        metavar="SECONDS",
        type=seconds(86_400),
        default=30.0,
        help="how long an import waits for another process's lock on index.json before "
        "failing with EBUSY (default 30)",
    )

    from ocifs.registry import options as registry_options

    registry_options.add_arguments(m)
    m.set_defaults(run=_mount)

    u = sub.add_parser(
        "umount",
        help="unmount an ocifs mount (also one whose daemon died)",
        description="Unmount an ocifs mount, live or dead (its daemon killed). Anything "
        "that is not an ocifs mount is refused.",
    )
    u.add_argument("mountpoint", metavar="MOUNTPOINT", help="where the image is mounted")
    u.add_argument(
        "-z",
        "--lazy",
        action="store_true",
        help="detach now even if a process uses the mount; it goes once none does",
    )
    u.set_defaults(run=_umount)

    lst = sub.add_parser(
        "list",
        help="list this user's ocifs mounts",
        description="This user's ocifs mounts (every user's for root): mountpoint, source, "
        "daemon pid, rw/ro, cache use, and `dead` for a mount whose daemon is gone.",
    )
    lst.add_argument("--json", action="store_true", help="one JSON document for scripts")
    lst.set_defaults(run=_list)
    st = sub.add_parser(
        "status",
        help="indexing progress, imports and cache use of a mount",
        description="What a mount is doing: each layer it has touched (indexing with "
        "progress, indexed, cached, failed), files being written into .import/, cache use.",
    )
    st.add_argument("mountpoint", metavar="MOUNTPOINT", help="where the image is mounted")
    st.add_argument("--json", action="store_true", help="the mount's status.json as is")
    st.set_defaults(run=_status)

    _add_init_parser(sub)
    _add_gc_parser(sub)
    from ocifs.check import cli as check_cli  # argparse only; the checker loads when run

    check_cli.add_parser(sub)
    return p


def _add_init_parser(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    i = sub.add_parser(
        "init",
        help="create an empty OCI image layout",
        description="Create oci-layout, an empty index.json and blobs/sha256/ in LAYOUT, "
        "ready to be mounted and filled through .import/. An existing layout is left as is.",
    )
    i.add_argument("layout", metavar="LAYOUT", help="a new or empty directory")
    i.set_defaults(run=_init)


def _add_gc_parser(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    g = sub.add_parser(
        "gc",
        help="remove blobs that index.json does not reach",
        description="Remove every blob of LAYOUT that nothing tagged or listed in "
        "index.json reaches (what `rmdir refs/<name>` left behind), like `umoci gc`. "
        "Safe while the layout is mounted.",
    )
    g.add_argument(
        "layout",
        metavar="LAYOUT",
        help="an OCI image layout directory (mounted or not), or the mountpoint of one",
    )
    g.add_argument("-n", "--dry-run", action="store_true", help="only list what would go")
    g.add_argument(
        "--grace",
        metavar="SECONDS",
        type=seconds(),
        default=None,
        help="spare unreferenced blobs younger than this (default 3600): an import may be "
        "about to reference them. 0 is safe only when nothing imports into the layout",
    )
    g.add_argument(
        "--lock-timeout",
        metavar="SECONDS",
        type=seconds(86_400),
        default=30.0,
        help="how long to wait for another process's lock on index.json (default 30)",
    )
    g.set_defaults(run=_gc)


def _split_options(raw: list[str]) -> list[str]:
    return [o.strip() for item in raw for o in item.split(",") if o.strip()]


def main(argv: list[str] | None = None) -> int:
    inherited = _open_fds()  # before ocifs opens anything of its own
    args = _parser().parse_args(argv)
    args.inherited_fds = inherited
    try:
        status = int(args.run(args))
        sys.stdout.flush()  # here, so a reader that left is handled below
        return status
    except OcifsError as exc:
        print(f"ocifs: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return _reader_left()
    except OSError as exc:
        # what no check above foresaw (a deleted cwd, a full disk...): still one line
        print(f"ocifs: {_where(exc)}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _where(exc: OSError) -> str:
    """`FILE: ` for an OSError's message; a relative path's cwd that was deleted has none."""
    if exc.filename:
        return f"{exc.filename}: "
    try:
        os.getcwd()
    except OSError:
        return "the current directory (deleted?): "
    return ""


def _reader_left() -> int:
    """`ocifs status | head`: the reader left; no traceback, and none at exit when
    Python flushes stdout again (the Python docs' recipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141  # what a shell reports for a command killed by SIGPIPE


def _mount(args: argparse.Namespace) -> int:
    """Check what can be checked cheaply here, then start the daemon (`ocifs.daemon`),
    which opens the source and mounts."""
    from ocifs import daemon
    from ocifs.cache import default_directory as default_cache_directory
    from ocifs.mount import (
        MountOptions,
        check_mountpoint,
        check_not_hidden,
        check_output_files,
        check_source_spelling,
        layout_writable,
        symlink_policy,
    )
    from ocifs.registry.reference import is_registry_reference

    _resolve_path_options(args)
    check_output_files(log=args.log, pid_file=args.pid_file)
    options = _split_options(args.options)
    opts = MountOptions(
        fuse_options=options,
        read_only=args.read_only or "ro" in options,
        cache_dir=args.cache_dir,
        cache_size=args.cache_size,
        busy_poll_us=args.busy_poll,
        lock_timeout=args.lock_timeout,
        symlinks=symlink_policy(options),
    )
    remote = is_registry_reference(args.source)
    if not remote:
        check_source_spelling(args.source)
    mountpoint = os.path.abspath(args.mountpoint)
    check_mountpoint(mountpoint, nonempty_ok="nonempty" in options)
    check_not_hidden(
        mountpoint,
        {
            "source": None if remote else os.path.abspath(args.source),
            "cache directory": args.cache_dir or str(default_cache_directory()),
            "log": args.log,
            "pid file": args.pid_file,
        },
    )
    if not remote and not opts.read_only and not layout_writable(os.path.abspath(args.source)):
        opts.read_only = True
        print(f"ocifs: {os.path.abspath(args.source)}: layout is not writable; mounting it "
              "read-only (no .import/)", file=sys.stderr)
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse: missing (is the fuse kernel module loaded?)")
    registry = None
    if remote:
        from ocifs.registry.options import from_args

        registry = from_args(args)
    job = daemon.Job(
        source=args.source if remote else os.path.abspath(args.source),
        registry=registry,
        mountpoint=mountpoint,
        options=opts,
        debug=args.debug,
        log_file=args.log,
        pid_file=args.pid_file,
    )
    if args.foreground:
        return daemon.run_foreground(job)
    return daemon.start(job, args.inherited_fds)


def _open_fds() -> set[int]:
    """Descriptors open in this process now (those the caller passed us, at start-up)."""
    try:
        listed = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return set()
    return {fd for fd in listed if _is_open(fd)}  # drops the listing's own descriptor


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _resolve_path_options(args: argparse.Namespace) -> None:
    """Make path options absolute against the caller's cwd.

    The detached daemon changes directory to `/`: a relative `--cache-dir cache`
    once created `/cache`, and a relative `--authfile` was not found.
    """
    for name in ("cache_dir", "pid_file", "log", "authfile", "cert_dir"):
        value = getattr(args, name, None)
        if value:
            setattr(args, name, os.path.abspath(value))


def _list(args: argparse.Namespace) -> int:
    from ocifs import cli_inspect

    return cli_inspect.list_mounts(args)


def _status(args: argparse.Namespace) -> int:
    from ocifs import cli_inspect

    return cli_inspect.show_status(args)


def _umount(args: argparse.Namespace) -> int:
    """Unmount an ocifs mount, live or dead; refuse anything else.

    The mount is looked up in the kernel's table, not with `os.path.ismount()`
    (which fails on a mount whose daemon died). A dead mount that is still in
    use (a shell's cwd, an open file) is detached lazily: nothing can be served
    from it any more anyway.
    """
    from ocifs import mounttable

    mountpoint = mounttable.find_ocifs(args.mountpoint, unmounting=True).mountpoint
    dead = mounttable.is_dead(mountpoint)
    result = _fusermount_u(mountpoint, lazy=args.lazy)
    if result.returncode != 0 and dead and not args.lazy:
        result = _fusermount_u(mountpoint, lazy=True)
    if result.returncode != 0:
        raise MountError(f"{mountpoint}: cannot unmount: {_unmount_problem(result.stderr)}")
    return 0


def _unmount_problem(said: str) -> str:
    """fusermount3's last line without its own prefix (`fusermount3: failed to unmount
    MNT: `), and what to do about a busy mount."""
    detail = (said.strip().splitlines() or ["unknown error"])[-1]
    detail = re.sub(r"^\S*fusermount3?: (failed to unmount [^:]*: )?", "", detail)
    if "busy" in detail.lower():
        return (f"{detail.lower()}: a process is using it (its cwd or an open file); "
                "`ocifs umount -z` detaches it now and unmounts once that process is done")
    return detail


def _on_layout(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command on a layout's own files: an OSError (permissions, disk full...) is one line."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except OSError as exc:
            raise OcifsError(f"{exc.filename or args.layout}: {exc.strerror or exc}") from None

    return run


@_on_layout
def _init(args: argparse.Namespace) -> int:
    """`ocifs init DIR`: an empty layout; an existing layout is left alone."""
    from ocifs.layout.init import init_layout

    path = os.path.abspath(args.layout)
    if not init_layout(path):
        print(f"ocifs: {path}: already an OCI image layout (nothing changed)", file=sys.stderr)
    return 0


@_on_layout
def _gc(args: argparse.Namespace) -> int:
    """`ocifs gc LAYOUT`: one line per removed blob, then a summary."""
    from ocifs.cli_inspect import human_size
    from ocifs.layout.collect import DEFAULT_GRACE, collect
    from ocifs.sources.layout_dir import LayoutDir

    path = _layout_to_collect(args.layout)
    LayoutDir(path, writable=False)  # not a layout: one line, nothing touched
    grace = DEFAULT_GRACE if args.grace is None else args.grace
    result = collect(path, dry_run=args.dry_run, grace=grace, lock_timeout=args.lock_timeout)
    verb = "would remove" if args.dry_run else "removed"
    for blob in result.removed:
        print(f"{verb} {blob.digest} ({blob.size} bytes)")
    print(
        f"{verb} {len(result.removed)} blob(s), "
        f"{'would free' if args.dry_run else 'freed'} {result.freed} bytes "
        f"({human_size(result.freed)}); {result.reachable} reachable blob(s) kept"
    )
    if result.kept_young:
        size = sum(b.size for b in result.kept_young)
        print(
            f"kept {len(result.kept_young)} unreferenced blob(s) ({size} bytes) younger than "
            f"{grace:g} s: an import may still reference them (--grace 0 removes them; "
            "safe only when nothing imports into the layout)"
        )
    return 0


def _layout_to_collect(given: str) -> str:
    """The layout directory `ocifs gc` works on: `given`, or the source of the ocifs
    mount at `given` (gc never goes through a mount: blobs/ there is read-only)."""
    from ocifs.cli_inspect import mounted_source

    mounted = mounted_source(given)
    path = os.path.abspath(given) if mounted is None else mounted[0]
    if mounted is not None:
        source, mountpoint = mounted
        if source.startswith("docker://") or not os.path.isdir(source):
            raise OcifsError(
                f"{mountpoint}: mounts {source}; `ocifs gc` removes blobs from an OCI "
                "image layout directory only"
            )
        print(f"{source} (the source of the mount {mountpoint})")
    elif os.path.isfile(path):
        raise OcifsError(
            f"{path}: a file, not a layout directory (`ocifs gc` removes blobs from an OCI "
            "image layout directory; archives are read-only)"
        )
    return path


def _fusermount_u(mountpoint: str, *, lazy: bool) -> subprocess.CompletedProcess[str]:
    import shutil
    import subprocess

    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        raise MountError("fusermount3: not found (install the fuse3 package)")
    cmd = [tool, "-u"] + (["-z"] if lazy else []) + [mountpoint]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)
