"""Issue 13: what `.import/` writes is read by skopeo and umoci, whatever came in.

A legacy `docker save` carries no manifest: ocifs writes an OCI image manifest
for it (as `skopeo copy docker-archive: oci:` does, blobs unchanged), and the
mounted archive shows the same bytes, so the image has one digest whichever way
it came in. Manifests that arrive as blobs are kept byte for byte. The README's
tagging commands work as written.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, require_tools
from tests.helpers import layoutcheck

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
WHITEOUT_DIR = FIXTURES / "go-containerregistry/pkg/v1/mutate/testdata/whiteout_dir.tar"


def sh(*cmd: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120,
                          check=False, cwd=cwd)


def ok(*cmd: str | Path, cwd: Path | None = None) -> str:
    result = sh(*cmd, cwd=cwd)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))}: {result.stderr}"
    return result.stdout


def empty_layout(path: Path) -> Path:
    path.mkdir()
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    return path


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / digest.replace(":", "/")).read_bytes()


def docker25(oci_archive: Path, dest: Path, tag: str) -> Path:
    """A Docker 25+ style save: an OCI layout plus manifest.json (RepoTags, Config, Layers)."""
    with tarfile.open(oci_archive) as src:
        members = [(m, src.extractfile(m).read() if m.isfile() else None)  # type: ignore[union-attr]
                   for m in src.getmembers()]
    files = {m.name.removeprefix("./"): data for m, data in members if data is not None}
    index = json.loads(files["index.json"])
    manifest = json.loads(files["blobs/" + index["manifests"][0]["digest"].replace(":", "/")])
    listing = [{
        "Config": "blobs/" + manifest["config"]["digest"].replace(":", "/"),
        "RepoTags": [tag],
        "Layers": ["blobs/" + x["digest"].replace(":", "/") for x in manifest["layers"]],
    }]
    files["manifest.json"] = json.dumps(listing).encode()
    with tarfile.open(dest, "w") as out:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return dest


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One umoci image, in every shape `.import/` takes, made by skopeo."""
    require_tools("umoci", "skopeo", "zstd")
    base = tmp_path_factory.mktemp("sources")
    src = str(base / "layout")
    layoutcheck.make_layout(src, "v1", {"hello.txt": b"hello from the image\n"})
    out = {"layout": Path(src)}
    out["oci-archive"] = Path(layoutcheck.to_archive(src, "v1", str(base / "oci.tar"),
                                                     "oci-archive"))
    out["oci-archive.gz"] = base / "oci.tar.gz"
    out["oci-archive.gz"].write_bytes(gzip.compress(out["oci-archive"].read_bytes(), 1))
    out["docker-save"] = Path(layoutcheck.to_archive(src, "v1", str(base / "docker.tar"),
                                                     "docker-archive", "example.com/app:1"))
    subprocess.run(["zstd", "-q", "-f", str(out["docker-save"])], check=True)
    out["docker-save.zst"] = Path(f"{out['docker-save']}.zst")
    out["docker25"] = docker25(out["oci-archive"], base / "docker25.tar", "example.com/app:1")
    return out


def import_kind(m: Any, sources: dict[str, Path], kind: str) -> None:
    if kind == "layout-tree":
        ok("cp", "-r", f"{sources['layout']}/.", m.path / ".import/")
    else:
        ok("cp", sources[kind], m.path / ".import/")


