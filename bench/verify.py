"""Byte-for-byte checks of what ocifs serves against the native bytes (untimed).

    python -m bench.verify tree MOUNTED_TREE NATIVE_TREE   # listing, types, sizes, contents
    python -m bench.verify file PATH SHA256_HEX             # one file's digest
    python -m bench.verify export IMAGE_TAR LAYOUT_DIR      # an image.tar's blobs and size

Prints one JSON object. The bench runs these in a subprocess with a timeout so that a
hung mount can never hang the bench.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from typing import BinaryIO


def _sha(path: str) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            h.update(b)
    finally:
        os.close(fd)
    return h.hexdigest()


def _walk(root: str) -> dict[str, os.stat_result]:
    out: dict[str, os.stat_result] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for e in it:
                r = os.path.join(rel, e.name) if rel else e.name
                st = e.stat(follow_symlinks=False)
                out[r] = st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(r)
    return out


def _kind(mode: int) -> str:
    return {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
            stat.S_IFCHR: "chr", stat.S_IFBLK: "blk", stat.S_IFIFO: "fifo",
            stat.S_IFSOCK: "sock"}.get(stat.S_IFMT(mode), "?")


def compare_trees(a: str, b: str, limit: int = 5) -> dict:
    ta, tb = _walk(a), _walk(b)
    res: dict = {"entries": len(ta), "native_entries": len(tb),
                 "missing": sorted(set(tb) - set(ta))[:limit],
                 "extra": sorted(set(ta) - set(tb))[:limit]}
    n_missing, n_extra = len(set(tb) - set(ta)), len(set(ta) - set(tb))
    kind, size, content, meta = [], [], [], []
    n_kind = n_size = n_content = n_meta = 0
    files = nbytes = 0
    for rel in sorted(set(ta) & set(tb)):
        sa, sb = ta[rel], tb[rel]
        if _kind(sa.st_mode) != _kind(sb.st_mode):
            n_kind += 1
            kind.append(f"{rel}: {_kind(sa.st_mode)} vs {_kind(sb.st_mode)}")
            continue
        k = _kind(sa.st_mode)
        if k == "file":
            files += 1
            nbytes += sb.st_size
            if sa.st_size != sb.st_size:
                n_size += 1
                size.append(f"{rel}: {sa.st_size} vs {sb.st_size}")
            elif _sha(os.path.join(a, rel)) != _sha(os.path.join(b, rel)):
                n_content += 1
                content.append(rel)
        elif k == "symlink":
            ra, rb = os.readlink(os.path.join(a, rel)), os.readlink(os.path.join(b, rel))
            if ra != rb:
                n_content += 1
                content.append(f"{rel}: -> {ra!r} vs {rb!r}")
        diffs = []
        if stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode) and k != "symlink":
            diffs.append(f"mode {stat.S_IMODE(sa.st_mode):o} vs {stat.S_IMODE(sb.st_mode):o}")
        if (sa.st_uid, sa.st_gid) != (sb.st_uid, sb.st_gid):
            diffs.append(f"owner {sa.st_uid}:{sa.st_gid} vs {sb.st_uid}:{sb.st_gid}")
        if int(sa.st_mtime) != int(sb.st_mtime) and k not in ("dir", "symlink"):
            diffs.append(f"mtime {int(sa.st_mtime)} vs {int(sb.st_mtime)}")
        if diffs:
            n_meta += 1
            meta.append(f"{rel}: {', '.join(diffs)}")
    res.update({
        "files": files, "file_bytes": nbytes,
        "n_missing": n_missing, "n_extra": n_extra, "n_kind": n_kind, "n_size": n_size,
        "n_content": n_content, "n_meta": n_meta,
        "kind": kind[:limit], "size": size[:limit], "content": content[:limit],
        "meta": meta[:limit],
    })
    res["bytes_equal"] = not (n_missing or n_extra or n_kind or n_size or n_content)
    res["meta_equal"] = n_meta == 0
    return res


def check_export(path: str, layout: str) -> dict:
    """An image.tar: stat size == bytes read; every blob member hashes to its name and
    equals the layout's blob; one index.json entry. `tarfile` reads it sequentially."""
    import tarfile

    size = os.stat(path).st_size
    res: dict = {"size": size, "blobs": 0, "bad": []}
    class Counting:
        def __init__(self, f: BinaryIO) -> None:
            self.f, self.n = f, 0

        def read(self, n: int = -1) -> bytes:
            data = self.f.read(n)
            self.n += len(data)
            return data

    with open(path, "rb") as raw:
        f = Counting(raw)
        tf = tarfile.open(fileobj=f, mode="r|")  # type: ignore[call-overload]  # noqa: SIM115
        for m in tf:
            if not (m.isfile() and m.name.startswith("blobs/")):
                continue
            res["blobs"] += 1
            data = tf.extractfile(m)
            h = hashlib.sha256()
            while chunk := data.read(1 << 20):  # type: ignore[union-attr]
                h.update(chunk)
            name = m.name.rsplit("/", 1)[1]
            if h.hexdigest() != name or _sha(os.path.join(layout, m.name)) != name:
                res["bad"].append(m.name)
        while f.read(1 << 20):
            pass
        read = f.n
    res["bytes_read_equal_stat"] = read == size
    res["bytes_equal"] = not res["bad"] and res["blobs"] > 0 and read == size
    return res


def main() -> None:
    what = sys.argv[1]
    if what == "export":
        print(json.dumps(check_export(sys.argv[2], sys.argv[3])))
        return
    if what == "tree":
        print(json.dumps(compare_trees(sys.argv[2], sys.argv[3])))
    elif what == "file":
        got = _sha(sys.argv[2])
        print(json.dumps({"sha256": got, "bytes_equal": got == sys.argv[3]}))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
