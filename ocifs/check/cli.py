"""`ocifs check SOURCE|MOUNTPOINT`: arguments, output, exit codes.

Exit codes (fsck-like, documented in docs/check.md): 0 clean, 1 problems
found, 2 bad usage or a source that cannot be read at all. Only argparse is
imported at parse time; the checker is imported when the command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ocifs.argparser import OneLineParser

EXIT_CLEAN, EXIT_PROBLEMS, EXIT_UNUSABLE = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    c = sub.add_parser(
        "check",
        help="verify an image source: every blob, document, layer and diff_id",
        description="Verify an OCI layout, OCI archive or docker-save tar (or the source of "
        "an ocifs mount). Exit 0 clean, 1 problems found, 2 unusable source or usage.",
    )
    c.add_argument("source", help="OCI layout directory, image archive, or an ocifs mountpoint")
    c.add_argument("--json", action="store_true", help="one JSON document for scripts")
    c.add_argument(
        "--quick", action="store_true",
        help="sizes, presence and documents only: layers are not decoded, blobs not hashed",
    )
    c.add_argument("-j", "--jobs", type=int, default=None, metavar="N",
                   help="blobs verified at once (default: the number of CPUs, at most 4)")
    c.set_defaults(run=run)


class _Unusable(Exception):
    pass


def _resolve(path: str) -> tuple[str, str | None]:
    """(the local source to check, the mountpoint it came from or None)."""
    from ocifs.cli_inspect import mounted_source

    mounted = mounted_source(path)
    if mounted is None:
        return os.path.abspath(path), None
    source, mountpoint = mounted
    if source.startswith("docker://"):
        raise _Unusable(f"{mountpoint}: mounts the registry image {source}; "
                        "`ocifs check` checks local sources only")
    return source, mountpoint


def run(args: argparse.Namespace) -> int:
    """Never a traceback: anything that stops the check is one line and exit 2."""
    from ocifs.errors import OcifsError

    try:
        source, mountpoint = _resolve(args.source)
        if args.jobs is not None and args.jobs < 1:
            raise _Unusable(f"--jobs {args.jobs}: must be 1 or more")
        from ocifs.check.run import check

        report = check(source, quick=args.quick, workers=args.jobs)
    except (_Unusable, OcifsError) as exc:
        print(f"ocifs check: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except OSError as exc:
        print(f"ocifs check: {exc.filename or args.source}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_UNUSABLE
    except Exception as exc:  # a bug must still not print a traceback at the user
        print(f"ocifs check: {args.source}: internal error: {exc!r}", file=sys.stderr)
        return EXIT_UNUSABLE
    if args.json:
        doc = report.as_json()
        doc["mountpoint"] = mountpoint
        json.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        for finding in report.findings:
            print(finding.line())
        if mountpoint is not None:
            print(f"(the source of the mount {mountpoint})")
        print(report.summary())
    return EXIT_CLEAN if report.clean else EXIT_PROBLEMS