@pytest.mark.parametrize(
    "kind",
    ["layout-tree", "oci-archive", "oci-archive.gz", "docker-save", "docker-save.zst",
     "docker25"],
)
def test_skopeo_and_umoci_read_every_kind_of_import(
    mount_image: Any, sources: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    layout = empty_layout(tmp_path / "layout")
    m = mount_image(layout)
    import_kind(m, sources, kind)
    layoutcheck.check(str(layout))
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    ref = entry["annotations"]["org.opencontainers.image.ref.name"]
    assert entry["mediaType"] == OCI_MANIFEST
    inspected = json.loads(ok("skopeo", "inspect", f"oci:{layout}:{ref}"))
    assert inspected["Digest"] == entry["digest"]
    assert ref in ok("umoci", "ls", "--layout", layout).split()
    bundle = tmp_path / "bundle"
    ok("umoci", "unpack", "--rootless", "--image", f"{layout}:{ref}", bundle)
    assert (bundle / "rootfs/data/hello.txt").read_bytes() == b"hello from the image\n"
    if kind in ("layout-tree", "oci-archive", "oci-archive.gz", "docker25"):
        # a manifest that arrived as a blob is kept byte for byte
        original = json.loads((sources["layout"] / "index.json").read_text())["manifests"][0]
        assert entry["digest"] == original["digest"]


@pytest.mark.parametrize("kind", ["docker-save", "docker-save.zst"])
def test_docker_save_has_one_oci_manifest_mounted_or_imported(
    mount_image: Any, sources: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    mounted = mount_image(sources[kind])
    mounted_index = json.loads((mounted.path / "index.json").read_text())
    (mounted_entry,) = mounted_index["manifests"]
    layout = empty_layout(tmp_path / "layout")
    m = mount_image(layout)
    import_kind(m, sources, kind)
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    assert entry == mounted_entry  # same digest, size, media type and names
    manifest_bytes = blob(layout, entry["digest"])
    ref_dir = mounted.path / "refs" / entry["annotations"]["io.containerd.image.name"]
    assert (ref_dir / "manifest.json").read_bytes() == manifest_bytes
    manifest = json.loads(manifest_bytes)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == OCI_CONFIG
    assert [x["mediaType"] for x in manifest["layers"]] == [OCI_LAYER]
    # config and layer blobs are the archive's members, unchanged
    with tarfile.open(sources["docker-save"]) as tar:
        (item,) = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        config = tar.extractfile(item["Config"]).read()  # type: ignore[union-attr]
    assert blob(layout, manifest["config"]["digest"]) == config
    assert layoutcheck.refs(str(layout)) == {"example.com/app:1": entry["digest"]}


def test_docker_save_manifest_is_what_skopeo_writes(
    mount_image: Any, tmp_path: Path
) -> None:
    """For gzip layers (kept as they are by skopeo) the bytes are skopeo's, but for the config.

    skopeo converts the Docker config to an OCI config; ocifs keeps the config
    blob as it is, so only the config descriptor differs.
    """
    require_tools("skopeo")
    skopeo_layout = tmp_path / "skopeo"
    ok("skopeo", "copy", "-q", f"docker-archive:{WHITEOUT_DIR}", f"oci:{skopeo_layout}:x")
    (theirs,) = json.loads((skopeo_layout / "index.json").read_text())["manifests"]
    their_bytes = blob(skopeo_layout, theirs["digest"])
    m = mount_image(WHITEOUT_DIR)
    (entry,) = json.loads((m.path / "index.json").read_text())["manifests"]
    our_bytes = (m.path / "blobs" / entry["digest"].replace(":", "/")).read_bytes()
    ours = json.loads(our_bytes)
    their_config = json.dumps(json.loads(their_bytes)["config"], separators=(",", ":"))
    our_config = json.dumps(ours["config"], separators=(",", ":"))
    assert our_bytes == their_bytes.replace(their_config.encode(), our_config.encode())
    assert ours["config"]["mediaType"] == OCI_CONFIG


def test_readme_tagging_commands_work_as_written(
    mount_image: Any, sources: dict[str, Path], tmp_path: Path
) -> None:
    """README: `cp manifest.json .import/refs/app`; nested names after `mkdir -p` (team/app)."""
    layout = empty_layout(tmp_path / "layout")
    m = mount_image(layout)
    src = sources["layout"]
    (original,) = json.loads((src / "index.json").read_text())["manifests"]
    manifest = json.loads(blob(src, original["digest"]))
    for desc in [manifest["config"], *manifest["layers"]]:
        ok("cp", src / "blobs" / desc["digest"].replace(":", "/"), m.path / ".import/")
    work = tmp_path / "work"
    work.mkdir()
    (work / "manifest.json").write_bytes(blob(src, original["digest"]))
    ok("cp", "manifest.json", m.path / ".import/refs/app", cwd=work)
    ok("mkdir", "-p", m.path / ".import/refs/team")
    ok("cp", "manifest.json", m.path / ".import/refs/team/app", cwd=work)
    assert layoutcheck.refs(str(layout)) == {"app": original["digest"],
                                             "team/app": original["digest"]}
    assert (m.path / "refs/team/app/manifest.json").read_bytes() == blob(src, original["digest"])
    # a manifest tagged through refs/ is one more kind of import the tools read
    assert json.loads(ok("skopeo", "inspect", f"oci:{layout}:team/app"))["Digest"] == original[
        "digest"]
    assert "app" in ok("umoci", "ls", "--layout", layout).split()
