"""Issue 11 speed line: `rmdir refs/<name>` on a layout with 2,000 refs.

Builds a layout whose index.json has 2,000 entries (one small image, 2,000
names), mounts it with `ocifs mount`, removes `--count` refs one `rmdir` at a
time and reports the latency of each (median, min, max in ms) and how many
times index.json was rewritten per rmdir (counted from the daemon's
`rename` syscalls onto index.json under strace, and cross-checked by the
inode of index.json changing once per rmdir). Separate from `bench/main.py`
(the peer comparison) because there is no peer to alternate with: umoci and
skopeo cannot untag.

    scripts/bench-untag [--refs 2000] [--count 50] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OCIFS = [sys.executable, "-m", "ocifs"]


def build_layout(path: Path, refs: int) -> None:
    subprocess.run(["umoci", "init", "--layout", str(path)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{path}:base"], check=True)
    index = json.loads((path / "index.json").read_bytes())
    entry = index["manifests"][0]
    index["manifests"] = [
        dict(entry, annotations={"org.opencontainers.image.ref.name": f"app/ref-{n:05d}"})
        for n in range(refs)
    ]
    (path / "index.json").write_text(json.dumps(index))


def count_index_renames(strace_log: Path) -> int:
    pattern = re.compile(r"rename(?:at2?)?\(.*index\.json\"")
    return sum(1 for line in strace_log.read_text().splitlines() if pattern.search(line))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--refs", type=int, default=2000)
    p.add_argument("--count", type=int, default=50, help="how many rmdirs to time")
    p.add_argument("--dir", help="scratch directory (default: a temporary one)")
    args = p.parse_args(argv)
    work = Path(args.dir or tempfile.mkdtemp(prefix="ocifs-bench-untag-"))
    layout, mnt, cache = work / "layout", work / "mnt", work / "cache"
    shutil.rmtree(layout, ignore_errors=True)
    build_layout(layout, args.refs)
    mnt.mkdir(parents=True, exist_ok=True)
    pid_file = work / "ocifs.pid"
    subprocess.run([*OCIFS, "mount", str(layout), str(mnt), "--cache-dir", str(cache),
                    "--pid-file", str(pid_file), "--log", str(work / "ocifs.log")],
                   check=True, cwd=REPO)
    try:
        names = sorted(os.listdir(mnt / "refs/app"))
        assert len(names) == args.refs, len(names)
        timings, rewrites = [], []
        for name in names[: args.count]:
            before = os.stat(layout / "index.json").st_ino
            t0 = time.perf_counter()
            os.rmdir(mnt / "refs/app" / name)
            timings.append((time.perf_counter() - t0) * 1000)
            rewrites.append(os.stat(layout / "index.json").st_ino != before)
        # one more rmdir under strace: how many renames onto index.json does it make?
        strace_log = work / "strace.txt"
        pid = pid_file.read_text().strip()
        tracer = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=rename,renameat,renameat2",
                                   "-p", pid, "-o", str(strace_log)])
        time.sleep(1.0)  # strace attaches to every thread
        os.rmdir(mnt / "refs/app" / names[args.count])
        time.sleep(0.3)
        tracer.terminate()
        tracer.wait(10)
        renames = count_index_renames(strace_log)
        left = len(json.loads((layout / "index.json").read_bytes())["manifests"])
    finally:
        subprocess.run([*OCIFS, "umount", str(mnt)], cwd=REPO, check=False)
    print(f"rmdir refs/<name> on a {args.refs}-ref layout ({args.count} rmdirs): "
          f"median {statistics.median(timings):.1f} ms, min {min(timings):.1f} ms, "
          f"max {max(timings):.1f} ms; index.json replaced once per rmdir: "
          f"{sum(rewrites)}/{len(rewrites)}; renames onto index.json in a traced rmdir: "
          f"{renames}; entries left {left} (expected {args.refs - args.count - 1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
