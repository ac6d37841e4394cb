"""Deterministic benchmark data, built once per set of build parameters and reused.

Everything is derived from a root file tree:

* full run: `debootstrap --variant=minbase bookworm` from the Debian mirror apt uses (falls
  back to a sorted selection of the machine's own `/usr` when debootstrap is not possible);
  about 200 MiB, 6,768 entries, the 48 MiB apt `Packages` list as the big file;
* `--quick`: a synthetic tree from a seeded generator (a few MiB, a few hundred members,
  one 4 MiB file), no network, no root needed for the tree itself.

From the tree: `layer.tar` (GNU tar, sorted names, numeric owners, xattrs, mtimes clamped
to a fixed epoch, no atime/ctime records), `layer.tar.gz` (`gzip -6 -n`), `layer.tar.zst`
(`zstd -3 --single-thread`, one frame), an OCI image layout `oci/` with three images
tagged `gz`, `zst` and `tar` (same config and diff_id) plus one unreferenced random blob,
an OCI archive `image.oci.tar` of that layout without the random blob (written with fixed
tar headers, checked with `skopeo inspect`), the random blob (seeded `random.Random`),
`native/` (the layer extracted, the tree native reads run on) and `meta.json`. On first
use, `layers3-v<N>/`: a 3-layer gz image of `native/` with whiteouts (workload 10,
`ensure_three_layers`), outside the data key.

Given the same root tree every artifact is byte-identical on every build. The debootstrap
tree itself follows the mirror's state at the time it was built; it is built once per
data key and kept (a changed mirror needs `--rebuild-data` to be picked up).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

BUILDER_VERSION = 3
EPOCH = 1700000000  # 2023-11-14T22:13:20Z: mtimes newer than this are clamped to it

MIB = 1 << 20

FULL = {
    "kind": "full",
    "rootfs": "debootstrap",
    "suite": "bookworm",
    "variant": "minbase",
    "arch": "amd64",
    "mirror": os.environ.get("OCIFS_BENCH_MIRROR", "http://deb.debian.org/debian"),
    "min_bytes": 150 * MIB,
    "min_members": 5000,
    "big_min": 40 * MIB,
    "blob_bytes": 1 << 30,
    "blob_seed": 20261123,
    "gzip_level": 6,
    "zstd_level": 3,
    "epoch": EPOCH,
}

QUICK = {
    "kind": "quick",
    "rootfs": "synthetic",
    "tree_seed": 7,
    "n_files": 320,
    "big_bytes": 4 * MIB,
    "min_bytes": 2 * MIB,
    "min_members": 300,
    "big_min": 4 * MIB,
    "blob_bytes": 32 * MIB,
    "blob_seed": 20261123,
    "gzip_level": 6,
    "zstd_level": 3,
    "epoch": EPOCH,
}

# when debootstrap cannot run: a deterministic selection of the host's /usr
HOST_USR_BUDGET = 200 * MIB
HOST_USR_MEMBERS = 6500


def log(msg: str) -> None:
    print(f"[data] {msg}", file=sys.stderr, flush=True)


def params_key(params: dict) -> str:
    blob = json.dumps({"v": BUILDER_VERSION, **params}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MIB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


# ----------------------------------------------------------------------------- root trees

_WORDS = (  # noqa: SIM905 (one string reads better than 180 quoted words)
    "the of and to in is that for it as with was on be by this are from or at an not which "
    "have but all were when we there can more if no out so said what up its about into than "
    "them only other new some could time these two may first then do any like my now over "
    "such our man me even most made after also did many before must through back years "
    "where much your way well down should because each just those people how too little "
    "state good very make world still own see men work long get here between both life "
    "being under never day same another know while last might us great old year off come "
    "since against go came right used take three package version depends description "
    "filename size sha256 section priority maintainer architecture amd64 libc6 debian"
).split()


def _text(rng: random.Random, nbytes: int) -> bytes:
    """Pseudo-text (compresses like prose, ~3:1 with gzip)."""
    out: list[str] = []
    n = 0
    words = _WORDS
    while n < nbytes:
        line = " ".join(rng.choices(words, k=rng.randint(4, 14)))
        line = f"{line} {rng.getrandbits(32):08x}\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:nbytes]


def _big_text(seed: int, nbytes: int) -> bytes:
    """A large pseudo-text file, built from seeded 64 KiB pieces (fast)."""
    rng = random.Random(seed)
    pieces = [_text(rng, 64 * 1024) for _ in range(16)]
    out = bytearray()
    while len(out) < nbytes:
        out += pieces[rng.randrange(len(pieces))]
        out += f"# block {len(out):x}\n".encode()
    return bytes(out[:nbytes])


def build_synthetic(root: Path, p: dict) -> None:
    rng = random.Random(p["tree_seed"])
    root.mkdir(parents=True)
    dirs = [Path(".")]
    dirs += [Path(top) for top in
             ("etc", "usr/bin", "usr/lib/bench", "usr/share/doc", "var/lib/bench")]
    dirs += [Path("usr/share/bench") / f"d{i:02d}" / f"sub{i % 5}" for i in range(24)]
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for i in range(p["n_files"]):
        d = dirs[1 + rng.randrange(len(dirs) - 1)]
        size = int(min(256 * 1024, rng.lognormvariate(8.0, 1.3)))
        f = root / d / f"file{i:04d}.txt"
        f.write_bytes(_text(rng, size))
        os.chmod(f, 0o755 if i % 11 == 0 else 0o644)
        files.append(f)
    (root / "etc" / "empty").write_bytes(b"")
    big = root / "var/lib/bench/big.txt"
    big.write_bytes(_big_text(p["tree_seed"] + 1, p["big_bytes"]))
    for i in range(8):
        target = os.path.relpath(files[i * 7], (root / "usr/bin"))
        os.symlink(target, root / "usr/bin" / f"link{i}")
    os.link(files[3], root / "usr/lib/bench/hardlink-to-file0003")


def build_debootstrap(root: Path, p: dict) -> None:
    if os.geteuid() != 0:
        raise RuntimeError("debootstrap needs root")
    if not shutil.which("debootstrap"):
        log("installing debootstrap (apt-get)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        run(["apt-get", "install", "-y", "-qq", "debootstrap"], env=env,
            stdout=subprocess.DEVNULL)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"debootstrap --variant={p['variant']} {p['suite']} from {p['mirror']} (about 30 s)")
    with open(root.parent / (root.name + ".log"), "wb") as logf:
        run(["debootstrap", f"--variant={p['variant']}", f"--arch={p['arch']}", p["suite"],
             str(tmp), p["mirror"]], stdout=logf, stderr=subprocess.STDOUT)
    tmp.rename(root)


def build_host_usr(root: Path, p: dict) -> None:
    """A sorted selection of the host's /usr: deterministic on a given machine."""
    root.mkdir(parents=True)
    total = members = 0
    for dirpath, dirnames, filenames in os.walk("/usr"):
        dirnames.sort()
        rel = os.path.relpath(dirpath, "/")
        (root / rel).mkdir(parents=True, exist_ok=True)
        members += 1
        for name in sorted(filenames):
            src = os.path.join(dirpath, name)
            try:
                st = os.lstat(src)
                dst = root / rel / name
                if os.path.islink(src):
                    os.symlink(os.readlink(src), dst)
                elif os.path.isfile(src):
                    shutil.copy2(src, dst)
                    total += st.st_size
                else:
                    continue
            except OSError:
                continue
            members += 1
        if total >= HOST_USR_BUDGET and members >= HOST_USR_MEMBERS:
            dirnames[:] = []
            break
    # the prune above stops descending; walk() may still yield siblings: that is fine
    biggest = max((f.stat().st_size for f in root.rglob("*") if f.is_file() and not
                   f.is_symlink()), default=0)
    if biggest < p["big_min"]:
        d = root / "var/lib/bench"
        d.mkdir(parents=True, exist_ok=True)
        (d / "big.txt").write_bytes(_big_text(1, 48 * MIB))


