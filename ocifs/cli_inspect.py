"""`ocifs list` and `ocifs status MNT`: what is mounted and what each mount is doing.

Mounts come from the kernel's table (`ocifs.mounttable`); everything else from
each daemon's own report, `MNT/.ocifs/status.json` (`ocifs.status`). A daemon
that died shows as `dead`; one that does not answer within `READ_TIMEOUT` as
`not answering` (the read is left behind in a daemon thread).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import threading
import time
from typing import Any

from ocifs import mounttable
from ocifs.errors import MountError
from ocifs.status import STATUS_DIR, STATUS_FILE

#: seconds to wait for a daemon's status.json
READ_TIMEOUT = 5.0


Status = dict[str, Any]


def read_status(mountpoint: str, timeout: float = READ_TIMEOUT) -> tuple[Status | None, str]:
    """(the mount's status.json, "") or (None, why it could not be read)."""
    return read_statuses([mountpoint], timeout)[0]


def read_statuses(
    mountpoints: list[str], timeout: float = READ_TIMEOUT
) -> list[tuple[Status | None, str]]:
    """`read_status` of several mounts at once: a hung daemon costs `timeout` once, not each."""
    results: list[tuple[Status | None, str]] = [(None, "not answering")] * len(mountpoints)

    def read(i: int) -> None:
        path = os.path.join(mountpoints[i], STATUS_DIR, STATUS_FILE)
        try:
            with open(path, "rb") as f:
                results[i] = (json.loads(f.read()), "")
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.errno == errno.ENOTCONN:
                reason = "dead (its daemon is gone)"
            elif exc.errno == errno.ENOENT:
                reason = "no status.json (mounted by an older ocifs)"
            results[i] = (None, reason)
        except ValueError as exc:
            results[i] = (None, f"unreadable status: {exc}")

    workers = [
        threading.Thread(target=read, args=(i,), daemon=True) for i in range(len(mountpoints))
    ]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + timeout
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    return list(results)


def mounted_source(path: str) -> tuple[str, str] | None:
    """(the source, the mountpoint) if `path` is an ocifs mountpoint, else None.

    For commands that work on a source (`ocifs check`, `ocifs gc`) and are given
    the mountpoint: the source comes from the daemon's report, or from the mount
    table if the daemon is gone.
    """
    entry = mounttable.find(path)
    if entry is None or not entry.is_ocifs:
        return None
    status, _problem = read_status(entry.mountpoint)
    return (str(status["source"]) if status else entry.source), entry.mountpoint


def list_mounts(args: argparse.Namespace) -> int:
    uid = os.getuid()
    rows: list[dict[str, Any]] = []
    entries = mounttable.ocifs_mounts(None if uid == 0 else uid)
    statuses = read_statuses([e.mountpoint for e in entries])
    for entry, (status, problem) in zip(entries, statuses, strict=True):
        rows.append(
            {
                "mountpoint": entry.mountpoint,
                "source": status["source"] if status else entry.source,
                "pid": status["pid"] if status else None,
                "read_only": entry.read_only or bool(status and status["read_only"]),
                "cache_used_bytes": status["cache"]["used_bytes"] if status else None,
                "cache_directory": status["cache"]["directory"] if status else None,
                "state": "ok" if status else problem,
            }
        )
    if args.json:
        json.dump({"mounts": rows}, sys.stdout, indent=2, ensure_ascii=False)
        print()
        return 0
    header = ("MOUNTPOINT", "SOURCE", "PID", "MODE", "CACHE", "STATE")
    table: list[tuple[str, ...]] = [
        (
            r["mountpoint"],
            r["source"],
            str(r["pid"] or "-"),
            "ro" if r["read_only"] else "rw",
            human_size(r["cache_used_bytes"]),
            r["state"],
        )
        for r in rows
    ]
    lines = [header, *table]
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    for row in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def show_status(args: argparse.Namespace) -> int:
    entry = mounttable.find_ocifs(args.mountpoint)
    status, problem = read_status(entry.mountpoint)
    if status is None:
        hint = f"; run `ocifs umount {entry.mountpoint}`" if problem.startswith("dead") else ""
        raise MountError(f"{entry.mountpoint}: {problem}{hint}")
    if args.json:
        json.dump(status, sys.stdout, indent=2, ensure_ascii=False)
        print()
        return 0
    cache = status["cache"]
    print(f"mountpoint  {status['mountpoint']}")
    print(f"source      {status['source']} ({status['kind']})")
    print(f"daemon      pid {status['pid']}, ocifs {status['version']}, since {status['started']}")
    print(f"mode        {'read-only' if status['read_only'] else 'read-write (.import/)'}")
    print(
        f"cache       {human_size(cache['used_bytes'])} of {human_size(cache['limit_bytes'])} "
        f"in {cache['directory']}"
    )
    layers = status["layers"]
    print(f"layers      {len(layers)} seen by this mount")
    for layer in layers:
        print(f"  {layer['digest'][:19]}  {_layer_line(layer)}")
    imports = status["imports"]
    if imports is not None:
        active = imports["active"]
        print(f"imports     {len(active)} being written, {imports['pending_entries']} pending")
        for item in active:
            print(f"  .import/{item['path']}  {human_size(item['bytes_received'])} received")
    return 0


def _layer_line(layer: dict[str, Any]) -> str:
    done, total = layer["bytes_done"], layer["bytes_total"]
    if layer["state"] == "indexing":
        percent = 100 * done // total if total else 100
        return f"indexing  {human_size(done)} of {human_size(total)} ({percent}%)"
    if layer["state"] == "failed":
        return f"failed    {layer['error']}"
    # a cached index took no time to build here: its 0.000 s would only puzzle
    took = "" if layer["seconds"] is None or layer["state"] == "cached" else (
        f" in {layer['seconds']:.3f} s"
    )
    return f"{layer['state']:<9} {human_size(total)}, {layer['entries']} entries{took}"


def human_size(n: int | None) -> str:
    """A byte count for people: `512 B`, `3.2 MiB`; `-` when unknown."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
