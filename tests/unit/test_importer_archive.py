"""The streaming archive importer on archives made by skopeo, docker and by hand."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocifs.errors import DigestMismatch, InvalidInput, OcifsError
from ocifs.importer import classify, indexjson
from ocifs.importer.archive_stream import ArchiveImport
from ocifs.importer.commit import commit_blobs
from ocifs.importer.decoder import Decoder
from ocifs.importer.tarstream import Member, TarStream
from tests.conftest import FIXTURES as ALL_FIXTURES
from tests.helpers import layoutcheck

FIXTURES = ALL_FIXTURES / "go-containerregistry/pkg/v1/tarball/testdata"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An umoci layout with two images and archives skopeo made from it."""
    base = tmp_path_factory.mktemp("archives")
    src = str(base / "src")
    layoutcheck.make_layout(src, "v1", {"hello.txt": b"hello\n", "big.bin": os.urandom(300_000)})
    layoutcheck.make_layout(src, "v2", {"other.txt": b"other\n"})
    out = {"layout": Path(src)}
    out["oci"] = Path(layoutcheck.to_archive(src, "v1", str(base / "oci.tar"), "oci-archive"))
    out["docker"] = Path(layoutcheck.to_archive(
        src, "v1", str(base / "docker.tar"), "docker-archive", "example.com/app:v1"))
    gz = base / "oci.tar.gz"
    gz.write_bytes(gzip.compress(out["oci"].read_bytes()))
    out["oci.gz"] = gz
    for kind in ("oci", "docker"):  # as `zstd` writes them: one frame, with a checksum
        subprocess.run(["zstd", "-q", "-f", str(out[kind])], check=True)
        out[f"{kind}.zst"] = Path(f"{out[kind]}.zst")
    return out


@pytest.fixture
def layout(tmp_path: Path) -> str:
    path = tmp_path / "dst"
    subprocess.run(["umoci", "init", "--layout", str(path)], check=True)
    return str(path)


def feed_all(layout: str, data: bytes, chunks: int | None = None) -> ArchiveImport:
    imp = ArchiveImport(layout, "test.tar")
    rng = random.Random(len(data))
    pos = 0
    try:
        while pos < len(data):
            n = chunks or rng.choice([1, 7, 511, 513, 4096, 1 << 20])
            imp.feed(data[pos : pos + n])
            pos += n
    except BaseException:
        imp.discard()  # what the ingest does at release
        raise
    return imp


def import_archive(layout: str, data: bytes, chunks: int | None = None) -> list[str]:
    imp = feed_all(layout, data, chunks)
    try:
        result = imp.finish()
    except BaseException:
        imp.discard()
        raise
    commit_blobs(layout, result.staged.items())
    indexjson.update(layout, result.entries, 5.0)
    layoutcheck.check(layout)
    return sorted(layoutcheck.refs(layout))


@pytest.mark.parametrize("kind", ["oci", "oci.gz", "oci.zst"])
def test_oci_archive_imports_and_tools_read_it(
    made: dict[str, Path], layout: str, kind: str
) -> None:
    assert import_archive(layout, made[kind].read_bytes()) == ["v1"]
    subprocess.run(["umoci", "stat", "--image", f"{layout}:v1"], check=True, capture_output=True)
    subprocess.run(["skopeo", "inspect", f"oci:{layout}:v1"], check=True, capture_output=True)
    subprocess.run(["oci-image-tool", "validate", "--type", "image", "--ref", "name=v1", layout],
                   check=True, capture_output=True)