def ensure_rootfs(bench_dir: Path, p: dict) -> tuple[Path, str]:
    """Returns (tree, how). Trees are kept under bench_dir/rootfs/ and reused."""
    rdir = bench_dir / "rootfs"
    rdir.mkdir(parents=True, exist_ok=True)
    if p["rootfs"] == "synthetic":
        root = rdir / f"synthetic-{params_key(p)}"
        if not (root / ".complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            build_synthetic(root / "tree", p)
            (root / ".complete").write_text("ok\n")
        return root / "tree", "synthetic (seeded)"
    name = f"debootstrap-{p['suite']}-{p['variant']}-{p['arch']}"
    root = rdir / name
    if (root / "bin").exists() or (root / "usr/bin/sh").exists():
        return root, f"debootstrap {p['variant']} {p['suite']} ({p['mirror']})"
    try:
        build_debootstrap(root, p)
        return root, f"debootstrap {p['variant']} {p['suite']} ({p['mirror']})"
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        log(f"debootstrap not possible ({exc}); using a selection of the host's /usr")
    root = rdir / "host-usr"
    if not (root.parent / "host-usr.complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        build_host_usr(root, p)
        (root.parent / "host-usr.complete").write_text("ok\n")
    return root, "host /usr selection (fallback)"


# ----------------------------------------------------------------------------- OCI writer


def _put(blobs: Path, data: bytes) -> tuple[str, int]:
    d = hashlib.sha256(data).hexdigest()
    (blobs / d).write_bytes(data)
    return d, len(data)


def _link_blob(blobs: Path, src: Path, hexd: str) -> None:
    dst = blobs / hexd
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


LAYER_TYPES = {
    "gz": ("layer.tar.gz", "application/vnd.oci.image.layer.v1.tar+gzip"),
    "zst": ("layer.tar.zst", "application/vnd.oci.image.layer.v1.tar+zstd"),
    "tar": ("layer.tar", "application/vnd.oci.image.layer.v1.tar"),
}


def write_layout(out: Path, data: Path, digests: dict[str, str], blob_hex: str) -> dict:
    """OCI layout with images gz, zst, tar (+ the unreferenced random blob)."""
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    diff_id = "sha256:" + digests["layer.tar"]
    config = {
        "created": "2023-11-14T22:13:20Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["/bin/bash"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "ocifs scripts/bench"}],
    }
    cdig, csize = _put(blobs, json.dumps(config, sort_keys=True).encode())
    manifests = []
    images = {}
    for tag, (fname, mtype) in LAYER_TYPES.items():
        _link_blob(blobs, data / fname, digests[fname])
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": "sha256:" + cdig, "size": csize},
            "layers": [{"mediaType": mtype, "digest": "sha256:" + digests[fname],
                        "size": (data / fname).stat().st_size}],
        }
        mdig, msize = _put(blobs, json.dumps(manifest, sort_keys=True).encode())
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "digest": "sha256:" + mdig, "size": msize,
                          "annotations": {"org.opencontainers.image.ref.name": tag}})
        images[tag] = {"manifest": mdig, "layer": digests[fname], "media_type": mtype}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": manifests}
    (out / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (out / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}) + "\n")
    _link_blob(blobs, data / "blob.bin", blob_hex)
    return {"config": cdig, "images": images}


