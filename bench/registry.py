"""scripts/bench registry: ocifs on a registry repository against skopeo (+ umoci), issue 12.

A real registry (Debian's docker-registry) on 127.0.0.1 holds the bench image (the Debian
minbase gzip layer of bench/data.py) and an image whose one layer is the bench's random blob
(1 GiB; 32 MiB with --quick). Rounds alternate the workloads; figures are medians with
min-max. The machine is shared: treat every figure as noisy.

  A  ocifs mount docker://... (empty cache) + cat refs/gz/rootfs/etc/os-release + umount
     (--quick: the synthetic tree's big file instead of os-release)
  B  skopeo copy docker://... oci:... + umoci unpack + cat rootfs/etc/os-release
  C  skopeo copy docker://... oci:... alone
  D  cold read of the blob through a fresh mount (empty cache), MiB/s
  E  repeat read of the blob through a new mount (blob in the cache), MiB/s
  F  the same blob read from a local layout mount, MiB/s (what E should match)
  G  requests the registry saw for mount + find rootfs with the layers cached

--compare DIR runs A and D (with E) a second time in every round with the ocifs package
of DIR (e.g. `git worktree add /tmp/old <commit>`, or `git archive <commit> | tar -x`),
alternated with this checkout's, and adds the per-round ratios this / DIR.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import data as data_mod
from tests.helpers.registry import Registry, push, start_registry

REPO = Path(__file__).resolve().parent.parent
#: the --compare runs' rows
OLD = ["A'", "D'", "E'"]
OCIFS = [sys.executable, "-m", "ocifs"]


def log(msg: str) -> None:
    print(f"[bench registry] {msg}", file=sys.stderr, flush=True)


def sh(*args: str | Path, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, **kw)  # type: ignore[call-overload]


def blob_layout(meta: dict, dest: Path) -> None:
    """A layout whose one layer (typed as a tar, never opened as one) is the random blob."""
    if (dest / "index.json").exists():
        return
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    src = Path(meta["dir"]) / "blob.bin"
    hexd = meta["blob"]["hex"]
    try:
        os.link(src, blobs / hexd)
    except OSError:
        shutil.copyfile(src, blobs / hexd)
    config_hex = meta["layout"]["config"]
    shutil.copyfile(Path(meta["dir"]) / "oci/blobs/sha256" / config_hex, blobs / config_hex)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": f"sha256:{config_hex}", "size": (blobs / config_hex).stat().st_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": f"sha256:{hexd}", "size": meta["blob"]["bytes"]}],
    }).encode()  # fmt: skip
    mhex = hashlib.sha256(manifest).hexdigest()
    (blobs / mhex).write_bytes(manifest)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": f"sha256:{mhex}",
        "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "blob"},
    }
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))


class Bench:
    def __init__(self, work: Path, reg: Registry, meta: dict) -> None:
        self.work = work
        self.reg = reg
        self.meta = meta
        self.mnt = work / "mnt"
        self.mnt.mkdir(exist_ok=True)
        self.n = 0
        self.cpu = 0.0
        #: daemon CPU seconds of the last run of each workload
        self.cpu_of: dict[str, float] = {}
        native = Path(meta["dir"]) / "native"
        self.cat = (
            "etc/os-release" if (native / "etc/os-release").is_file() else meta["layer"]["big_path"]
        )
        #: daemon CPU seconds per thread role of the last run of a workload (D)
        self.threads_of: dict[str, dict[str, float]] = {}
        #: the directory whose ocifs package mounts (None: this checkout's)
        self.code: Path | None = None

    def mount(self, source: str, cache: Path, *extra: str) -> None:
        """Mount with this checkout's ocifs, or that of `self.code` (--compare)."""
        env = None
        if self.code is not None:  # `-m` puts the working directory first on sys.path
            env = dict(os.environ, PYTHONPATH=str(self.code))
        sh(*OCIFS, "mount", source, self.mnt, "--cache-dir", cache,
           "--log", self.work / "ocifs.log", *extra, cwd=self.code, env=env)  # fmt: skip

    def umount(self) -> None:
        """Unmount, first adding the daemon's CPU seconds (utime + stime) to `self.cpu`."""
        self.cpu += daemon_cpu(self.mnt)
        sh("fusermount3", "-u", self.mnt)

    def take_cpu(self) -> float:
        cpu, self.cpu = self.cpu, 0.0
        return cpu

    def fresh(self, name: str) -> Path:
        self.n += 1
        d = self.work / f"{name}-{self.n}"
        shutil.rmtree(d, ignore_errors=True)
        return d

    # -- workloads: each returns seconds (or a figure) --------------------------------

    def a_ocifs_cat(self) -> float:
        cache = self.fresh("cache")
        t = time.perf_counter()
        self.mount(self.reg.ref("bench:gz"), cache, "--tls-verify=false")
        try:
            (self.mnt / "refs/gz/rootfs" / self.cat).read_bytes()
        finally:
            self.umount()
        dt = time.perf_counter() - t
        self.cpu_of["A"] = self.take_cpu()
        shutil.rmtree(cache, ignore_errors=True)
        return dt

    def b_skopeo_umoci(self) -> float:
        dest, bundle = self.fresh("copy"), self.fresh("bundle")
        t = time.perf_counter()
        sh("skopeo", "copy", "-q", "--src-tls-verify=false", self.reg.ref("bench:gz"),
           f"oci:{dest}:gz")  # fmt: skip
        rootless = [] if os.geteuid() == 0 else ["--rootless"]
        sh("umoci", "unpack", *rootless, "--image", f"{dest}:gz", bundle)
        (bundle / "rootfs" / self.cat).read_bytes()
        dt = time.perf_counter() - t
        shutil.rmtree(dest)
        shutil.rmtree(bundle)
        return dt

    def c_skopeo(self) -> float:
        dest = self.fresh("copy")
        t = time.perf_counter()
        sh("skopeo", "copy", "-q", "--src-tls-verify=false", self.reg.ref("bench:gz"),
           f"oci:{dest}:gz")  # fmt: skip
        dt = time.perf_counter() - t
        shutil.rmtree(dest)
        return dt

    def _read(self, path: Path) -> float:
        t = time.perf_counter()
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass
        return time.perf_counter() - t

    def d_e_blob(self) -> tuple[float, float]:
        cache = self.fresh("cache")
        self.mount(self.reg.ref("blob:1"), cache, "--tls-verify=false")
        threads = ThreadCPU(self.mnt)
        try:
            cold = self._read(self.mnt / "refs/1/layers/0.tar")
        finally:
            self.threads_of["D"] = threads.stop()
            self.umount()
        self.cpu_of["D"] = self.take_cpu()
        self.mount(self.reg.ref("blob:1"), cache, "--tls-verify=false")
        try:
            warm = self._read(self.mnt / "refs/1/layers/0.tar")
        finally:
            self.umount()
        self.cpu_of["E"] = self.take_cpu()
        shutil.rmtree(cache, ignore_errors=True)
        return cold, warm

    def f_local_blob(self) -> float:
        cache = self.fresh("cache")
        self.mount(str(self.work / "blob-layout"), cache)
        try:
            dt = self._read(self.mnt / "refs/blob/layers/0.tar")
        finally:
            self.umount()
        shutil.rmtree(cache, ignore_errors=True)
        return dt

    def g_requests(self) -> list[str]:
        cache = self.fresh("cache")
        before = 0
        for _ in range(2):  # the first fills the cache; the second is counted
            before = len(self.reg.requests())
            self.mount(self.reg.ref("bench:gz"), cache, "--tls-verify=false")
            try:
                sh("find", self.mnt / "refs/gz/rootfs")
            finally:
                self.umount()
        shutil.rmtree(cache, ignore_errors=True)
        return self.reg.requests()[before:]


