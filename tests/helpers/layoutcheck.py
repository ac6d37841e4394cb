"""An independent checker of OCI image layouts, sharing no code with ocifs.

Used as an oracle after imports: parse index.json, walk every entry's closure
(manifest -> config + layers, index -> children), hash every blob, and report
anything under blobs/ that fails its digest or has a name that is not one, a
reference to a missing blob, a size that contradicts its descriptor, and any
staging file left behind. Also snapshots a layout to compare byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

_HEX = {"sha256": 64, "sha512": 128}
_INDEX = {"application/vnd.oci.image.index.v1+json",
          "application/vnd.docker.distribution.manifest.list.v2+json"}
_MANIFEST = {"application/vnd.oci.image.manifest.v1+json",
             "application/vnd.docker.distribution.manifest.v2+json"}
#: Files an importer may leave at the layout root besides the spec's own.
IGNORED_ROOT = {".ocifs.lock", ".ocifs-staging"}


def _hash_file(path: str, alg: str) -> str:
    h = hashlib.new(alg)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def staging_leftovers(layout: str, wait: float = 3.0) -> list[str]:
    """Files in the staging directory, after giving in-flight releases `wait` seconds.

    The kernel sends FUSE RELEASE after close() has returned to the writer, so
    staging may outlive `cp` by a moment.
    """
    import time

    staging = os.path.join(layout, ".ocifs-staging")
    deadline = time.monotonic() + wait
    while True:
        left = sorted(os.listdir(staging)) if os.path.isdir(staging) else []
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def problems(layout: str) -> list[str]:
    """Everything wrong with `layout` (empty list: valid)."""
    out: list[str] = []
    blobs_dir = os.path.join(layout, "blobs")
    present: dict[str, int] = {}
    for alg in sorted(os.listdir(blobs_dir)) if os.path.isdir(blobs_dir) else []:
        adir = os.path.join(blobs_dir, alg)
        if alg not in _HEX:
            out.append(f"blobs/{alg}: not a supported algorithm directory")
            continue
        for name in sorted(os.listdir(adir)):
            path = os.path.join(adir, name)
            if not re.fullmatch(f"[0-9a-f]{{{_HEX[alg]}}}", name):
                out.append(f"blobs/{alg}/{name}: not a digest name")
                continue
            if os.path.islink(path) or not os.path.isfile(path):
                out.append(f"blobs/{alg}/{name}: not a regular file")
                continue
            if _hash_file(path, alg) != name:
                out.append(f"blobs/{alg}/{name}: content does not match its name")
            present[f"{alg}:{name}"] = os.path.getsize(path)
    left = staging_leftovers(layout)
    if left:
        out.append(f".ocifs-staging: leftover files {left}")
    try:
        with open(os.path.join(layout, "oci-layout"), "rb") as f:
            if json.loads(f.read()).get("imageLayoutVersion") != "1.0.0":
                out.append("oci-layout: unexpected imageLayoutVersion")
    except (OSError, ValueError, AttributeError) as exc:
        out.append(f"oci-layout: {exc}")
    try:
        with open(os.path.join(layout, "index.json"), "rb") as f:
            index = json.loads(f.read())
    except (OSError, ValueError) as exc:
        return [*out, f"index.json: {exc}"]
    stack = [("index.json", d) for d in index.get("manifests") or []]
    seen: set[str] = set()
    while stack:
        where, desc = stack.pop()
        digest, size, mtype = desc.get("digest"), desc.get("size"), desc.get("mediaType")
        if digest in seen:
            continue
        seen.add(digest)
        if digest not in present:
            out.append(f"{where}: references missing blob {digest}")
            continue
        if present[digest] != size:
            out.append(f"{where}: {digest} is {present[digest]} bytes, descriptor says {size}")
            continue
        if mtype in _INDEX | _MANIFEST:
            alg, hex_ = digest.split(":")
            with open(os.path.join(blobs_dir, alg, hex_), "rb") as f:
                doc = json.loads(f.read())
            children = doc.get("manifests") or [] if mtype in _INDEX else [
                doc.get("config"), *(doc.get("layers") or [])]
            stack.extend((digest, c) for c in children if isinstance(c, dict))
    return out


def check(layout: str) -> None:
    found = problems(layout)
    assert not found, "layout problems:\n" + "\n".join(found)


def snapshot(layout: str) -> dict[str, bytes | None]:
    """Every path under `layout` with its bytes (None for directories), for comparisons.

    The importer's lock file and (empty) staging directory are left out: they
    are the "cleaned temporaries" a failed import may leave.
    """
    snap: dict[str, bytes | None] = {}
    for root, dirs, files in os.walk(layout):
        rel_root = os.path.relpath(root, layout)
        if rel_root == ".":
            dirs[:] = [d for d in dirs if d not in IGNORED_ROOT]
            files = [f for f in files if f not in IGNORED_ROOT]
        for d in dirs:
            snap[os.path.normpath(os.path.join(rel_root, d))] = None
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                snap[os.path.normpath(os.path.join(rel_root, name))] = f.read()
    return snap


def refs(layout: str) -> dict[str, str]:
    """ref name (containerd name, else OCI ref.name) -> digest."""
    with open(os.path.join(layout, "index.json"), "rb") as f:
        index = json.loads(f.read())
    out = {}
    for d in index.get("manifests") or []:
        ann = d.get("annotations") or {}
        name = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name")
        if name:
            out[name] = d["digest"]
    return out


def closure(layout: str) -> set[str]:
    """Every digest index.json reaches (manifests -> config + layers, indexes -> children)."""
    with open(os.path.join(layout, "index.json"), "rb") as f:
        stack = list(json.loads(f.read()).get("manifests") or [])
    seen: set[str] = set()
    while stack:
        desc = stack.pop()
        digest, mtype = desc["digest"], desc.get("mediaType")
        if digest in seen:
            continue
        seen.add(digest)
        if mtype in _INDEX | _MANIFEST:
            alg, hex_ = digest.split(":")
            with open(os.path.join(layout, "blobs", alg, hex_), "rb") as f:
                doc = json.loads(f.read())
            stack.extend(doc.get("manifests") or [] if mtype in _INDEX else
                         [doc["config"], *(doc.get("layers") or [])])
    return seen


def blobs(layout: str) -> set[str]:
    """Digests of every file under blobs/."""
    out = set()
    for alg in os.listdir(os.path.join(layout, "blobs")):
        out |= {f"{alg}:{n}" for n in os.listdir(os.path.join(layout, "blobs", alg))}
    return out


# -- builders: real third-party tools make the inputs ---------------------------

def run(*cmd: str) -> None:
    import subprocess

    subprocess.run(cmd, check=True, capture_output=True)


def make_layout(path: str, tag: str, files: dict[str, bytes]) -> str:
    """A umoci layout at `path` (created if needed) with image `tag` holding `files`."""
    import tempfile

    if not os.path.exists(os.path.join(path, "oci-layout")):
        run("umoci", "init", "--layout", path)
    run("umoci", "new", "--image", f"{path}:{tag}")
    with tempfile.TemporaryDirectory() as src:
        for name, data in files.items():
            os.makedirs(os.path.dirname(os.path.join(src, name)) or src, exist_ok=True)
            with open(os.path.join(src, name), "wb") as f:
                f.write(data)
        run("umoci", "insert", "--image", f"{path}:{tag}", src, "/data")
    return path


def to_archive(layout: str, tag: str, dest: str, kind: str, name: str | None = None) -> str:
    """skopeo copy of `layout:tag` to an `oci-archive` or `docker-archive` at `dest`."""
    run("skopeo", "copy", "-q", f"oci:{layout}:{tag}", f"{kind}:{dest}:{name or tag}")
    return dest
