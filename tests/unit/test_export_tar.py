"""The export's tar layout (headers, segment table) and the names it carries."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from ocifs.export import names_of
from ocifs.model.descriptor import CONTAINERD_NAME, REF_NAME
from ocifs.model.reference import familiar_tag, oci_ref_name
from ocifs.model.tarlayout import Member, TarLayout, member_header
from tests.conftest import FIXTURES

HELLO_V25 = FIXTURES / "go-containerregistry/pkg/v1/tarball/testdata/hello-world-v25.tar"


def materialise(layout: TarLayout[bytes]) -> bytes:
    return b"".join(s.data if s.data is not None else s.body or b"" for s in layout.segments)


def test_headers_equal_docker_25_save_byte_for_byte() -> None:
    """Docker 25's `docker save` (Go archive/tar) wrote these members with mtime 0."""
    data = HELLO_V25.read_bytes()
    with tarfile.open(HELLO_V25) as tf:
        members = [m for m in tf.getmembers() if m.mtime == 0]
    assert len(members) >= 3
    for m in members:
        assert member_header(m.name, m.size) == data[m.offset : m.offset + 512], m.name


def test_layout_parses_with_python_and_gnu_tar(tmp_path: Path) -> None:
    bodies = {"a" * 64: b"x" * 1000, "b" * 128: b"y" * 513, "c" * 64: b""}
    members: list[Member[bytes]] = [
        Member("blobs/", directory=True),
        Member("blobs/sha256/", directory=True),
        Member(f"blobs/sha256/{'a' * 64}", size=1000, body=bodies["a" * 64]),
        Member(f"blobs/sha256/{'c' * 64}", size=0, body=b""),
        Member("blobs/sha512/", directory=True),
        Member(f"blobs/sha512/{'b' * 128}", size=513, body=bodies["b" * 128]),
        Member("index.json", data=b'{"schemaVersion":2}'),
    ]
    layout = TarLayout.build(members)
    raw = materialise(layout)
    assert len(raw) == layout.size
    assert layout.size % 512 == 0 and raw.endswith(b"\0" * 1024)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        got = {m.name: (tf.extractfile(m).read() if m.isfile() else None) for m in tf}  # type: ignore[union-attr]
    assert got[f"blobs/sha512/{'b' * 128}"] == b"y" * 513  # PAX path record
    assert got[f"blobs/sha256/{'a' * 64}"] == b"x" * 1000
    assert got["index.json"] == b'{"schemaVersion":2}'
    path = tmp_path / "t.tar"
    path.write_bytes(raw)
    listing = subprocess.run(
        ["tar", "-tvf", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert f"blobs/sha512/{'b' * 128}" in listing
    assert "0/0" in listing and "1970-01-01 00:00" in listing
    # every offset maps to the segment that holds it
    for offset in range(0, layout.size, 97):
        seg = layout.segments[layout.locate(offset)]
        assert seg.start <= offset < seg.start + seg.length


def test_sizes_over_8_gib_get_a_pax_size_record(tmp_path: Path) -> None:
    size = 9 << 30
    layout = TarLayout.build([Member("blobs/sha256/" + "d" * 64, size=size, body=b"")])
    assert layout.size == len(layout.segments[0].data or b"") + size + 1024
    path = tmp_path / "big.tar"
    with open(path, "wb") as f:  # a sparse file: the body is a hole of zeros
        for seg in layout.segments:
            if seg.data is not None:
                f.seek(seg.start)
                f.write(seg.data)
        f.truncate(layout.size)
    with tarfile.open(path) as tf:
        (member,) = tf.getmembers()
    assert (member.name, member.size) == ("blobs/sha256/" + "d" * 64, size)


@pytest.mark.parametrize(
    ("name", "tag"),
    [
        ("sample:1.0", "sample:1.0"),
        ("docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/foo/bar:1", "foo/bar:1"),
        ("example.com/app:1", "example.com/app:1"),
        ("localhost:5000/a/b:c", "localhost:5000/a/b:c"),
        ("v1", None),
        ("latest", None),
        ("Upper:1", None),
        ("app@sha256:" + "0" * 64, None),
        ("a/b", None),
    ],
)
def test_repo_tags_are_familiar_docker_references(name: str, tag: str | None) -> None:
    assert familiar_tag(name) == tag


def test_names_follow_containerd() -> None:
    assert oci_ref_name("docker.io/library/busybox:latest") == "latest"
    assert oci_ref_name("sample:1.0") == "sample:1.0"
    assert names_of({REF_NAME: "v1"}) == {REF_NAME: "v1", CONTAINERD_NAME: "v1"}
    assert names_of({CONTAINERD_NAME: "docker.io/library/busybox:latest"}) == {
        REF_NAME: "latest",
        CONTAINERD_NAME: "docker.io/library/busybox:latest",
    }
    assert names_of({"other": "x"}) == {}