def daemon_cpu(mnt: Path) -> float:
    """CPU seconds the mount's daemon has used so far (0 if it cannot be told)."""
    try:
        pid = json.loads((mnt / ".ocifs/status.json").read_bytes())["pid"]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, KeyError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: thread names (one per thread, the OS sees the Python name: ocifs/threadname.py)
#: -> what the row calls them
THREAD_ROLES = {
    "ocifs-blob-rx": "receive",
    "ocifs-blob-wr": "cache write",
    "ocifs-blob-sha": "sha256",
}


class ThreadCPU(threading.Thread):
    """The daemon's CPU seconds per thread, sampled from /proc/PID/task while a workload
    runs (a thread that ends keeps its last sample, so up to one interval is lost):
    the main thread is the trio thread, named ocifs threads their role, the rest
    (trio's worker threads) "workers"."""

    def __init__(self, mnt: Path) -> None:
        super().__init__(daemon=True)
        self.pid = daemon_pid(mnt)
        self.seen: dict[int, tuple[str, float]] = {}
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            time.sleep(0.05)

    def sample(self) -> None:
        if self.pid is None:
            return
        tick = os.sysconf("SC_CLK_TCK")
        try:
            tids = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return
        for tid in tids:
            try:
                comm = Path(f"/proc/{self.pid}/task/{tid}/comm").read_text().strip()
                fields = Path(f"/proc/{self.pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1]
            except OSError:
                continue
            f = fields.split()
            role = "trio thread" if int(tid) == self.pid else THREAD_ROLES.get(comm, "workers")
            self.seen[int(tid)] = (role, (int(f[11]) + int(f[12])) / tick)

    def stop(self) -> dict[str, float]:
        self.done.set()
        self.join()
        self.sample()
        per: dict[str, float] = {}
        for role, cpu in self.seen.values():
            per[role] = per.get(role, 0.0) + cpu
        return per


def daemon_pid(mnt: Path) -> int | None:
    try:
        return int(json.loads((mnt / ".ocifs/status.json").read_bytes())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def stats(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}{chr(0x2013)}{max(values):.3f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench registry", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small data, one round")
    ap.add_argument("-n", "--rounds", type=int, default=None, help="timed rounds (3; quick 1)")
    ap.add_argument(
        "--bench-dir", default=os.environ.get("OCIFS_BENCH_DIR", "/var/tmp/ocifs-bench")
    )
    ap.add_argument(
        "--only", default="ABCDEFG",
        help="workloads to run, e.g. AC or D (D runs E too); default all",
    )  # fmt: skip
    ap.add_argument(
        "--compare", metavar="DIR", type=Path, default=None,
        help="also run A and D/E with the ocifs package in DIR (another checkout), "
        "alternated with this one's; reports both and the per-round ratios",
    )  # fmt: skip
    args = ap.parse_args(argv)
    only = set(args.only.upper()) | ({"E"} if "D" in args.only.upper() else set())
    rounds = args.rounds or (1 if args.quick else 3)
    bench_dir = Path(args.bench_dir)
    meta = data_mod.build(bench_dir, args.quick)
    work = bench_dir / ("work-registry-quick" if args.quick else "work-registry")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    blob_layout(meta, work / "blob-layout")
    reg = start_registry(work / "registry")
    try:
        log(f"registry on {reg.host}; pushing the bench image and the blob")
        push(Path(meta["dir"]) / "oci", "gz", reg, "bench:gz")
        if "D" in only:
            push(work / "blob-layout", "blob", reg, "blob:1")
        b = Bench(work, reg, meta)
        res: dict[str, list[float]] = {k: [] for k in ["A", "B", "C", "D", "E", "F", *OLD]}
        cpu: dict[str, list[float]] = {k: [] for k in ["A", "D", "E", *OLD]}
        threads: dict[str, list[dict[str, float]]] = {"D": [], "D'": []}
        runs = {"A": b.a_ocifs_cat, "B": b.b_skopeo_umoci, "C": b.c_skopeo, "F": b.f_local_blob}
        for r in range(rounds + 1):  # round 0 warms up
            got: dict[str, float] = {}
            cpu_got: dict[str, float] = {}
            for k in "ABCDF":
                if k not in only:
                    continue
                for code in [None, args.compare] if k in "AD" and args.compare else [None]:
                    b.code = code
                    tail = "" if code is None else "'"
                    if k == "D":
                        got["D" + tail], got["E" + tail] = b.d_e_blob()
                        cpu_got["D" + tail], cpu_got["E" + tail] = b.cpu_of["D"], b.cpu_of["E"]
                        if r:
                            threads["D" + tail].append(b.threads_of["D"])
                    else:
                        got[k + tail] = runs[k]()
                        if k == "A":
                            cpu_got["A" + tail] = b.cpu_of["A"]
                b.code = None
            if r == 0:
                continue
            for k, v in got.items():
                res[k].append(v)
            for k, v in cpu_got.items():
                cpu[k].append(v)
            log(f"round {r}: " + " ".join(f"{k} {v:.2f}" for k, v in got.items()) + " s")
        requests = b.g_requests() if "G" in only else []
    finally:
        reg.stop()
    mib = meta["blob"]["bytes"] / 2**20
    rate = lambda k: [mib / v for v in res[k]]  # noqa: E731
    ratios_ab = [a / bb for a, bb in zip(res["A"], res["B"], strict=False)]
    ratios_ac = [a / c for a, c in zip(res["A"], res["C"], strict=False)]
    print(f"# registry bench ({'quick' if args.quick else 'full'}, {rounds} rounds, "
          f"blob {mib:.0f} MiB; shared machine: noisy)\n")  # fmt: skip
    rows = [
        ("A ocifs mount + cat os-release, s", res["A"]),
        ("B skopeo copy + umoci unpack + cat, s", res["B"]),
        ("C skopeo copy, s", res["C"]),
        ("A/B (goal <= 0.25)", ratios_ab),
        ("A/C (goal <= 0.5)", ratios_ac),
        ("D cold blob read, MiB/s (goal >= 500)", rate("D")),
        ("E repeat blob read (cache), MiB/s", rate("E")),
        ("F local layout blob read, MiB/s", rate("F")),
        ("daemon CPU s (utime+stime), A mount + cat", cpu["A"]),
        ("daemon CPU s (utime+stime), D cold blob read", cpu["D"]),
        ("daemon CPU s (utime+stime), E repeat read", cpu["E"]),
    ]
    if args.compare:
        old = f"with {args.compare}"
        per_round = lambda a, b_: [x / y for x, y in zip(res[a], res[b_], strict=False)]  # noqa: E731
        cpu_round = lambda a, b_: [x / y for x, y in zip(cpu[a], cpu[b_], strict=False) if y]  # noqa: E731
        rows += [
            (f"A' {old}, s", res["A'"]),
            ("A / A' (this / compared, per round)", per_round("A", "A'")),
            (f"A'/C {old}", [a / c for a, c in zip(res["A'"], res["C"], strict=False)]),
            (f"D' cold blob read {old}, MiB/s", rate("D'")),
            ("D / D' throughput (this / compared, per round)", per_round("D'", "D")),
            (f"E' repeat blob read {old}, MiB/s", rate("E'")),
            (f"daemon CPU s, A' {old}", cpu["A'"]),
            ("daemon CPU A / A' (per round)", cpu_round("A", "A'")),
            (f"daemon CPU s, D' {old}", cpu["D'"]),
            ("daemon CPU D / D' (per round)", cpu_round("D", "D'")),
            (f"daemon CPU s, E' {old}", cpu["E'"]),
        ]
    for k in ("D", "D'"):
        roles = sorted({role for per in threads[k] for role in per})
        rows += [
            (f"daemon CPU s of {k} by thread: {role}", [per.get(role, 0.0) for per in threads[k]])
            for role in roles
        ]
    print("| workload | median (min-max) |\n|---|---|")
    for what, values in rows:
        if values:
            print(f"| {what} | {stats(values)} |")
    if "G" in only:
        print(f"\nG: requests for mount + find rootfs with the layer cached: {requests}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