def write_oci_archive(layout: Path, dst: Path, skip: set[str]) -> None:
    """A tar of the layout with fixed headers (deterministic), sorted names."""
    def info(name: str, size: int = 0, isdir: bool = False) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.size = size
        ti.mtime = EPOCH
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        ti.mode = 0o755 if isdir else 0o644
        ti.type = tarfile.DIRTYPE if isdir else tarfile.REGTYPE
        return ti

    tmp = dst.with_name(dst.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name in ("oci-layout", "index.json"):
            p = layout / name
            with open(p, "rb") as f:
                tf.addfile(info(name, p.stat().st_size), f)
        tf.addfile(info("blobs", isdir=True))
        tf.addfile(info("blobs/sha256", isdir=True))
        for p in sorted((layout / "blobs/sha256").iterdir()):
            if p.name in skip:
                continue
            with open(p, "rb") as f:
                tf.addfile(info(f"blobs/sha256/{p.name}", p.stat().st_size), f)
    tmp.rename(dst)


# ----------------------------------------------------------------------------- main


def make_blob(path: Path, nbytes: int, seed: int) -> None:
    rng = random.Random(seed)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        left = nbytes
        while left:
            n = min(left, 16 * MIB)
            f.write(rng.randbytes(n))
            left -= n
    tmp.rename(path)


def tar_layer(tree: Path, out: Path, epoch: int) -> None:
    tmp = out.with_name(out.name + ".tmp")
    run(["tar", "--sort=name", "--format=posix",
         "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
         f"--mtime=@{epoch}", "--clamp-mtime", "--numeric-owner", "--xattrs",
         "-C", str(tree), "-cf", str(tmp), "."])
    tmp.rename(out)


def compress(src: Path, dst: Path, cmd: list[str]) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    with open(src, "rb") as fi, open(tmp, "wb") as fo:
        run(cmd, stdin=fi, stdout=fo)
    tmp.rename(dst)


def layer_stats(tar_path: Path) -> dict:
    """Members, regular files and the largest regular file of a plain tar (tarfile is fine
    here: this runs once, at build time)."""
    members = files = 0
    big_name, big_size = "", -1
    with tarfile.open(tar_path, "r:") as tf:
        for m in tf:
            members += 1
            if m.isreg():
                files += 1
                if m.size > big_size:
                    big_name, big_size = m.name, m.size
    if big_name.startswith("./"):
        big_name = big_name[2:]
    return {"members": members, "files": files, "big_path": big_name, "big_size": big_size}


def build(bench_dir: Path, quick: bool, rebuild: bool = False) -> dict:
    p = dict(QUICK if quick else FULL)
    tree, how = ensure_rootfs(bench_dir, p)
    key = params_key({**p, "tree": how})
    data = bench_dir / f"data-{p['kind']}-{key}"
    meta_path = data / "meta.json"
    if meta_path.exists() and not rebuild:
        return json.loads(meta_path.read_text())
    t0 = time.monotonic()
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    log(f"building {data} from {how}")
    tar_layer(tree, data / "layer.tar", p["epoch"])
    stats = layer_stats(data / "layer.tar")
    size = (data / "layer.tar").stat().st_size
    if stats["members"] < p["min_members"] or size < p["min_bytes"] or \
            stats["big_size"] < p["big_min"]:
        raise RuntimeError(f"layer too small: {stats}, {size} bytes; want {p}")
    log(f"layer.tar: {size} bytes, {stats['members']} members; gzip -{p['gzip_level']}")
    compress(data / "layer.tar", data / "layer.tar.gz", ["gzip", f"-{p['gzip_level']}", "-n"])
    log(f"zstd -{p['zstd_level']}")
    compress(data / "layer.tar", data / "layer.tar.zst",
             ["zstd", "-q", f"-{p['zstd_level']}", "--single-thread"])
    log(f"random blob, {p['blob_bytes']} bytes")
    make_blob(data / "blob.bin", p["blob_bytes"], p["blob_seed"])
    digests = {n: sha256_file(data / n) for n in
               ("layer.tar", "layer.tar.gz", "layer.tar.zst", "blob.bin")}
    layout = write_layout(data / "oci", data, digests, digests["blob.bin"])
    write_oci_archive(data / "oci", data / "image.oci.tar", skip={digests["blob.bin"]})
    # the native tree: what native reads and `tar -x` produce
    (data / "native").mkdir()
    run(["tar", "-C", str(data / "native"), "--numeric-owner", "--xattrs", "-xf",
         str(data / "layer.tar")])
    native_bytes = sum(os.lstat(os.path.join(d, f)).st_size
                       for d, _, fs in os.walk(data / "native") for f in fs
                       if os.path.isfile(os.path.join(d, f))
                       and not os.path.islink(os.path.join(d, f)))
    checks = validate(data)
    meta = {
        "key": key, "params": p, "tree": how, "dir": str(data),
        "layer": {**stats, "tar_bytes": size, "file_bytes": native_bytes,
                  "gz_bytes": (data / "layer.tar.gz").stat().st_size,
                  "zst_bytes": (data / "layer.tar.zst").stat().st_size},
        "digests": digests, "blob": {"hex": digests["blob.bin"], "bytes": p["blob_bytes"]},
        "layout": layout, "archive_bytes": (data / "image.oci.tar").stat().st_size,
        "validation": checks, "build_seconds": round(time.monotonic() - t0, 1),
    }
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    log(f"built in {meta['build_seconds']} s")
    return meta


# ----------------------------------------------------------------------------- 3-layer image

#: version of the 3-layer image (workload 10); part of its directory's name, not of the
#: data key, so adding or changing it never rebuilds the rest of the data
THREE_VERSION = 1
THREE_REF = "three"
#: percent of the files (by a hash of the path) in each layer: a base layer and two
#: smaller ones, as an image built on a distribution base usually is
THREE_SPLIT = (70, 15, 15)
THREE_WHITEOUTS = 2


def _path_bucket(rel: str) -> int:
    return int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16) % 100


