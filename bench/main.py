"""scripts/bench: ocifs against the peers, alternated in one run (issue 7).

See docs/bench.md. Stages: build (or reuse) the data; install the peers; probe which ocifs
features exist (a missing one turns its rows into "n/a (reason)"); check that ocifs serves the
same bytes as the native tree; run every workload group alternately (A, B, C, A, B, C, ...,
one warm-up round); print one markdown table plus the goals; write JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import data as data_mod
from bench import peers
from bench.abtime import Cmd, Group, run_group, summarize

REPO = Path(__file__).resolve().parent.parent
CTL = REPO / "bench" / "fusectl.sh"
NA_FEATURE = "feature missing"  # prefix of n/a reasons for ocifs features not there yet
TIMES, DASH = "\u00d7", "\u2013"  # for the markdown table


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def q(p: object) -> str:
    return shlex.quote(str(p))


def short(text: str, n: int = 160) -> str:
    """The last meaningful line of an error output, for a table cell."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else "no output"
    return line if len(line) <= n else line[: n - 1] + "…"


class Ctx:
    def __init__(self, args: argparse.Namespace, meta: dict, bench_dir: Path) -> None:
        self.args = args
        self.quick = args.quick
        self.meta = meta
        self.d = Path(meta["dir"])
        self.layout = self.d / "oci"
        self.native = self.d / "native"
        self.big = meta["layer"]["big_path"]
        self.big_size = meta["layer"]["big_size"]
        self.blob_hex = meta["blob"]["hex"]
        self.blob_bytes = meta["blob"]["bytes"]
        self.blob_path = self.layout / "blobs" / "sha256" / self.blob_hex
        self.archive = self.d / "image.oci.tar"
        self.work = bench_dir / ("work-quick" if self.quick else "work")
        self.state = self.work / "state"
        self.ocifs = args.ocifs
        self.rat: str | None = None
        self.features: dict[str, str | None] = {}
        self.tools: dict[str, str | None] = {}
        self.readahead = "not changed"
        self.timeout = args.timeout
        self._primed: set[str] = set()
        self.verify: list[dict] = []

    # -- paths and shell snippets
    def mnt(self, name: str) -> Path:
        return self.work / "mnt" / name

    def up_ocifs(self, name: str, src: Path, cache: Path, *extra: str) -> str:
        m = self.mnt(name)
        more = "".join(f"{q(e)} " for e in extra)
        return (f"{q(CTL)} up {name} {q(m)} {q(self.ocifs)} mount --foreground {more}"
                f"--cache-dir {q(cache)} {q(src)} {q(m)}")

    def cpu_of(self, name: str) -> Callable[[], float | None]:
        """A probe of the daemon `name`'s CPU seconds so far (Cmd.daemon_cpu)."""
        return lambda: daemon_cpu(self, name)

    def up_rat(self, name: str, archive: Path, idx: Path) -> str:
        m = self.mnt(name)
        return (f"{q(CTL)} up {name} {q(m)} {q(self.rat)} -f -P 2 --index-file {q(idx)} "
                f"{q(archive)} {q(m)}")

    def down(self, name: str) -> str:
        return f"{q(CTL)} down {name} {q(self.mnt(name))}"

    def sh(self, cmd: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True,
                              timeout=timeout or self.timeout)

    def must(self, cmd: str, timeout: float | None = None) -> str:
        r = self.sh(cmd, timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[:160]}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
        return r.stdout

    def layer(self, k: str) -> Path:
        return self.d / ("layer.tar" if k == "tar" else f"layer.tar.{k}")

    def tree(self, name: str, k: str) -> str:
        return f"{self.mnt(name)}/refs/{k}/layers/0"

    def cache_warm(self) -> Path:
        return self.work / "cache-warm"

    def rat_idx(self, k: str) -> Path:
        return self.work / f"rat-{k}.index.sqlite"

    def ocifs_na(self, *features: str) -> str | None:
        for f in features:
            why = self.features.get(f, "not probed")
            if why:
                return why
        return None

    def rat_na(self) -> str | None:
        return None if self.rat else self.tools.get("ratarmount", "ratarmount unavailable")

    def prime(self, k: str) -> None:
        """Index of layer k cached for ocifs (cache-warm) and ratarmount (its index file)."""
        if k in self._primed:
            return
        self._primed.add(k)
        if not self.ocifs_na(f"layer_{k}"):
            r = self.sh(f"{self.up_ocifs('prime', self.layout, self.cache_warm())} && "
                        f"find {q(self.tree('prime', k))} | wc -l; {self.down('prime')}")
            if r.returncode != 0:
                log(f"priming ocifs index for {k} failed: {r.stderr.strip()[-200:]}")
        if self.rat and not self.rat_idx(k).exists():
            self.sh(f"{self.up_rat('prime-rat', self.layer(k), self.rat_idx(k))}; "
                    f"{self.down('prime-rat')}")


# ----------------------------------------------------------------------------- probes