@pytest.mark.parametrize("kind", ["docker", "docker.zst"])
def test_docker_archive_synthesizes_oci_manifest(
    made: dict[str, Path], layout: str, kind: str
) -> None:
    assert import_archive(layout, made[kind].read_bytes(), 4096) == ["example.com/app:v1"]
    index = json.loads(Path(layout, "index.json").read_bytes())
    (entry,) = index["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    blob = Path(layout, "blobs", *entry["digest"].split(":")).read_bytes()
    manifest = json.loads(blob)
    assert manifest["mediaType"] == entry["mediaType"]
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert {x["mediaType"] for x in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar"
    }
    config_path = Path(layout, "blobs", *manifest["config"]["digest"].split(":"))
    config = json.loads(config_path.read_bytes())
    assert [x["digest"] for x in manifest["layers"]] == config["rootfs"]["diff_ids"]
    # importing again changes nothing (deterministic manifest)
    before = layoutcheck.snapshot(layout)
    import_archive(layout, made["docker"].read_bytes())
    assert layoutcheck.snapshot(layout) == before


@pytest.mark.parametrize(
    ("name", "refs"),
    [
        ("test_image_1.tar", ["docker.io/bazel/v1/tarball:test_image_1"]),
        ("test_link.tar", ["docker.io/bazel/v1/tarball:test_image_1",
                           "docker.io/bazel/v1/tarball:test_image_3"]),
        ("test_bundle.tar", ["docker.io/library/test_image_1:latest",
                             "docker.io/library/test_image_2:latest"]),
        ("hello-world-v25.tar", []),  # RepoTags null: imported untagged
        ("../../mutate/testdata/whiteout_dir.tar", ["localhost:5000/whiteout:latest"]),  # gzip
    ],
)
def test_real_docker_save_tars(layout: str, name: str, refs: list[str]) -> None:
    path = FIXTURES / name
    assert classify.sniff_archive(path.read_bytes()[:8192], final=False) is True
    assert import_archive(layout, path.read_bytes()) == refs
    assert json.loads(Path(layout, "index.json").read_bytes())["manifests"]


def test_corrupt_blob_member_fails_as_it_streams(made: dict[str, Path], layout: str) -> None:
    data = bytearray(made["oci"].read_bytes())
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tf:
        member = max(tf.getmembers(), key=lambda m: m.size)
    data[member.offset_data + 10] ^= 0xFF
    before = layoutcheck.snapshot(layout)
    with pytest.raises(DigestMismatch):
        feed_all(layout, bytes(data))
    assert layoutcheck.snapshot(layout) == before


@pytest.mark.parametrize("kind", ["oci", "oci.gz", "oci.zst", "docker", "docker.zst"])
def test_truncated_archive_is_refused(made: dict[str, Path], layout: str, kind: str) -> None:
    data = made[kind].read_bytes()
    before = layoutcheck.snapshot(layout)
    for cut in (len(data) // 3, len(data) - 1500):
        with pytest.raises(OcifsError):
            import_archive(layout, data[:cut])
    assert layoutcheck.snapshot(layout) == before


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_hostile_names_are_only_data_and_missing_blobs_fail(layout: str) -> None:
    layer = b"layer-bytes"
    from ocifs.model.digest import of_bytes

    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": str(of_bytes(b"{}")), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": str(of_bytes(layer)), "size": len(layer)}],
    }).encode()
    md = of_bytes(manifest)
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": str(md),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "x"}}]})
    members = [
        ("../../escape", b"nope"), ("/abs", b"nope"), ("blobs/sha256/" + md.hex, manifest),
        ("blobs/sha256/" + of_bytes(b"{}").hex, b"{}"), ("index.json", index.encode()),
        ("a" * 300, b"long name via PAX"),
    ]
    before = layoutcheck.snapshot(layout)
    with pytest.raises(InvalidInput, match="missing blob"):
        import_archive(layout, _tar(members))
    assert layoutcheck.snapshot(layout) == before
    members.insert(0, ("blobs/sha256/" + of_bytes(layer).hex, layer))
    assert import_archive(layout, _tar(members)) == ["x"]
    assert not Path(layout).parent.joinpath("escape").exists()


@settings(max_examples=int(os.environ.get('OCIFS_FUZZ_EXAMPLES', '60')), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_corrupted_archives_fail_only_with_typed_errors(
    made: dict[str, Path], data: st.DataObject
) -> None:
    kind = data.draw(st.sampled_from(["oci", "oci.gz", "oci.zst", "docker"]))
    raw = bytearray(made[kind].read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(raw) // 2, len(raw)))
    with tempfile.TemporaryDirectory() as layout:
        Path(layout, "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        Path(layout, "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
        try:
            import_archive(layout, bytes(raw[:cut]))
        except OcifsError:
            pass
        layoutcheck.check(layout)  # valid whatever happened, no staging left


def test_tarstream_reports_members_and_long_names() -> None:
    seen: list[tuple[str, int]] = []

    class H:
        def begin(self, m: Member) -> bool:
            seen.append((m.name, m.size))
            return True

        def data(self, chunk: memoryview) -> None:
            pass

        def end(self) -> None:
            pass

    tar = TarStream(H())
    tar.feed(_tar([("./x/" + "y" * 200, b"1234"), ("z", b"")]))
    assert tar.done
    assert seen == [("x/" + "y" * 200, 4), ("z", 0)]


@pytest.mark.parametrize(("kind", "fmt"), [("oci", "tar"), ("oci.gz", "gzip"), ("oci.zst", "zstd")])
def test_decoder_tells_the_format_from_bytes_fed_one_at_a_time(
    made: dict[str, Path], kind: str, fmt: str
) -> None:
    out = bytearray()

    class Sink:
        def feed(self, data: bytes | memoryview) -> None:
            out.extend(data)

    decoder = Decoder(Sink())
    raw = made[kind].read_bytes()
    for i in range(6):
        decoder.feed(raw[i : i + 1])
    decoder.feed(raw[6:])
    assert decoder.format == fmt and decoder.complete
    assert bytes(out) == made["oci"].read_bytes()


def test_sniff_tells_archives_from_layers(made: dict[str, Path]) -> None:
    assert classify.sniff_archive(made["oci"].read_bytes()[:4096], final=False) is True
    assert classify.sniff_archive(made["oci.gz"].read_bytes()[:4096], final=False) is True
    assert classify.sniff_archive(made["docker"].read_bytes()[:4096], final=False) is True
    for kind in ("oci.zst", "docker.zst"):  # zstd emits nothing before a whole block
        head = made[kind].read_bytes()[: classify.SNIFF_LIMIT]
        assert classify.sniff_archive(head, final=False) is True
    layer = _tar([("./", b""), ("etc/passwd", b"root")])
    assert classify.sniff_archive(layer, final=False) is False
    zst_layer = subprocess.run(["zstd", "-q", "-c"], input=layer, capture_output=True, check=True)
    assert classify.sniff_archive(zst_layer.stdout, final=True) is False
    assert classify.sniff_archive(b"\x28\xb5", final=False) is None  # could be zstd
    assert classify.sniff_archive(b"\x1f\x8b", final=False) is None
    assert classify.sniff_archive(b"plain text", final=True) is False


def test_no_staging_left_after_discard(made: dict[str, Path], layout: str) -> None:
    imp = feed_all(layout, made["oci"].read_bytes()[: 200_000])
    imp.discard()
    staging = Path(layout, ".ocifs-staging")
    assert not staging.exists() or os.listdir(staging) == []
    shutil.rmtree(staging, ignore_errors=True)