def _layer_of(rel: str) -> int:
    bucket, edge = _path_bucket(rel), 0
    for n, share in enumerate(THREE_SPLIT):
        edge += share
        if bucket < edge:
            return n
    return len(THREE_SPLIT) - 1


def _walk_sorted(root: Path) -> tuple[list[str], list[str]]:
    """(directories, everything else) under root, relative, in sorted tree order."""
    dirs, others = [], []
    for d, dnames, fnames in os.walk(root):
        dnames.sort()
        rel = os.path.relpath(d, root)
        if rel != ".":
            dirs.append(rel)
        # symlinks to directories are members, not directories
        links = [dn for dn in dnames if os.path.islink(os.path.join(d, dn))]
        others.extend(f if rel == "." else f"{rel}/{f}" for f in sorted(fnames + links))
    return dirs, others


def _tar_members(out: Path, root: Path, names: list[str], extra: dict[str, bytes],
                 epoch: int) -> None:
    """A PAX tar of root's `names` (parents first, as listed) plus `extra` (path -> data:
    whiteouts, changed files); owners numeric, mtimes clamped to epoch: deterministic."""
    tmp = out.with_name(out.name + ".tmp")

    def fixed(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uname = ti.gname = ""
        ti.mtime = min(int(ti.mtime), epoch)
        ti.pax_headers = {}
        return ti

    order = sorted(set(names) | set(extra), key=lambda n: n.split("/"))
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        for name in order:
            if name in extra:
                data = extra[name]
                ti = tarfile.TarInfo(name)
                ti.size, ti.mtime, ti.mode = len(data), epoch, 0o644
                tf.addfile(ti, io.BytesIO(data))
                continue
            path = root / name
            ti = fixed(tf.gettarinfo(str(path), name))
            if ti.isreg():
                with open(path, "rb") as f:
                    tf.addfile(ti, f)
            else:
                tf.addfile(ti)
    tmp.rename(out)


def _three_layer_plan(native: Path) -> tuple[list[list[str]], list[dict[str, bytes]], dict]:
    """Which names each layer holds, and its whiteouts and changed files."""
    dirs, others = _walk_sorted(native)
    files: list[list[str]] = [[], [], []]
    for rel in others:
        files[_layer_of(rel)].append(rel)
    extra: list[dict[str, bytes]] = [{}, {}, {}]
    # layer 1 deletes two files of layer 0 (`.wh.<name>`), layer 2 makes a directory of
    # layer 0 opaque (`.wh..wh..opq`) and adds a file to it, and replaces one file
    base = [r for r in files[0] if "/" in r and os.path.isfile(native / r)
            and not os.path.islink(native / r)]
    base.sort(key=lambda r: hashlib.sha256(r.encode()).hexdigest())
    removed = base[:THREE_WHITEOUTS]
    for rel in removed:
        d, _, f = rel.rpartition("/")
        extra[1][f"{d}/.wh.{f}"] = b""
    counts: dict[str, int] = {}
    for rel in files[0]:
        counts[rel.rpartition("/")[0]] = counts.get(rel.rpartition("/")[0], 0) + 1
    removed_dirs = {r.rpartition("/")[0] for r in removed}
    opaque = min((d for d, n in counts.items() if d and n >= 3 and d not in removed_dirs),
                 key=lambda d: (counts[d], d))
    extra[2][f"{opaque}/.wh..wh..opq"] = b""
    extra[2][f"{opaque}/added-by-layer-2"] = b"replaces the directory's contents\n"
    changed = next(r for r in base[THREE_WHITEOUTS:] if not r.startswith(opaque + "/"))
    extra[2][changed] = b"changed by layer 2\n"
    names: list[list[str]] = []
    for n in range(3):
        wanted = set(files[n]) | set(extra[n])
        parents = {"/".join(r.split("/")[:i]) for r in wanted for i in range(1, r.count("/") + 1)}
        if n == 0:
            parents |= set(dirs)  # empty directories live in the base layer
        names.append(sorted(parents) + files[n])
    plan = {"removed": removed, "opaque": opaque, "changed": changed}
    return names, extra, plan


def ensure_three_layers(meta: dict) -> dict:
    """The 3-layer image of workload 10, built on first use into `<data>/layers3-v<N>/`
    from the data's `native/` tree (so the data key, and the data, stay as they are).

    Files go to layer 0, 1 or 2 by a hash of their path (`THREE_SPLIT`), each layer with
    the parent directories it needs; layer 1 whites out two files of layer 0, layer 2 makes
    one directory of layer 0 opaque and replaces one file: the merge has real work to do.
    """
    data = Path(meta["dir"])
    out = data / f"layers3-v{THREE_VERSION}"
    if (out / "meta.json").exists():
        return json.loads((out / "meta.json").read_text())
    with open(data / "layers3.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two bench runs sharing the data build it once
        if (out / "meta.json").exists():
            return json.loads((out / "meta.json").read_text())
        return _build_three_layers(meta, data, out)


def _build_three_layers(meta: dict, data: Path, out: Path) -> dict:
    p = meta["params"]
    t0 = time.monotonic()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log(f"building the 3-layer image in {out}")
    names, extra, plan = _three_layer_plan(data / "native")
    blobs = tmp / "oci" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layers, diff_ids, info = [], [], []
    for n in range(3):
        tar, gz = tmp / f"layer{n}.tar", tmp / f"layer{n}.tar.gz"
        _tar_members(tar, data / "native", names[n], extra[n], p["epoch"])
        compress(tar, gz, ["gzip", f"-{p['gzip_level']}", "-n"])
        diff_ids.append("sha256:" + sha256_file(tar))
        hexd = sha256_file(gz)
        gz.rename(blobs / hexd)
        size = (blobs / hexd).stat().st_size
        layers.append({"mediaType": LAYER_TYPES["gz"][1], "digest": "sha256:" + hexd,
                       "size": size})
        info.append({"members": len(names[n]) + len(extra[n]), "gz_bytes": size,
                     "tar_bytes": tar.stat().st_size})
        tar.unlink()
    config = {
        "created": "2023-11-14T22:13:20Z", "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    cdig, csize = _put(blobs, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + cdig, "size": csize},
        "layers": layers,
    }
    mdig, msize = _put(blobs, json.dumps(manifest, sort_keys=True).encode())
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": "sha256:" + mdig, "size": msize,
                            "annotations": {"org.opencontainers.image.ref.name": THREE_REF}}]}
    (tmp / "oci" / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (tmp / "oci" / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}) + "\n")
    largest = max(range(3), key=lambda n: info[n]["tar_bytes"])
    three = {"dir": str(out), "layout": str(out / "oci"), "ref": THREE_REF, "layers": info,
             "largest": largest, "plan": plan,
             "build_seconds": round(time.monotonic() - t0, 1)}
    (tmp / "meta.json").write_text(json.dumps(three, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log(f"3-layer image built in {three['build_seconds']} s: {info}")
    return three


def validate(data: Path) -> dict:
    """Third-party tools read what we wrote (skipped, and said so, when absent)."""
    out = {}
    if shutil.which("skopeo"):
        for ref in (f"oci:{data / 'oci'}:gz", f"oci:{data / 'oci'}:zst",
                    f"oci-archive:{data / 'image.oci.tar'}:gz"):
            r = subprocess.run(["skopeo", "inspect", "--raw", ref], capture_output=True)
            if r.returncode != 0:
                raise RuntimeError(f"skopeo inspect {ref}: {r.stderr.decode()[-300:]}")
        out["skopeo"] = "inspect ok (layout gz, zst; archive gz)"
    else:
        out["skopeo"] = "not installed: skipped"
    if shutil.which("umoci"):
        r = subprocess.run(["umoci", "ls", "--layout", str(data / "oci")], capture_output=True)
        tags = sorted(r.stdout.decode().split())
        if r.returncode != 0 or tags != ["gz", "tar", "zst"]:
            raise RuntimeError(f"umoci ls: rc={r.returncode} {tags} {r.stderr.decode()[-300:]}")
        out["umoci"] = "ls ok: gz tar zst"
    else:
        out["umoci"] = "not installed: skipped"
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="build the bench data")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--dir", default=os.environ.get("OCIFS_BENCH_DIR", "/var/tmp/ocifs-bench"))
    a = ap.parse_args()
    print(json.dumps(build(Path(a.dir), a.quick, a.rebuild), indent=2))