def cleanup_work(ctx: Ctx) -> None:
    """Unmount anything a previous (interrupted) run left under the work dir, stop the
    daemons it started (by their PID files), then start from an empty work dir."""
    mroot = str(ctx.work / "mnt")
    if ctx.state.exists():
        for pidf in ctx.state.glob("*.pid"):
            ctx.sh(ctx.down(pidf.stem), timeout=60)
    with open("/proc/self/mounts") as f:
        stale = [line.split()[1] for line in f if line.split()[1].startswith(mroot + "/")]
    for m in stale:
        subprocess.run(["fusermount3", "-uz", m], check=False, capture_output=True)
    shutil.rmtree(ctx.work, ignore_errors=True)
    (ctx.work / "mnt").mkdir(parents=True)
    ctx.state.mkdir(parents=True)
    tmpl = ctx.work / "import-template"
    (tmpl / "blobs" / "sha256").mkdir(parents=True)
    (tmpl / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}\n')
    (tmpl / "index.json").write_text(json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": []}) + "\n")


def probe(ctx: Ctx) -> None:
    """Which ocifs features exist right now (tried, not assumed)."""
    F = ctx.features
    to = 60 if ctx.quick else 180

    def missing(what: str, why: str) -> str:
        return f"{NA_FEATURE}: {what} ({short(why)})"

    r = ctx.sh(f"{q(ctx.ocifs)} --help", timeout=30)
    if r.returncode != 0:
        why = missing("ocifs CLI", r.stderr or r.stdout)
        for f in ("layout", "layer_gz", "layer_zst", "rootfs", "blob", "export", "import",
                  "import_archive"):
            F[f] = why
        return
    name, m = "probe", ctx.mnt("probe")
    cache = ctx.work / "cache-probe"
    r = ctx.sh(f"{ctx.up_ocifs(name, ctx.layout, cache)} && ls {q(m)}/refs", timeout=to)
    if r.returncode != 0 or "gz" not in r.stdout.split():
        F["layout"] = missing("mount of an OCI layout", r.stderr + r.stdout)
        for f in ("layer_gz", "layer_zst", "rootfs", "blob", "export", "import",
                  "import_archive"):
            F[f] = F["layout"]
        ctx.sh(ctx.down(name))
        return
    F["layout"] = None
    ra = ctx.sh(f"{q(CTL)} ra {q(m)}").stdout.strip()
    for k in ("gz", "zst"):
        r = ctx.sh(f"timeout {to} ls -A {q(ctx.tree(name, k))} | head -3", timeout=to + 5)
        F[f"layer_{k}"] = (None if r.returncode == 0 and r.stdout.strip() else
                           missing(f"layer tree refs/{k}/layers/0/", r.stderr or "empty"))
    r = ctx.sh(f"timeout {to} ls -A {q(m)}/refs/gz/rootfs | head -3", timeout=to + 5)
    F["rootfs"] = (None if r.returncode == 0 and r.stdout.strip() else
                   missing("merged refs/gz/rootfs/", r.stderr or "empty"))
    r = ctx.sh(f"stat -c %s {q(m)}/blobs/sha256/{ctx.blob_hex}", timeout=30)
    F["blob"] = (None if r.returncode == 0 and r.stdout.strip() == str(ctx.blob_bytes) else
                 missing("blobs/sha256/<hex>", r.stderr or f"size {r.stdout.strip()}"))
    r = ctx.sh(f"stat -c %s {q(m)}/refs/{EXPORT_REF}/image.tar", timeout=30)
    F["export"] = (None if r.returncode == 0 and r.stdout.strip().isdigit() else
                   missing(f"refs/{EXPORT_REF}/image.tar", r.stderr or "no size"))
    # read-ahead: does ocifs raise it itself? (only checked here, on its own mount)
    ra_after = ctx.sh(f"{q(CTL)} ra {q(m)}").stdout.strip()
    ctx.sh(ctx.down(name))
    ra_val = ra_after or ra
    want = ctx.args.readahead_kb
    if ra_val and ra_val.isdigit() and int(ra_val) > 128:
        ctx.readahead = (f"ocifs sets read_ahead_kb={ra_val} on its own mount; the bench "
                         "changed no mount's read_ahead_kb (ratarmount keeps the default)")
    elif want and os.geteuid() == 0:
        os.environ["OCIFS_BENCH_RA_KB"] = str(want)
        ctx.readahead = (f"ocifs leaves read_ahead_kb at {ra_val or '?'}; the bench raised it "
                         f"to {want} KiB after mounting, for ocifs and ratarmount alike")
    else:
        ctx.readahead = f"read_ahead_kb left at {ra_val or '?'} for every mount"
    # .import/: a fresh empty layout, one tiny blob named by its digest, then an archive
    t = ctx.work / "probe-import"
    shutil.rmtree(t, ignore_errors=True)
    shutil.copytree(ctx.work / "import-template", t)
    tiny = ctx.work / "probe-blob"
    tiny.write_bytes(b"ocifs bench probe\n")
    th = data_mod.sha256_file(tiny)
    r = ctx.sh(f"{ctx.up_ocifs('probe-imp', t, cache)} && test -d {q(ctx.mnt('probe-imp'))}/"
               f".import && cp {q(tiny)} {q(ctx.mnt('probe-imp'))}/.import/sha256:{th}",
               timeout=to)
    ok = r.returncode == 0 and (t / "blobs" / "sha256" / th).exists()
    F["import"] = None if ok else missing(".import/ blob copy", r.stderr or "blob not committed")
    if ok:
        r = ctx.sh(f"cp {q(ctx.archive)} {q(ctx.mnt('probe-imp'))}/.import/image.oci.tar",
                   timeout=to)
        why = r.stderr if r.returncode != 0 else check_archive_imported(ctx, t)
        F["import_archive"] = None if not why else missing(".import/ of an OCI archive", why)
    else:
        F["import_archive"] = F["import"]
    ctx.sh(ctx.down("probe-imp"))
    shutil.rmtree(t, ignore_errors=True)


def check_archive_imported(ctx: Ctx, target: Path) -> str | None:
    try:
        idx = json.loads((target / "index.json").read_text())
    except (OSError, ValueError) as exc:
        return f"index.json unreadable after import: {exc}"
    names = {m.get("annotations", {}).get("org.opencontainers.image.ref.name")
             for m in idx.get("manifests", [])}
    want = set(ctx.meta["layout"]["images"])
    if not want <= names:
        return f"refs {sorted(n for n in names if n)} after import, want {sorted(want)}"
    for img in ctx.meta["layout"]["images"].values():
        if not (target / "blobs" / "sha256" / img["layer"]).exists():
            return f"layer {img['layer'][:12]} not committed"
    return None


def verify(ctx: Ctx) -> None:
    """ocifs's bytes against the native bytes (untimed; before the timed runs)."""
    out = ctx.verify
    py = sys.executable
    env_cmd = f"cd {q(REPO)} && {q(py)} -m bench.verify"
    to = 300 if not ctx.quick else 60
    if ctx.ocifs_na("layout"):
        return
    name, m = "verify", ctx.mnt("verify")
    r = ctx.sh(ctx.up_ocifs(name, ctx.layout, ctx.work / "cache-verify"), timeout=60)
    if r.returncode != 0:
        out.append({"check": "mount", "ok": False, "detail": r.stderr[-300:]})
        return
    checks = [(f"layers/0 of {k} vs native", "tree", ctx.tree(name, k), ctx.native)
              for k in ("gz", "zst") if not ctx.ocifs_na(f"layer_{k}")]
    if not ctx.ocifs_na("rootfs"):
        checks.append(("rootfs of gz vs native", "tree", f"{m}/refs/gz/rootfs", ctx.native))
    if not ctx.ocifs_na("blob"):
        checks.append(("blobs/sha256/<1 GiB blob> digest", "file",
                       f"{m}/blobs/sha256/{ctx.blob_hex}", ctx.blob_hex))
    if not ctx.ocifs_na("export"):
        checks.append((f"refs/{EXPORT_REF}/image.tar: blobs hash to their names and equal "
                       "the layout's, stat size == bytes read", "export",
                       f"{m}/refs/{EXPORT_REF}/image.tar", ctx.layout))
    for label, kind, a, b in checks:
        r = ctx.sh(f"{env_cmd} {kind} {q(a)} {q(b)}", timeout=to)
        try:
            res = json.loads(r.stdout)
        except ValueError:
            res = {"bytes_equal": False, "error": (r.stderr or r.stdout)[-300:]}
        out.append({"check": label, "ok": bool(res.get("bytes_equal")), "detail": res})
        log(f"verify {label}: {'ok' if res.get('bytes_equal') else 'MISMATCH'}"
            + ("" if res.get("meta_equal", True) else f" (metadata differs: {res.get('meta')})"))
    ctx.sh(ctx.down(name))


# ----------------------------------------------------------------------------- workloads


def mount_or_na(ctx: Ctx, cmd: Cmd, up: str) -> None:
    """Mount for a group that keeps one mount; a failure makes only that command n/a."""
    if cmd.na is not None or (cmd.role != "ocifs" and not ctx.rat and "ratarmount" in cmd.label):
        return
    if "fusectl.sh up" in up:
        name = up.split("fusectl.sh up ", 1)[1].split()[0]
        if (ctx.state / f"{name}.pid").exists() and os.path.ismount(ctx.mnt(name)):
            return  # already up (shared by two groups)
    r = ctx.sh(up)
    if r.returncode != 0:
        cmd.na = f"mount failed: {r.stderr.strip()[-300:]}"


def w1(ctx: Ctx) -> list[Group]:
    gs = []
    for k in ("gz", "zst"):
        L = ctx.layer(k)
        name, rname = f"o1{k}", f"r1{k}"
        mr = ctx.mnt(rname)
        X = ctx.work / f"x1{k}"
        flag = "-z" if k == "gz" else "--zstd"
        cold_cache = ctx.work / f"cache-cold-{k}"
        cold_idx = ctx.work / f"rat-{k}-cold.index.sqlite"
        cmds = [
            Cmd("ocifs", f"{ctx.up_ocifs(name, ctx.layout, cold_cache)} && "
                f"find {q(ctx.tree(name, k))} | wc -l", "ocifs",
                pre=f"{ctx.down(name)}; rm -rf {q(cold_cache)}", post=ctx.down(name),
                na=ctx.ocifs_na(f"layer_{k}")),
            Cmd("ratarmount", f"{ctx.up_rat(rname, L, cold_idx)} && find {q(mr)} | wc -l",
                pre=f"{ctx.down(rname)}; rm -f {q(cold_idx)}", post=ctx.down(rname),
                na=ctx.rat_na()),
            Cmd(f"tar {flag} -xf + find", f"tar -C {q(X)} {flag} -xf {q(L)} && find {q(X)} | wc -l",
                pre=f"rm -rf {q(X)}; mkdir -p {q(X)}", post=f"rm -rf {q(X)}", ref=True),
        ]
        if k == "gz":
            U = ctx.work / "u1"
            rootless = "" if os.geteuid() == 0 else "--rootless "
            cmds.append(Cmd("umoci unpack + find",
                            f"umoci unpack {rootless}--image {q(ctx.layout)}:gz {q(U)} > /dev/null"
                            f" && find {q(U)}/rootfs | wc -l",
                            pre=f"rm -rf {q(U)}", post=f"rm -rf {q(U)}", na=ctx.tools.get("umoci")))
        gs.append(Group("1", f"1-{k}-cold", f"mount + first `find | wc -l` of the {k} layer, "
                        "cold (no index cache)", cmds))
        warm = [
            Cmd("ocifs", f"{ctx.up_ocifs(name, ctx.layout, ctx.cache_warm())} && "
                f"find {q(ctx.tree(name, k))} | wc -l", "ocifs",
                pre=ctx.down(name), post=ctx.down(name), na=ctx.ocifs_na(f"layer_{k}")),
            Cmd("ratarmount", f"{ctx.up_rat(rname, L, ctx.rat_idx(k))} && find {q(mr)} | wc -l",
                pre=ctx.down(rname), post=ctx.down(rname), na=ctx.rat_na(), ref=True),
        ]
        gs.append(Group("1", f"1-{k}-warm", f"mount + first `find | wc -l` of the {k} layer, "
                        "warm (index cached)", warm, setup=lambda k=k: ctx.prime(k)))
    return gs


def w2(ctx: Ctx) -> list[Group]:
    gs = []
    for k in ("gz", "zst"):
        L = ctx.layer(k)
        name, rname = f"o2{k}", f"r2{k}"
        big_o = f"{ctx.tree(name, k)}/{ctx.big}"
        big_r = f"{ctx.mnt(rname)}/{ctx.big}"
        big_n = ctx.native / ctx.big
        na_o = ctx.ocifs_na(f"layer_{k}")
        first = [
            Cmd("ocifs", f"{ctx.up_ocifs(name, ctx.layout, ctx.cache_warm())} && "
                f"cat {q(big_o)} > /dev/null", "ocifs",
                pre=ctx.down(name), post=ctx.down(name), na=na_o),
            Cmd("ratarmount",
                f"{ctx.up_rat(rname, L, ctx.rat_idx(k))} && cat {q(big_r)} > /dev/null",
                pre=ctx.down(rname), post=ctx.down(rname), na=ctx.rat_na()),
            Cmd("native cat", f"cat {q(big_n)} > /dev/null"),
        ]
        gs.append(Group("2", f"2-{k}-first", f"mount (index cached) + first read of the "
                        f"{ctx.big_size / 2**20:.0f} MiB file in the {k} layer", first,
                        bytes=ctx.big_size, setup=lambda k=k: ctx.prime(k)))

        again = [
            Cmd("ocifs", f"cat {q(big_o)} > /dev/null", "ocifs", na=na_o),
            Cmd("ratarmount", f"cat {q(big_r)} > /dev/null", na=ctx.rat_na()),
            Cmd("native cat", f"cat {q(big_n)} > /dev/null"),
        ]
        def setup(k: str = k, name: str = name, rname: str = rname, L: Path = L,
                  again: list[Cmd] = again) -> None:
            ctx.prime(k)
            mount_or_na(ctx, again[0], ctx.up_ocifs(name, ctx.layout, ctx.cache_warm()))
            mount_or_na(ctx, again[1], ctx.up_rat(rname, L, ctx.rat_idx(k)))

        def teardown(name: str = name, rname: str = rname) -> None:
            ctx.sh(f"{ctx.down(name)}; {ctx.down(rname)}")

        gs.append(Group("2", f"2-{k}-repeat", f"the same read again (same mount; the warm-up "
                        f"round is the first read), {k}", again, bytes=ctx.big_size,
                        setup=setup, teardown=teardown))
    return gs


#: workload 3's second ocifs row (a fresh `--read-only` mount each round) and its reference
READ_ONLY, NATIVE_ALL = "ocifs --read-only", "native read all"


def w3(ctx: Ctx) -> list[Group]:
    gs = []
    for k in ("gz", "zst"):
        L = ctx.layer(k)
        name, rname = f"o3{k}", f"r3{k}"
        X = ctx.work / f"x3{k}"
        flag = "-z" if k == "gz" else "--zstd"
        ro = f"o3{k}ro"
        up_o = ctx.up_ocifs(name, ctx.layout, ctx.cache_warm())
        up_ro = ctx.up_ocifs(ro, ctx.layout, ctx.cache_warm(), "--read-only")
        up_r = ctx.up_rat(rname, L, ctx.rat_idx(k)) if ctx.rat else "false"
        cmds = [
            Cmd("ocifs", f"tar -C {q(ctx.tree(name, k))} -cf - . | wc -c", "ocifs",
                pre=f"{ctx.down(name)}; {up_o}", na=ctx.ocifs_na(f"layer_{k}"),
                daemon_cpu=ctx.cpu_of(name)),
            # no .import/: no FLUSH (ENOSYS once) and no GETATTR after reads (ro superblock)
            Cmd(READ_ONLY, f"tar -C {q(ctx.tree(ro, k))} -cf - . | wc -c",
                pre=f"{ctx.down(ro)}; {up_ro}", post=ctx.down(ro),
                na=ctx.ocifs_na(f"layer_{k}"), daemon_cpu=ctx.cpu_of(ro),
                versus=NATIVE_ALL),
            Cmd("ratarmount", f"tar -C {q(ctx.mnt(rname))} -cf - . | wc -c",
                pre=f"{ctx.down(rname)}; {up_r}", na=ctx.rat_na()),
            Cmd(f"tar {flag} -xf + read all",
                f"tar -C {q(X)} {flag} -xf {q(L)} && tar -C {q(X)} -cf - . | wc -c",
                pre=f"rm -rf {q(X)}; mkdir -p {q(X)}", post=f"rm -rf {q(X)}", ref=True),
            Cmd(NATIVE_ALL, f"tar -C {q(ctx.native)} -cf - . | wc -c"),
        ]
        gs.append(Group("3", f"3-{k}", f"read every file (`tar -cf - . | wc -c`) of the {k} "
                        "layer, fresh mount each round (index cached)", cmds,
                        bytes=ctx.meta["layer"]["file_bytes"], setup=lambda k=k: ctx.prime(k),
                        teardown=lambda n=name, r=rname: ctx.sh(
                            f"{ctx.down(n)}; {ctx.down(r)}")))
    return gs


#: workload 9: how many readers at once
READERS = 8


def reader_lists(native: Path, out: Path, readers: int) -> tuple[list[Path], int]:
    """Every regular file of the tree but the biggest, in `readers` NUL-separated lists
    of near-equal bytes (largest first, each to the lightest list), and their bytes.

    The biggest file (the 48 MiB apt list) alone outweighs the average share, so one
    reader would still be at work when the others are done."""
    files: list[tuple[int, str]] = []
    for root, _dirs, names in os.walk(native):
        for n in names:
            p = os.path.join(root, n)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append((os.path.getsize(p), os.path.relpath(p, native)))
    files.sort(reverse=True)
    files = files[1:]
    shares: list[list[str]] = [[] for _ in range(readers)]
    weights = [0] * readers
    for size, rel in files:
        i = weights.index(min(weights))
        shares[i].append(rel)
        weights[i] += size
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, share in enumerate(shares):
        path = out / f"readers-{i}.lst"
        path.write_bytes(b"".join(os.fsencode(rel) + b"\0" for rel in sorted(share)))
        paths.append(path)
    return paths, sum(weights)


def readers_cmd(tree: str, lists: list[Path]) -> str:
    """One `cat` process per list, all at once; fails if any reader failed."""
    starts = " ".join(f"xargs -0r cat < {q(p)} > /dev/null & pids=\"$pids $!\";" for p in lists)
    return (f"cd {q(tree)} && pids=; {starts} rc=0; "
            f"for p in $pids; do wait $p || rc=1; done; exit $rc")


def one_reader_cmd(tree: str, lists: list[Path]) -> str:
    """The same files read one after another by one reader."""
    return f"cd {q(tree)} && cat {' '.join(q(p) for p in lists)} | xargs -0r cat > /dev/null"


def w9(ctx: Ctx) -> list[Group]:
    """8 readers of different files of the gz layer at once vs one reader of them all:
    does the daemon serve requests of several clients in parallel?"""
    lists, nbytes = reader_lists(ctx.native, ctx.work / "w9", READERS)
    na = ctx.ocifs_na("layer_gz")
    cmds = []
    for label, name, cmd, role in (
        (f"ocifs, {READERS} readers", "o9m", readers_cmd, "ocifs"),
        ("ocifs, 1 reader", "o9s", one_reader_cmd, "alt"),
    ):
        up = ctx.up_ocifs(name, ctx.layout, ctx.cache_warm())
        cmds.append(Cmd(label, cmd(ctx.tree(name, "gz"), lists), role,
                        pre=f"{ctx.down(name)}; {up}", post=ctx.down(name), na=na,
                        daemon_cpu=ctx.cpu_of(name)))
    cmds += [
        Cmd(f"native, {READERS} readers", readers_cmd(str(ctx.native), lists)),
        Cmd("native, 1 reader", one_reader_cmd(str(ctx.native), lists)),
    ]
    return [Group("9", "9-gz", f"{READERS} concurrent readers of different files of the gz "
                  "layer (all files but the biggest, split by bytes), fresh mount each round "
                  "(index cached), vs one reader of the same files", cmds, bytes=nbytes,
                  setup=lambda: ctx.prime("gz"))]


def w4(ctx: Ctx) -> list[Group]:
    name, rname = "o4", "r4"
    na_o = ctx.ocifs_na("rootfs")
    ro = f"{ctx.mnt(name)}/refs/gz/rootfs"
    rr = ctx.mnt(rname)

    def setup() -> None:
        ctx.prime("gz")
        for g in gs:
            mount_or_na(ctx, g.cmds[0], ctx.up_ocifs(name, ctx.layout, ctx.cache_warm()))
            mount_or_na(ctx, g.cmds[1], ctx.up_rat(rname, ctx.layer("gz"), ctx.rat_idx("gz")))

    def teardown() -> None:
        ctx.sh(f"{ctx.down(name)}; {ctx.down(rname)}")

    gs = []
    first = True
    for tool, verb in (("find", "find {}"), ("ls -lR", "ls -lR {}")):
        cmds = [
            Cmd("ocifs rootfs/", verb.format(q(ro)) + " | wc -l", "ocifs", na=na_o),
            Cmd("ratarmount (gz layer)", verb.format(q(rr)) + " | wc -l", na=ctx.rat_na()),
            Cmd("native tree", verb.format(q(ctx.native)) + " | wc -l", ref=True),
        ]
        g = Group("4", f"4-{tool.split()[0]}", f"`{tool} | wc -l` of the merged rootfs/ "
                  "(same mount every round)", cmds)
        # one mount for both groups: set up before the first, torn down after the last
        if first:
            g.setup = setup
        else:
            g.teardown = teardown
        first = False
        gs.append(g)
    return gs


def w5(ctx: Ctx) -> list[Group]:
    name = "o5"
    na_o = ctx.ocifs_na("blob")
    bo = f"{ctx.mnt(name)}/blobs/sha256/{ctx.blob_hex}"
    up_o = ctx.up_ocifs(name, ctx.layout, ctx.cache_warm())
    gib = ctx.blob_bytes / 2**30
    size = f"{gib:g} GiB" if gib >= 1 else f"{ctx.blob_bytes / 2**20:g} MiB"
    cold = [
        Cmd("ocifs (fresh mount)", f"cat {q(bo)} > /dev/null", "ocifs",
            pre=f"{ctx.down(name)}; {up_o}", na=na_o),
        Cmd("native cat", f"cat {q(ctx.blob_path)} > /dev/null"),
    ]
    again = [
        Cmd("ocifs (same mount)", f"cat {q(bo)} > /dev/null", "ocifs", na=na_o),
        Cmd("native cat", f"cat {q(ctx.blob_path)} > /dev/null"),
    ]
    return [
        Group("5", "5-cold", f"cold read of the {size} blob under blobs/sha256/ "
              "(fresh daemon each round)", cold, bytes=ctx.blob_bytes,
              teardown=lambda: ctx.sh(ctx.down(name))),
        Group("5", "5-repeat", f"repeat read of the {size} blob (same mount)", again,
              bytes=ctx.blob_bytes,
              setup=lambda: mount_or_na(ctx, again[0], f"{ctx.down(name)}; {up_o}"),
              teardown=lambda: ctx.sh(ctx.down(name))),
    ]


def w6(ctx: Ctx) -> list[Group]:
    name = "o6"
    m = ctx.mnt(name)
    T = ctx.work / "import-target"
    disk = ctx.work / "disk"
    tmpl = ctx.work / "import-template"
    pre_o = (f"{ctx.down(name)}; rm -rf {q(T)}; cp -a {q(tmpl)} {q(T)} && "
             f"{ctx.up_ocifs(name, T, ctx.work / 'cache-import')}")
    hashed = {"done": False}

    def check_blob() -> str | None:
        ctx.sh(ctx.down(name))
        p = T / "blobs" / "sha256" / ctx.blob_hex
        try:
            if not p.exists():
                return f"{p.name[:12]} not committed under blobs/sha256/"
            if p.stat().st_size != ctx.blob_bytes:
                return f"committed blob has {p.stat().st_size} bytes"
            if not hashed["done"]:  # once per run: the committed bytes hash to the name
                hashed["done"] = True
                got = data_mod.sha256_file(p)
                ctx.verify.append({"check": ".import/ blob committed, sha256 of the backing "
                                   "file", "ok": got == ctx.blob_hex, "detail": got})
                if got != ctx.blob_hex:
                    return f"committed blob hashes to {got}"
            return None
        finally:
            shutil.rmtree(T, ignore_errors=True)

    def check_archive() -> str | None:
        ctx.sh(ctx.down(name))
        try:
            return check_archive_imported(ctx, T)
        finally:
            shutil.rmtree(T, ignore_errors=True)

    mib = ctx.blob_bytes / 2**20
    blob = [
        Cmd("ocifs .import/", f"cp {q(ctx.blob_path)} {q(m)}/.import/sha256:{ctx.blob_hex}",
            "ocifs", pre=pre_o, post=check_blob, na=ctx.ocifs_na("import")),
        Cmd("cp to disk", f"cp {q(ctx.blob_path)} {q(disk)}/blob",
            pre=f"rm -rf {q(disk)}; mkdir -p {q(disk)}", post=f"rm -rf {q(disk)}"),
    ]
    arch = [
        Cmd("ocifs .import/", f"cp {q(ctx.archive)} {q(m)}/.import/image.oci.tar", "ocifs",
            pre=pre_o, post=check_archive, na=ctx.ocifs_na("import_archive")),
        Cmd("cp to disk", f"cp {q(ctx.archive)} {q(disk)}/image.oci.tar",
            pre=f"rm -rf {q(disk)}; mkdir -p {q(disk)}", post=f"rm -rf {q(disk)}"),
    ]
    return [
        Group("6", "6-blob", f"`cp` of the {mib:g} MiB blob into .import/ "
              "(named by its digest, verified), fresh empty layout each round", blob,
              bytes=ctx.blob_bytes, teardown=lambda: ctx.sh(ctx.down(name))),
        Group("6", "6-archive", f"`cp` of the OCI archive ({ctx.meta['archive_bytes'] / 2**20:.0f}"
              " MiB, images gz/zst/tar) into .import/", arch,
              bytes=ctx.meta["archive_bytes"], teardown=lambda: ctx.sh(ctx.down(name))),
    ]


#: the image workload 8 exports: its uncompressed layer is the largest blob of the layout
EXPORT_REF = "tar"


def w8(ctx: Ctx) -> list[Group]:
    """image.tar: read all of it, against reading the same blobs from blobs/ and against
    `skopeo copy oci:<layout>:<ref> oci-archive:<file>` (ocifs side: `cp` to the same disk)."""
    na_o = ctx.ocifs_na("export")
    img = ctx.meta["layout"]["images"][EXPORT_REF]
    hexes = [img["manifest"], ctx.meta["layout"]["config"], img["layer"]]
    blob_bytes = sum((ctx.layout / "blobs" / "sha256" / h).stat().st_size for h in hexes)
    exp, blb = "o8", "o8b"
    tar = f"{ctx.mnt(exp)}/refs/{EXPORT_REF}/image.tar"
    blobs = " ".join(q(f"{ctx.mnt(blb)}/blobs/sha256/{h}") for h in hexes)
    up_e = f"{ctx.down(exp)}; {ctx.up_ocifs(exp, ctx.layout, ctx.cache_warm())}"
    up_b = f"{ctx.down(blb)}; {ctx.up_ocifs(blb, ctx.layout, ctx.cache_warm())}"
    export_bytes = blob_bytes + 5 * 1024  # headers: the figure is MiB/s of blob payload
    disk = ctx.work / "disk8"
    fresh_disk = f"rm -rf {q(disk)}; mkdir -p {q(disk)}"
    cold = [
        Cmd("ocifs image.tar (fresh mount)", f"cat {q(tar)} > /dev/null", "ocifs",
            pre=up_e, na=na_o),
        Cmd("ocifs blobs/ (fresh mount)", f"cat {blobs} > /dev/null", pre=up_b,
            na=ctx.ocifs_na("blob")),
    ]
    warm = [
        Cmd("ocifs image.tar (same mount)", f"cat {q(tar)} > /dev/null", "ocifs", na=na_o),
        Cmd("ocifs blobs/ (same mount)", f"cat {blobs} > /dev/null", na=ctx.ocifs_na("blob")),
    ]
    copy = [
        Cmd("ocifs cp image.tar (fresh mount)", f"cp {q(tar)} {q(disk)}/image.tar", "ocifs",
            pre=f"{fresh_disk}; {up_e}", post=f"rm -rf {q(disk)}", na=na_o),
        Cmd("skopeo copy oci: oci-archive:",
            f"skopeo copy -q oci:{q(ctx.layout)}:{EXPORT_REF} "
            f"oci-archive:{q(disk)}/image.tar", pre=fresh_disk, post=f"rm -rf {q(disk)}",
            na=ctx.tools.get("skopeo") if not shutil.which("skopeo") else None),
    ]

    def teardown() -> None:
        ctx.sh(f"{ctx.down(exp)}; {ctx.down(blb)}")

    def setup_warm() -> None:
        mount_or_na(ctx, warm[0], up_e)
        mount_or_na(ctx, warm[1], up_b)

    mib = blob_bytes / 2**20
    return [
        Group("8", "8-cold", f"read all of refs/{EXPORT_REF}/image.tar ({mib:.0f} MiB of blobs)"
              " vs the same blobs from blobs/, fresh daemon each round", cold,
              bytes=export_bytes, teardown=teardown),
        Group("8", "8-warm", f"read all of refs/{EXPORT_REF}/image.tar again (same mount) vs "
              "the same blobs again", warm, bytes=export_bytes, setup=setup_warm,
              teardown=teardown),
        Group("8", "8-copy", f"image.tar of refs/{EXPORT_REF} written to disk: `cp` from a "
              "fresh mount vs `skopeo copy oci: oci-archive:`", copy, bytes=export_bytes,
              teardown=teardown),
    ]


def w10(ctx: Ctx) -> list[Group]:
    """Cold mount + `find` of rootfs/ of a 3-layer image (whiteouts, an opaque directory),
    against `umoci unpack` + `find` and against the image's largest layer alone, cold."""
    try:
        three = data_mod.ensure_three_layers(ctx.meta)
    except (OSError, RuntimeError, subprocess.CalledProcessError, StopIteration,
            ValueError) as exc:
        why = f"3-layer image could not be built: {exc}"
        return [Group("10", "10-cold", "3-layer rootfs/", [Cmd("ocifs rootfs/", "true", "ocifs",
                                                                na=why)])]
    layout, ref, big = Path(three["layout"]), three["ref"], three["largest"]
    name, lname, U = "o10", "o10l", ctx.work / "u10"
    cache, lcache = ctx.work / "cache-10", ctx.work / "cache-10l"
    rootless = "" if os.geteuid() == 0 else "--rootless "
    cmds = [
        Cmd("ocifs rootfs/", f"{ctx.up_ocifs(name, layout, cache)} && "
            f"find {q(ctx.mnt(name))}/refs/{ref}/rootfs | wc -l", "ocifs",
            pre=f"{ctx.down(name)}; rm -rf {q(cache)}", post=ctx.down(name),
            na=ctx.ocifs_na("rootfs")),
        Cmd(THREE_LARGEST, f"{ctx.up_ocifs(lname, layout, lcache)} && "
            f"find {q(ctx.mnt(lname))}/refs/{ref}/layers/{big} | wc -l",
            pre=f"{ctx.down(lname)}; rm -rf {q(lcache)}", post=ctx.down(lname),
            na=ctx.ocifs_na("rootfs")),
        Cmd("umoci unpack + find",
            f"umoci unpack {rootless}--image {q(layout)}:{ref} {q(U)} > /dev/null"
            f" && find {q(U)}/rootfs | wc -l",
            pre=f"rm -rf {q(U)}", post=f"rm -rf {q(U)}", na=ctx.tools.get("umoci"), ref=True),
    ]
    sizes = ", ".join(f"{n['tar_bytes'] / 2**20:.0f}" for n in three["layers"])
    return [Group("10", "10-cold", f"mount + first `find | wc -l` of rootfs/ of a 3-layer gz "
                  f"image ({sizes} MiB tar; whiteouts), cold (no index cache)", cmds)]


#: label of workload 10's comparison with the largest layer alone
THREE_LARGEST = "ocifs largest layer alone (layers/<n>/, cold)"


def w7(ctx: Ctx) -> list[dict]:
    """Peak RSS (VmHWM) of each daemon after workloads 1-4 on one layer, cold index."""
    rows = []
    for k in ("gz", "zst"):
        for peer in ("ocifs", "ratarmount"):
            row: dict = {"workload": "7", "group": f"7-{k}", "label": peer,
                         "role": "ocifs" if peer == "ocifs" else "alt",
                         "title": f"peak RSS (VmHWM) of the daemon after workloads 1-4, {k}"}
            if peer == "ocifs":
                na = ctx.ocifs_na(f"layer_{k}")
                name = f"o7{k}"
                cache = ctx.work / f"cache-rss-{k}"
                up = f"rm -rf {q(cache)}; {ctx.up_ocifs(name, ctx.layout, cache)}"
                tree = ctx.tree(name, k)
                rootfs = None if ctx.ocifs_na("rootfs") else f"{ctx.mnt(name)}/refs/{k}/rootfs"
            else:
                na = ctx.rat_na()
                name = f"r7{k}"
                idx = ctx.work / f"rat-{k}-rss.index.sqlite"
                up = f"rm -f {q(idx)}; {ctx.up_rat(name, ctx.layer(k), idx)}" if ctx.rat else ""
                tree = rootfs = str(ctx.mnt(name))
            if na:
                row["na"] = na
                rows.append(row)
                continue
            steps = [f"find {q(tree)} | wc -l", f"cat {q(tree + '/' + ctx.big)} > /dev/null",
                     f"tar -C {q(tree)} -cf - . | wc -c"]
            if rootfs:
                steps += [f"find {q(rootfs)} | wc -l", f"ls -lR {q(rootfs)} | wc -l"]
            else:
                row["note"] = "rootfs/ steps skipped (feature missing)"
            t0 = time.monotonic()
            r = ctx.sh(f"{up} && " + " && ".join(steps), timeout=ctx.timeout * 2)
            el = time.monotonic() - t0
            hwm = ctx.sh(f"{q(CTL)} hwm {name}").stdout.strip()
            extra = session_hwm(ctx, name)
            ctx.sh(ctx.down(name))
            if r.returncode != 0 or not hwm.isdigit():
                row["na"] = f"exit {r.returncode}: {r.stderr.strip()[-300:]}"
            else:
                row.update({"vmhwm_mib": round(int(hwm) / 1024, 1), "seconds": round(el, 2),
                            "steps": steps})
                if extra:
                    row["other_processes_vmhwm_mib"] = extra
            rows.append(row)
    for k in ("gz", "zst"):
        o = next(r for r in rows if r["group"] == f"7-{k}" and r["label"] == "ocifs")
        rr = next(r for r in rows if r["group"] == f"7-{k}" and r["label"] == "ratarmount")
        if "vmhwm_mib" in o and "vmhwm_mib" in rr:
            rr["ratio_ocifs_over_this"] = round(o["vmhwm_mib"] / rr["vmhwm_mib"], 3)
    return rows


def daemon_cpu(ctx: Ctx, name: str, children: bool = False) -> float | None:
    """user+sys seconds the daemon has used so far (from /proc/<pid>/stat); with
    `children`, plus those of the children it has reaped (its decoder processes)."""
    try:
        pid = int((ctx.state / f"{name}.pid").read_text())
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        if children:
            ticks += int(fields[13]) + int(fields[14])
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def profile(ctx: Ctx, reps: int) -> list[dict]:
    """Where ocifs's time goes (not alternated; medians of `reps`): mount alone, indexing
    (first `ls` of the layer tree, and what the daemon logs), the first and a second
    `find` walk, ratarmount's mount+index and find; daemon CPU during read-all and import."""
    import statistics

    def timed(cmd: str) -> float | None:
        t0 = time.monotonic()
        r = ctx.sh(cmd)
        return time.monotonic() - t0 if r.returncode == 0 else None

    rows = []
    for k in ("gz", "zst"):
        if ctx.ocifs_na(f"layer_{k}"):
            continue
        name = f"p{k}"
        tree = q(ctx.tree(name, k))
        acc: dict[str, list[float]] = {}

        def add(key: str, v: float | None, acc: dict[str, list[float]] = acc) -> None:
            if v is not None:
                acc.setdefault(key, []).append(v)

        for _ in range(reps):
            cache = ctx.work / f"cache-prof-{k}"
            shutil.rmtree(cache, ignore_errors=True)
            add("cold: ocifs mount (process start to mounted)",
                timed(ctx.up_ocifs(name, ctx.layout, cache)))
            c0, c0_all = daemon_cpu(ctx, name), daemon_cpu(ctx, name, children=True)
            add("cold: first `ls` of layers/0/ (indexing)", timed(f"ls {tree} > /dev/null"))
            c1, c1_all = daemon_cpu(ctx, name), daemon_cpu(ctx, name, children=True)
            if None not in (c0, c1, c0_all, c1_all):
                add("cold: indexing, CPU of the daemon (user+sys)", c1 - c0)  # type: ignore[operator]
                add("cold: indexing, CPU of the daemon + its decoder children",
                    c1_all - c0_all)  # type: ignore[operator]
            log_text = (ctx.state / f"{name}.log").read_text(errors="replace")
            for line in log_text.splitlines():
                if "entries in" in line and " s" in line:
                    try:
                        add("cold: indexing as logged by the daemon",
                            float(line.rsplit("entries in", 1)[1].split()[0]))
                    except ValueError:
                        pass
            add("first `find | wc -l` walk after indexing", timed(f"find {tree} | wc -l"))
            add("second `find | wc -l` walk (same mount)", timed(f"find {tree} | wc -l"))
            ctx.sh(ctx.down(name))
            add("warm: ocifs mount", timed(ctx.up_ocifs(name, ctx.layout, cache)))
            add("warm: first `ls` of layers/0/ (index loaded from the cache)",
                timed(f"ls {tree} > /dev/null"))
            c0 = daemon_cpu(ctx, name)
            t = timed(f"tar -C {tree} -cf - . | wc -c")
            c1 = daemon_cpu(ctx, name)
            add("read every file (fresh mount, wall)", t)
            if c0 is not None and c1 is not None:
                add("read every file: daemon CPU (user+sys)", c1 - c0)
            ctx.sh(ctx.down(name))
            if ctx.rat:
                idx = ctx.work / f"rat-prof-{k}.sqlite"
                idx.unlink(missing_ok=True)
                add("ratarmount: mount incl. building its index",
                    timed(ctx.up_rat(f"rp{k}", ctx.layer(k), idx)))
                add("ratarmount: first `find | wc -l`",
                    timed(f"find {q(ctx.mnt('rp' + k))} | wc -l"))
                ctx.sh(ctx.down(f"rp{k}"))
        for key, vals in acc.items():
            rows.append({"record": "profile", "layer": k, "what": key, "n": len(vals),
                         "median_s": round(statistics.median(vals), 3),
                         "min_s": round(min(vals), 3), "max_s": round(max(vals), 3)})
    if not ctx.ocifs_na("import"):
        T = ctx.work / "import-target-prof"
        vals_w, vals_c = [], []
        for _ in range(reps):
            shutil.rmtree(T, ignore_errors=True)
            shutil.copytree(ctx.work / "import-template", T)
            if ctx.sh(ctx.up_ocifs("pimp", T, ctx.work / "cache-import")).returncode != 0:
                break
            c0 = daemon_cpu(ctx, "pimp")
            t = timed(f"cp {q(ctx.blob_path)} {q(ctx.mnt('pimp'))}/.import/sha256:{ctx.blob_hex}")
            c1 = daemon_cpu(ctx, "pimp")
            ctx.sh(ctx.down("pimp"))
            if t is not None and c0 is not None and c1 is not None:
                vals_w.append(t)
                vals_c.append(c1 - c0)
        shutil.rmtree(T, ignore_errors=True)
        for what, vals in (("cp blob into .import/ (wall)", vals_w),
                           ("cp blob into .import/: daemon CPU (user+sys)", vals_c)):
            if vals:
                rows.append({"record": "profile", "layer": "blob", "what": what,
                             "n": len(vals), "median_s": round(statistics.median(vals), 3),
                             "min_s": round(min(vals), 3), "max_s": round(max(vals), 3)})
    return rows


def session_hwm(ctx: Ctx, name: str) -> float | None:
    """VmHWM of other processes in the daemon's session (a forked helper would hide there)."""
    try:
        pid = int((ctx.state / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == pid:
            continue
        try:
            if os.getsid(int(d.name)) != pid:
                continue
            for line in (d / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return round(total / 1024, 1) if total else None


# ----------------------------------------------------------------------------- report

GOALS = [
    # id, text, group, label, kind, target
    ("G1", "mount + first listing, gz, cold: ≤ 0.5x ratarmount", "1-gz-cold", "ratarmount",
     "ratio", 0.5),
    ("G2", "mount + first listing, zst, cold: ≤ 0.4x ratarmount", "1-zst-cold", "ratarmount",
     "ratio", 0.4),
    ("G3a", "warm (index cached) mount + listing, gz: ≤ 0.7x ratarmount", "1-gz-warm",
     "ratarmount", "ratio", 0.7),
    ("G3b", "warm (index cached) mount + listing, zst: ≤ 0.7x ratarmount", "1-zst-warm",
     "ratarmount", "ratio", 0.7),
    ("G4a", "read every file, gz: ≥ 2x ratarmount's throughput (time ratio ≤ 0.5)", "3-gz",
     "ratarmount", "ratio", 0.5),
    ("G4b", "read every file, gz: at least as fast as `tar -x` of the layer (ratio ≤ 1)",
     "3-gz", "tar -z -xf + read all", "ratio", 1.0),
    ("G4c", "read every file, gz, fresh writable mount: ≤ 4x a native read (issue 14)",
     "3-gz", NATIVE_ALL, "ratio", 4.0),
    ("G4d", "read every file, gz, fresh --read-only mount: ≤ 4x a native read (issue 14)",
     "3-gz", READ_ONLY, "versus", 4.0),
    ("G5", "repeat read of the big file in the zst layer: ≥ 4x faster than ratarmount "
     "(ratio ≤ 0.25)", "2-zst-repeat", "ratarmount", "ratio", 0.25),
    ("G6", "cold read of the blob: ≥ 1 GiB/s", "5-cold", "ocifs (fresh mount)", "mibs", 1024),
    ("G7", "repeat read of the blob: ≥ 70 % of native `cat`'s throughput", "5-repeat",
     "native cat", "pct_native", 0.7),
    ("G8", "cp of the blob into .import/, digest verified: ≥ 500 MiB/s", "6-blob",
     "ocifs .import/", "mibs", 500),
    ("G9a", "daemon peak RSS, gz: ≤ 0.5x ratarmount", "7-gz", "ratarmount", "ratio", 0.5),
    ("G9b", "daemon peak RSS, zst: ≤ 0.5x ratarmount", "7-zst", "ratarmount", "ratio", 0.5),
    ("G10a", "read all of image.tar, fresh mount: ≥ 90 % of the throughput of its blobs "
     "from blobs/", "8-cold", "ocifs blobs/ (fresh mount)", "pct_native", 0.9),
    ("G10b", "read all of image.tar, same mount: ≥ 90 % of the throughput of its blobs "
     "from blobs/", "8-warm", "ocifs blobs/ (same mount)", "pct_native", 0.9),
    ("G11", "image.tar to disk: ≥ 3x faster than `skopeo copy oci: oci-archive:` "
     "(ratio ≤ 0.33)", "8-copy", "skopeo copy oci: oci-archive:", "ratio", 1 / 3),
    ("G12", f"{READERS} concurrent readers of the gz layer: aggregate throughput ≥ 1.5x "
     "one reader's (time ratio ≤ 0.67)", "9-gz", "ocifs, 1 reader", "ratio", 1 / 1.5),
    ("G13a", "cold mount + find of rootfs/ of a 3-layer image: ≤ 0.3x `umoci unpack` + find",
     "10-cold", "umoci unpack + find", "ratio", 0.3),
    ("G13b", "cold mount + find of rootfs/ of a 3-layer image: ≤ 1.2x its largest layer "
     "alone, cold (the merge costs little)", "10-cold", THREE_LARGEST, "ratio", 1.2),
]


def evaluate_goals(rows: list[dict], quick: bool) -> list[dict]:
    out = []
    for gid, text, group, label, kind, target in GOALS:
        row = next((r for r in rows if r["group"] == group and r["label"] == label), None)
        subj = next((r for r in rows if r["group"] == group and r["role"] == "ocifs"), None)
        g = {"goal": gid, "text": text, "target": round(target, 3), "kind": kind}
        if row is None or subj is None:
            g.update(status="n/a", detail="not run")
        elif "na" in subj:
            g.update(status="n/a", detail=f"ocifs: {short(subj['na'])}")
        elif "na" in row:
            g.update(status="n/a", detail=f"{label}: {short(row['na'])}")
        elif kind == "pct_native":
            v = row.get("ratio_ocifs_over_this")
            if v is None:
                g.update(status="n/a", detail="no paired rounds")
            else:
                pct = 1 / v
                met = pct >= target
                g.update(measured=round(pct, 3), status="met" if met else "missed",
                         detail=f"{pct:.0%} of native" + ("" if met else
                                f": {target - pct:.0%} points short of {target:.0%}"))
        elif kind in ("ratio", "versus"):
            v = (row.get("ratio_ocifs_over_this") if kind == "ratio" else
                 row.get("ratio_versus", {}).get("median"))
            if v is None:
                g.update(status="n/a", detail="no paired rounds")
            else:
                met = v <= target
                g.update(measured=v, status="met" if met else "missed",
                         detail=(f"{v:.2f}{TIMES} vs ≤ {target:.2f}{TIMES}" + ("" if met else
                                 f": {v / target - 1:.0%} over the goal")))
        else:
            v = row.get("mib_s_median")
            met = v is not None and v >= target
            g.update(measured=v, status="met" if met else "missed",
                     detail=f"{v:,.0f} MiB/s vs ≥ {target:g}" + ("" if met else
                            f": {1 - v / target:.0%} short of the goal"))
        if quick and g["status"] in ("met", "missed"):
            g["status"] += " (quick data: not meaningful)"
        out.append(g)
    return out


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def fmt_row(r: dict, first: bool) -> str:
    label = cell(r["label"])
    if r.get("role") == "ocifs":
        label = f"**{label}**"
    if "daemon_cpu_median" in r:
        label += f" (daemon CPU {r['daemon_cpu_median']:.2f} s)"
    head = f"| {r['workload']} | {cell(r['title'])} |" if first else "| | |"
    if "na" in r:
        return f"{head} {label} | n/a ({cell(short(r['na'], 200))}) | | | |"
    if "vmhwm_mib" in r:
        rat = (f"{r['ratio_ocifs_over_this']:.2f}" if "ratio_ocifs_over_this" in r else "—")
        return f"{head} {label} | {r['vmhwm_mib']:.0f} MiB (VmHWM) | | | {rat} |"
    thr = f"{r['mib_s_median']:,.0f}" if "mib_s_median" in r else ""
    if "ratio_ocifs_over_this" in r:
        lo, hi = r["ratio_range"]
        rat = f"{r['ratio_ocifs_over_this']:.2f} [{lo:.2f}{DASH}{hi:.2f}]"
    else:
        rat = "—" if r.get("role") == "ocifs" else ""
    vs = r.get("ratio_versus")
    if vs:
        lo, hi = vs["range"]
        rat += (f"; this ÷ {cell(vs['label'])}: {vs['median']:.2f} [{lo:.2f}{DASH}{hi:.2f}]")
    return (f"{head} {label} | {r['wall_median']:.3f} | "
            f"{r['wall_min']:.3f}{DASH}{r['wall_max']:.3f} | {thr} | {rat} |")


def render(rows: list[dict], goals: list[dict], ctx: Ctx, args: argparse.Namespace,
           elapsed: float) -> str:
    L = []
    m = ctx.meta
    L.append(f"ocifs bench ({'quick' if args.quick else 'full'}): N = {args.rounds} rounds "
             f"after {args.warmup} warm-up, commands alternated within each group; "
             f"{elapsed / 60:.1f} min.")
    L.append(f"Data: {m['tree']}; layer {m['layer']['tar_bytes'] / 2**20:.0f} MiB tar, "
             f"{m['layer']['members']} members, gz {m['layer']['gz_bytes'] / 2**20:.0f} MiB, "
             f"zst {m['layer']['zst_bytes'] / 2**20:.0f} MiB (one frame), big file "
             f"{m['layer']['big_size'] / 2**20:.1f} MiB; blob {ctx.blob_bytes / 2**20:g} MiB.")
    L.append(f"Read-ahead: {ctx.readahead}.")
    L.append("")
    L.append(f"| # | workload | command | median s | min{DASH}max s | MiB/s | ocifs \u00f7 this "
             f"(median of per-round ratios) [min{DASH}max] |")
    L.append("|---|---|---|---|---|---|---|")
    L += [fmt_row(r, i == 0 or r["group"] != rows[i - 1]["group"]) for i, r in enumerate(rows)]
    L.append("")
    L.append("| goal | target | measured | status |")
    L.append("|---|---|---|---|")
    for g in goals:
        L.append(f"| {g['goal']} | {cell(g['text'])} | {cell(short(g.get('detail', ''), 200))} "
                 f"| {g['status']} |")
    notes = [n for r in rows for n in r.get("notes", [])]
    if notes or ctx.verify:
        L.append("")
    L += [f"- verify: {v['check']}: "
          + ("ok" if v["ok"] else "MISMATCH " + json.dumps(v["detail"])[:300])
          for v in ctx.verify]
    L += [f"- output differs in {r['group']}: {r['label']} printed "
          f"{r.get('stdout')!r}, ocifs printed {r.get('ocifs_stdout')!r}"
          for r in rows
          if r.get("role") != "ocifs" and r.get("stdout_equal_ocifs") is False and r.get("ref")]
    L += [f"- note: {n}" for n in dict.fromkeys(notes)]
    return "\n".join(L)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small data, one round")
    ap.add_argument("-n", "--rounds", type=int, default=None, help="timed rounds (5; quick 1)")
    ap.add_argument("-w", "--warmup", type=int, default=1, help="uncounted rounds first (1)")
    ap.add_argument("--only", default="", help="comma-separated workload numbers, e.g. 1,3,7")
    ap.add_argument("--bench-dir", default=os.environ.get("OCIFS_BENCH_DIR",
                                                          "/var/tmp/ocifs-bench"))
    ap.add_argument("--out", default=None, help="results directory (default: BENCH_DIR/"
                    "results/<time>)")
    ap.add_argument("--ocifs", default=os.environ.get("OCIFS_BENCH_OCIFS",
                                                      str(REPO / ".venv" / "bin" / "ocifs")))
    ap.add_argument("--readahead-kb", type=int, default=1024,
                    help="read_ahead_kb the bench sets for ocifs and ratarmount alike when "
                    "ocifs does not raise it itself (root only; 0: never)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds before one command is killed (180; quick 60)")
    ap.add_argument("--group-budget", type=float, default=None,
                    help="seconds per group before its rounds are cut (120; quick: none)")
    ap.add_argument("--profile-reps", type=int, default=None,
                    help="repetitions of the time breakdown of ocifs (3; quick 1; 0: skip)")
    ap.add_argument("--rebuild-data", action="store_true")
    args = ap.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.timeout is None:
        args.timeout = 60.0 if args.quick else 180.0
    if args.profile_reps is None:
        args.profile_reps = 1 if args.quick else 3
    if args.group_budget is None:
        args.group_budget = 0 if args.quick else 120.0
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    t_start = time.monotonic()

    bench_dir = Path(args.bench_dir)
    bench_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = Path(args.out) if args.out else bench_dir / "results" / (
        stamp + ("-quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)

    tools = peers.ensure_apt(["umoci", "skopeo", "zstd", "gzip", "fusermount3", "mountpoint"])
    meta = data_mod.build(bench_dir, args.quick, args.rebuild_data)
    ctx = Ctx(args, meta, bench_dir)
    ctx.tools = {k: v for k, v in tools.items()}
    os.environ["STATE"] = str(ctx.state)
    os.environ.pop("OCIFS_BENCH_RA_KB", None)
    cleanup_work(ctx)
    ctx.rat, rat_info = peers.ensure_ratarmount(bench_dir)
    if not ctx.rat:
        ctx.tools["ratarmount"] = rat_info
    log(f"peers: {rat_info}")
    # inputs in the page cache, as in BASELINES (everything compared reads cached sources)
    ctx.sh(f"cat {q(ctx.d)}/layer.tar* {q(ctx.blob_path)} {q(ctx.archive)} > /dev/null; "
           f"tar -C {q(ctx.native)} -cf - . > /dev/null", timeout=600)

    log("probing ocifs features")
    probe(ctx)
    for f, why in ctx.features.items():
        log(f"  {f}: {why or 'ok'}")
    log(f"read-ahead: {ctx.readahead}")
    verify(ctx)

    builders: list[tuple[str, Callable[[Ctx], list[Group]]]] = [
        ("1", w1), ("2", w2), ("3", w3), ("4", w4), ("5", w5), ("6", w6), ("8", w8),
        ("9", w9), ("10", w10)]
    rows: list[dict] = []
    for wid, build in builders:
        if only and wid not in only:
            continue
        for g in build(ctx):
            t0 = time.monotonic()
            log(f"group {g.name}: {g.title}")
            run_group(g, args.rounds, args.warmup, args.timeout,
                      budget=args.group_budget or None, log=log)
            grows = summarize(g)
            subj = next((r for r in grows if r["role"] == "ocifs"), None)
            refs = {c.label for c in g.cmds if c.ref}
            for r in grows:
                r["ref"] = r["label"] in refs
                if subj is not None and r is not subj and "stdout" in subj:
                    r["ocifs_stdout"] = subj["stdout"]
                if g.notes:
                    r["notes"] = g.notes
                line = (f"   {r['label']:28s} " + (f"n/a ({r['na'][:150]})" if "na" in r else
                        f"{r['wall_median']:.3f}s [{r['wall_min']:.3f}-{r['wall_max']:.3f}]"
                        + (f" {r['mib_s_median']} MiB/s" if "mib_s_median" in r else "")
                        + (f" ocifs/this {r['ratio_ocifs_over_this']}"
                           if "ratio_ocifs_over_this" in r else "")
                        + (f" this/{r['ratio_versus']['label']} {r['ratio_versus']['median']}"
                           if "ratio_versus" in r else "")
                        + (f" daemon CPU {r['daemon_cpu_median']} s"
                           if "daemon_cpu_median" in r else "")))
                log(line)
            rows.extend(grows)
            log(f"   ({time.monotonic() - t0:.1f} s)")
    if not only or "7" in only:
        log("workload 7: peak RSS after workloads 1-4 (cold index), ocifs and ratarmount")
        for r in w7(ctx):
            log(f"   {r['group']} {r['label']}: " + (f"n/a ({r['na'][:150]})" if "na" in r
                                                   else f"{r['vmhwm_mib']} MiB"))
            rows.append(r)
    prof: list[dict] = []
    if args.profile_reps > 0 and (not only or "p" in only):
        log(f"profile: where ocifs's time goes ({args.profile_reps} repetitions)")
        prof = profile(ctx, args.profile_reps)
        for p in prof:
            log(f"   {p['layer']:4s} {p['what']:60s} {p['median_s']:.3f} s")
    # stop whatever is still mounted (a failed group may have left a mount behind)
    ctx.sh(f"for p in {q(ctx.state)}/*.pid; do [ -e \"$p\" ] || continue; "
           f"n=$(basename \"$p\" .pid); {q(CTL)} down \"$n\" {q(ctx.work)}/mnt/\"$n\"; done",
           timeout=120)

    goals = evaluate_goals(rows, args.quick)
    elapsed = time.monotonic() - t_start
    table = render(rows, goals, ctx, args, elapsed)
    if prof:
        table += f"\n\nWhere ocifs's time goes (not alternated; median [min{DASH}max] of " \
                 f"{args.profile_reps}):\n\n| layer | what | seconds |\n|---|---|---|\n"
        table += "\n".join(f"| {p['layer']} | {cell(p['what'])} | {p['median_s']:.3f} "
                            f"[{p['min_s']:.3f}{DASH}{p['max_s']:.3f}] |" for p in prof)
    env = {
        "record": "env", "time": stamp, "quick": args.quick, "rounds": args.rounds,
        "warmup": args.warmup, "kernel": platform.release(), "python": platform.python_version(),
        "ocifs": args.ocifs, "ocifs_commit": git_head(), "peers": rat_info,
        "readahead": ctx.readahead, "features": ctx.features, "data": meta,
        "elapsed_s": round(elapsed, 1), "cpus": os.cpu_count(),
    }
    with open(out / "results.jsonl", "w") as f:
        f.write(json.dumps(env) + "\n")
        for r in rows:
            f.write(json.dumps({"record": "row", **r}) + "\n")
        for g in goals:
            f.write(json.dumps({"record": "goal", **g}) + "\n")
        for v in ctx.verify:
            f.write(json.dumps({"record": "verify", **v}) + "\n")
        for p in prof:
            f.write(json.dumps(p) + "\n")
    (out / "table.md").write_text(table + "\n")
    print(table)
    print(f"\nresults: {out}/results.jsonl and {out}/table.md", file=sys.stderr)
    return 0


def git_head() -> str | None:
    """The checked-out commit, read from .git without running git."""
    try:
        head = (REPO / ".git" / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            p = REPO / ".git" / ref
            if p.exists():
                return p.read_text().strip()
            for line in (REPO / ".git" / "packed-refs").read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
            return None
        return head
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
