"""`ocifs mount | umount`: argument parsing, one-line errors, exit codes.

Exit codes: 0 success, 1 a problem with the source, mountpoint or mount
(one line on stderr naming the file and the problem), 2 bad usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys

from ocifs import __version__
from ocifs.errors import MountError, OcifsError

EXIT_ERROR = 1


def _size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMGT]?)i?B?", text.strip(), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (e.g. 500M, 10G)")
    exponent: int = "_KMGT".index(m.group(2).upper() or "_")
    return int(m.group(1)) * int(1024**exponent)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocifs", description="Mount container images as filesystems.")
    p.add_argument("--version", action="version", version=f"ocifs {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("mount", help="mount an OCI layout, OCI archive or docker-save tar")
    m.add_argument("source", help="OCI image layout directory, OCI archive or docker-save tar")
    m.add_argument("mountpoint", help="an existing, empty directory")
    m.add_argument("-f", "--foreground", action="store_true", help="stay attached; log to stderr")
    m.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPT[,OPT...]",
        help="mount options: allow_other, ro, nonempty, or any FUSE option",
    )
    m.add_argument("-d", "--debug", action="store_true", help="log every detail")
    m.add_argument("--log", metavar="FILE", help="write the log to FILE")
    m.add_argument(
        "--cache-dir", metavar="DIR", help="persistent index cache (default: user cache dir)"
    )
    m.add_argument(
        "--cache-size", metavar="SIZE", type=_size, help="cache size limit (default 10G)"
    )
    m.add_argument(
        "--read-only", action="store_true", help="no .import/ even for layout directories"
    )
    m.add_argument("--pid-file", metavar="FILE", help="write the daemon's pid to FILE")
    m.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)

    u = sub.add_parser("umount", help="unmount an ocifs mount")
    u.add_argument("mountpoint")
    u.add_argument("-z", "--lazy", action="store_true", help="detach even if busy")
    return p


def _split_options(raw: list[str]) -> list[str]:
    return [o.strip() for item in raw for o in item.split(",") if o.strip()]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "mount":
            return _mount(args)
        return _umount(args)
    except OcifsError as exc:
        print(f"ocifs: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _mount(args: argparse.Namespace) -> int:
    from ocifs import log as log_setup
    from ocifs.mount import MountOptions, build_cache, check_mountpoint, serve
    from ocifs.sources.detect import open_source

    options = _split_options(args.options)
    opts = MountOptions(
        fuse_options=options,
        allow_other="allow_other" in options,
        read_only=args.read_only or "ro" in options,
        cache_dir=args.cache_dir,
        cache_size=args.cache_size,
        debug=args.debug,
    )
    source_path = os.path.abspath(args.source)
    mountpoint = os.path.abspath(args.mountpoint)
    check_mountpoint(mountpoint, nonempty_ok="nonempty" in options)
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse: missing (is the fuse kernel module loaded?)")
    if not args.foreground and args.ready_fd is None:
        # Validate in the parent too, so errors need no daemon round trip.
        open_source(source_path, build_cache(opts)).close()
        return _spawn_daemon(args, source_path, mountpoint)

    log_setup.setup(debug=args.debug, log_file=args.log)
    try:
        source = open_source(source_path, build_cache(opts))
        if args.pid_file:
            with open(args.pid_file, "w") as f:
                f.write(f"{os.getpid()}\n")
        return serve(source, mountpoint, opts, args.ready_fd)
    except OcifsError as exc:
        if args.ready_fd is None:
            raise
        _report_to_parent(args.ready_fd, f"ocifs: {exc}")
        return EXIT_ERROR
    except Exception as exc:
        logging.getLogger("ocifs").exception("internal error while mounting")
        message = f"ocifs: internal error while mounting: {exc!r} (see the log)"
        if args.ready_fd is None:
            print(message, file=sys.stderr)
        else:
            _report_to_parent(args.ready_fd, message)
        return EXIT_ERROR


def _report_to_parent(ready_fd: int, message: str) -> None:
    try:
        os.write(ready_fd, f"{message}\n".encode())
    except OSError:
        pass


def _spawn_daemon(args: argparse.Namespace, source: str, mountpoint: str) -> int:
    """Start the serving process detached and wait for its ready line or error."""
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-m", "ocifs", "mount", source, mountpoint, "--ready-fd", str(write_fd)]
    for opt in args.options:
        cmd += ["-o", opt]
    if args.debug:
        cmd.append("--debug")
    log_file = args.log or _default_log_file()
    cmd += ["--log", log_file]
    for flag, value in (("--cache-dir", args.cache_dir), ("--pid-file", args.pid_file)):
        if value:
            cmd += [flag, os.path.abspath(value)]
    if args.cache_size:
        cmd += ["--cache-size", str(args.cache_size)]
    if args.read_only:
        cmd.append("--read-only")
    proc = subprocess.Popen(
        cmd,
        pass_fds=(write_fd,),
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
    )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        message = pipe.read().decode(errors="replace").strip()
    if message == "ready":
        return 0
    if proc.poll() is None:
        proc.wait(timeout=30)
    print(
        message or f"ocifs: the mount process exited (status {proc.returncode}); see {log_file}",
        file=sys.stderr,
    )
    return EXIT_ERROR


def _default_log_file() -> str:
    from platformdirs import user_log_dir

    directory = user_log_dir("ocifs")
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, "ocifs.log")


def _umount(args: argparse.Namespace) -> int:
    mountpoint = os.path.abspath(args.mountpoint)
    if not os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint}: not mounted")
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        raise MountError("fusermount3: not found (install the fuse3 package)")
    cmd = [tool, "-u"] + (["-z"] if args.lazy else []) + [mountpoint]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise MountError(f"{mountpoint}: cannot unmount: {detail}")
    return 0
