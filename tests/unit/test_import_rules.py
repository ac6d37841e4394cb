"""Issue 16: the rules `.import/` applies to its input, one function each.

The mount tests (tests/mount/test_import_faults.py) drive the same rules through
real tools; these pin down the edges of each rule.
"""

from __future__ import annotations

import hashlib
import io
import os

import pytest
import zstandard

from ocifs.errors import InvalidInput
from ocifs.importer import classify
from ocifs.importer.classify import Kind, MemberRole
from ocifs.importer.decoder import ZstdFrames
from ocifs.model.reference import check_ref_name, parse_docker_ref

HEX = hashlib.sha256(b"x").hexdigest()


def frames_of(data: bytes, step: int) -> ZstdFrames:
    frames = ZstdFrames()
    for i in range(0, len(data), step):
        frames.feed(data[i : i + step])
    return frames


@pytest.mark.parametrize("checksum", [True, False])
@pytest.mark.parametrize("size", [0, 1000, 300_000])
def test_zstd_frames_end_exactly_where_the_stream_does(checksum: bool, size: int) -> None:
    payload = os.urandom(size // 2) + bytes(size - size // 2)
    one = zstandard.ZstdCompressor(write_checksum=checksum).compress(payload)
    buf = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(buf, closefd=False) as w:
        w.write(payload)
    two = one + buf.getvalue()  # a second frame, written without a content size
    for stream in (one, two):
        for step in (3, 4096, len(stream)):
            assert frames_of(stream, step).at_boundary
        for cut in (1, 2, 4, 5):
            assert not frames_of(stream[:-cut], 4096).at_boundary


def test_zstd_frames_skippable_frames_and_garbage() -> None:
    skippable = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    frame = zstandard.ZstdCompressor().compress(b"data")
    assert frames_of(frame + skippable, 1).at_boundary
    assert not frames_of(frame + skippable[:-1], 1).at_boundary
    with pytest.raises(InvalidInput, match="garbage"):
        frames_of(frame + b"junk", 4096)


@pytest.mark.parametrize("name", [
    f"SHA256:{HEX}", "sha256:", f"sha256:{HEX} ", f" sha256:{HEX}", f"sha256:{HEX.upper()}",
    f"sha256:{HEX[:-1]}", f"sha512:{HEX}", f"sha256:{HEX}.tar",
])
def test_digest_looking_names_must_be_valid(name: str) -> None:
    with pytest.raises(InvalidInput, match="looks like a digest"):
        classify.role_of((name,))


@pytest.mark.parametrize("name", ["image:latest", "a:b", "notes", "x.sha256", ".tmp"])
def test_other_names_with_or_without_colons_are_auto(name: str) -> None:
    assert classify.role_of((name,)).kind is Kind.AUTO


def test_archive_member_rule() -> None:
    member = classify.archive_member
    assert member("index.json") == (MemberRole.DOCUMENT, None)
    role, digest = member(f"blobs/sha256/{HEX}") or (None, None)
    assert role is MemberRole.BLOB and digest is not None and digest.hex == HEX
    assert member(f"{HEX}/layer.tar") == (MemberRole.DOCKER_FILE, None)
    assert member(f"{HEX}.json") == (MemberRole.DOCKER_FILE, None)
    assert member(f"sha256:{HEX}") == (MemberRole.DOCKER_FILE, None)
    assert member(f"{HEX}/json") == (MemberRole.LEGACY, None)
    for ignored in ("README", "blobs/sha256/not-hex", "blobs/md5/abc", "etc/passwd",
                    "blobs/sha256", f"x/blobs/sha256/{HEX}"):
        assert member(ignored) is None, ignored


@pytest.mark.parametrize(("tag", "full"), [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1", "docker.io/library/busybox:1"),
    ("library/busybox:1.2", "docker.io/library/busybox:1.2"),
    ("quay.io/a/b:v1", "quay.io/a/b:v1"),
    ("localhost:5000/x:y", "localhost:5000/x:y"),
    ("Registry.Example/x:1", "Registry.Example/x:1"),  # domains may be upper-case
    ("a/b__c--d.e:T_1.2-3", "docker.io/a/b__c--d.e:T_1.2-3"),
])
def test_valid_repo_tags_normalize_as_containerd(tag: str, full: str) -> None:
    assert parse_docker_ref(tag) == full


@pytest.mark.parametrize("tag", [
    "", "BusyBox:1", "library/Busybox", "../../etc:passwd", "with space:1", "busybox:",
    "busybox:-x", "busybox:1 ", "a" * 64, f"x@sha256:{HEX}", "a//b", "a/:1", "-a:1",
    "busybox:" + "t" * 129,
])
def test_invalid_repo_tags_are_refused(tag: str) -> None:
    with pytest.raises(InvalidInput):
        parse_docker_ref(tag)


def test_oci_ref_names() -> None:
    for ok in ("v1", "app/1.0", "docker.io/library/busybox:1", "a--b", "a@b+c"):
        assert check_ref_name(ok) == ok
    for bad in ("", "../x", "a b", "/a", "a/", "a//b", "-a", "a_", "é"):
        with pytest.raises(InvalidInput):
            check_ref_name(bad)
