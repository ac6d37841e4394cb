"""Malformed archives, built with Python's tarfile: each gets its own error.

Open-time errors (NotAnImage / InvalidInput) when the index cannot be read;
read-time BlobUnavailable otherwise. Member names are only keys: traversal
names and links leaving the archive are never used.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from ocifs.cache import DiskCache
from ocifs.errors import BlobUnavailable, InvalidInput, NotAnImage, Unsupported
from ocifs.model import digest as digest_mod
from ocifs.model import mediatypes as mt
from ocifs.model.descriptor import REF_NAME
from ocifs.sources.detect import open_source
from ocifs.tree.blobs import BlobAccess

LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Image:
    layer: bytes
    config: bytes
    manifest: bytes
    index: bytes

    def blob_members(self) -> list[tuple[str, bytes]]:
        return [(f"blobs/sha256/{sha(b)[7:]}", b) for b in (self.layer, self.config, self.manifest)]


def oci_image(layer_size_delta: int = 0, tag: str = "v1") -> Image:
    layer = layer_tar({"etc/hello": b"hello\n", "big": os.urandom(20000)})
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": sha(config), "size": len(config)},
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha(layer),
                    "size": len(layer) + layer_size_delta,
                }
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": sha(manifest),
                    "size": len(manifest),
                    "annotations": {REF_NAME: tag},
                }
            ],
        }
    ).encode()
    return Image(layer, config, manifest, index)


Entry = tuple[str, bytes] | tuple[str, str, str]  # (name, data) or (name, "sym"/"lnk", target)


def write_tar(path: Path, members: list[Entry], end_marker: bool = True) -> Path:
    buf = io.BytesIO()
    tf = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
    for member in members:
        info = tarfile.TarInfo(member[0])
        if len(member) == 3:
            info.type = tarfile.SYMTYPE if member[1] == "sym" else tarfile.LNKTYPE
            info.linkname = member[2]
            tf.addfile(info)
        else:
            info.size = len(member[1])
            tf.addfile(info, io.BytesIO(member[1]))
    if end_marker:
        tf.close()
        data = buf.getvalue()
    else:
        data = buf.getvalue()  # members only, no end-of-archive blocks
    path.write_bytes(data)
    return path


def oci_members(img: Image, first: bool = True) -> list[Entry]:
    docs: list[Entry] = [("oci-layout", LAYOUT), ("index.json", img.index)]
    blobs: list[Entry] = list(img.blob_members())
    return docs + blobs if first else blobs + docs


@pytest.fixture
def cache(tmp_path: Path) -> DiskCache:
    return DiskCache(tmp_path / "cache")


def read_all(source: object, digest: str) -> bytes:
    reader = source.open_blob(digest_mod.parse(digest))  # type: ignore[attr-defined]
    return reader.pread(0, reader.size)  # type: ignore[no-any-return]


# -- valid baseline ---------------------------------------------------------------


def test_dot_slash_prefixes_and_order(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    members = [(f"./{m[0]}", m[1]) for m in oci_members(img, first=False)]
    source = open_source(str(write_tar(tmp_path / "a.tar", members)), cache)  # type: ignore[arg-type]
    assert source.kind == "oci-archive"
    assert source.index_bytes() == img.index
    assert source.oci_layout_bytes() == LAYOUT
    assert read_all(source, sha(img.layer)) == img.layer
    assert {str(d) for d in source.list_blobs()} == {
        sha(img.layer),
        sha(img.config),
        sha(img.manifest),
    }
    source.close()


# -- names ---------------------------------------------------------------------------


def test_traversal_and_absolute_names_are_never_used(
    tmp_path: Path, cache: DiskCache, caplog: pytest.LogCaptureFixture
) -> None:
    img = oci_image()
    evil_index = b'{"schemaVersion":2,"manifests":[]}'
    other = b"outside"
    members: list[Entry] = [
        *oci_members(img),
        ("../index.json", evil_index),
        ("/index.json", evil_index),
        ("blobs/../index.json", evil_index),
        (f"../blobs/sha256/{sha(other)[7:]}", other),
        (f"/blobs/sha256/{sha(other)[7:]}", other),
    ]
    with caplog.at_level(logging.WARNING):
        source = open_source(str(write_tar(tmp_path / "a.tar", members)), cache)
    assert source.index_bytes() == img.index
    assert source.blob_size(digest_mod.parse(sha(other))) is None
    with pytest.raises(BlobUnavailable, match="not in the archive"):
        source.open_blob(digest_mod.parse(sha(other)))
    assert "outside the archive root" in caplog.text
    source.close()


def test_links_leaving_the_archive_are_ignored(
    tmp_path: Path, cache: DiskCache, caplog: pytest.LogCaptureFixture
) -> None:
    img = oci_image()
    fake = sha(b"x")[7:]
    alias = sha(b"alias")[7:]
    hard = sha(b"hard")[7:]
    members: list[Entry] = [
        *oci_members(img),
        (f"blobs/sha256/{fake}", "sym", "../../../etc/passwd"),
        (f"blobs/sha256/{fake[:-1]}0", "sym", "/etc/passwd"),
        (f"blobs/sha256/{alias}", "sym", sha(img.config)[7:]),  # inside: an alias
        (f"blobs/sha256/{hard}", "lnk", f"./blobs/sha256/{sha(img.config)[7:]}"),
        (f"blobs/sha256/{hard[:-1]}0", "lnk", "../etc/passwd"),
    ]
    with caplog.at_level(logging.WARNING):
        source = open_source(str(write_tar(tmp_path / "a.tar", members)), cache)
    assert source.blob_size(digest_mod.parse("sha256:" + fake)) is None
    assert read_all(source, "sha256:" + alias) == img.config
    assert read_all(source, "sha256:" + hard) == img.config
    assert source.blob_size(digest_mod.parse(f"sha256:{hard[:-1]}0")) is None
    assert caplog.text.count("points outside the archive") == 3
    source.close()


def test_invalid_blob_names_are_ignored(
    tmp_path: Path, cache: DiskCache, caplog: pytest.LogCaptureFixture
) -> None:
    img = oci_image()
    members: list[Entry] = [
        *oci_members(img),
        ("blobs/sha256/xyz", b"1"),
        ("blobs/sha256/" + sha(b"2")[7:].upper(), b"2"),
        ("blobs/md5/d41d8cd98f00b204e9800998ecf8427e", b"3"),
        ("blobs/sha256/sub/" + sha(b"4")[7:], b"4"),
    ]
    with caplog.at_level(logging.WARNING):
        source = open_source(str(write_tar(tmp_path / "a.tar", members)), cache)
    assert len(list(source.list_blobs())) == 3
    assert caplog.text.count("is not a blob name") == 4
    source.close()


def test_duplicate_members_last_one_wins(tmp_path: Path, cache: DiskCache) -> None:
    old, new = oci_image(tag="old"), oci_image(tag="new")
    stale = b"stale bytes"
    members: list[Entry] = [
        *oci_members(old),
        (f"blobs/sha256/{sha(new.layer)[7:]}", stale),
        *oci_members(new),
    ]
    source = open_source(str(write_tar(tmp_path / "a.tar", members)), cache)
    assert source.index_bytes() == new.index
    assert read_all(source, sha(new.layer)) == new.layer
    source.close()


def test_later_directory_replaces_a_member(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    path = write_tar(tmp_path / "a.tar", oci_members(img))
    with tarfile.open(path, "a") as tf:
        info = tarfile.TarInfo(f"blobs/sha256/{sha(img.layer)[7:]}")
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
    source = open_source(str(path), cache)
    assert source.blob_size(digest_mod.parse(sha(img.layer))) is None
    source.close()


# -- truncation and damage --------------------------------------------------------


def test_truncated_after_index_fails_at_read(
    tmp_path: Path, cache: DiskCache, caplog: pytest.LogCaptureFixture
) -> None:
    img = oci_image()
    members = [
        *oci_members(img)[:2],
        ("blobs/sha256/" + sha(img.config)[7:], img.config),
        ("blobs/sha256/" + sha(img.manifest)[7:], img.manifest),
        ("blobs/sha256/" + sha(img.layer)[7:], img.layer),
    ]
    full = write_tar(tmp_path / "full.tar", members).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(full[: len(full) - 1024 - 5000])  # inside the layer's data
    with caplog.at_level(logging.WARNING):
        source = open_source(str(cut), cache)
    assert "archive is truncated" in caplog.text  # said once at open, for the log
    assert source.index_bytes() == img.index
    assert read_all(source, sha(img.manifest)) == img.manifest
    with pytest.raises(BlobUnavailable) as info:
        source.open_blob(digest_mod.parse(sha(img.layer)))
    assert str(cut) in str(info.value)
    assert "truncated" in str(info.value)
    assert "\n" not in str(info.value)
    source.close()


def test_blob_after_the_cut_is_missing_because_truncated(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    members = [*oci_members(img)[:2], ("blobs/sha256/" + sha(img.manifest)[7:], img.manifest)]
    path = write_tar(tmp_path / "a.tar", members, end_marker=False)
    source = open_source(str(path), cache)
    with pytest.raises(BlobUnavailable, match=r"blob sha256:\w+ is missing \(archive is truncated"):
        source.open_blob(digest_mod.parse(sha(img.layer)))
    source.close()


def test_truncated_before_index_fails_at_open(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    full = write_tar(tmp_path / "full.tar", oci_members(img, first=False)).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(InvalidInput, match=r"cut\.tar: archive is truncated at byte \d+"):
        open_source(str(cut), cache)


def test_index_cut_short_fails_at_open(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    members = oci_members(img, first=False)
    full = write_tar(tmp_path / "full.tar", members).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(full[: full.rindex(b"}") + 1 - 40])  # inside the last JSON member
    with pytest.raises(InvalidInput, match="truncated"):
        open_source(str(cut), cache)


def test_truncated_gzip_archive_fails_at_open(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    plain = write_tar(tmp_path / "a.tar", oci_members(img, first=False)).read_bytes()
    packed = gzip.compress(plain)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(InvalidInput, match=r"cut\.tar\.gz: .*truncated"):
        open_source(str(cut), cache)


def test_corrupt_gzip_archive_fails_at_open(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    packed = bytearray(gzip.compress(write_tar(tmp_path / "a.tar", oci_members(img)).read_bytes()))
    for i in range(len(packed) // 2, len(packed) // 2 + 64):
        packed[i] ^= 0x55
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(bytes(packed))
    with pytest.raises(InvalidInput, match=r"bad\.tar\.gz: gzip stream is truncated or corrupt"):
        open_source(str(bad), cache)


def test_corrupt_header_keeps_earlier_members(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    data = bytearray(write_tar(tmp_path / "a.tar", oci_members(img)).read_bytes())
    pos = data.index(f"blobs/sha256/{sha(img.manifest)[7:]}".encode())  # its header
    start = pos - pos % 512
    data[start : start + 512] = b"\xff" * 512
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    source = open_source(str(bad), cache)
    assert source.index_bytes() == img.index
    with pytest.raises(BlobUnavailable, match="archive is corrupt at byte"):
        source.open_blob(digest_mod.parse(sha(img.manifest)))
    source.close()


# -- sizes -------------------------------------------------------------------------


def test_blob_size_differs_from_descriptor(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image(layer_size_delta=10)
    source = open_source(str(write_tar(tmp_path / "a.tar", oci_members(img))), cache)
    digest = digest_mod.parse(sha(img.layer))
    assert source.blob_size(digest) == len(img.layer)
    access = BlobAccess(source)
    with pytest.raises(BlobUnavailable, match="descriptor says"):
        access.reader(digest, len(img.layer) + 10)
    access.close()
    source.close()


# -- bad documents -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "error", "message"),
    [
        (b'{"schemaVersion":2,"manifests":[', InvalidInput, "index.json: invalid JSON at line 1"),
        (b"[]", InvalidInput, "index.json: not a JSON object"),
        (b'{"schemaVersion":2,"manifests":{}}', InvalidInput, "'manifests' must be an array"),
    ],
)
def test_unreadable_index(
    tmp_path: Path, cache: DiskCache, index: bytes, error: type[Exception], message: str
) -> None:
    members: list[Entry] = [("oci-layout", LAYOUT), ("index.json", index)]
    with pytest.raises(error, match=message):
        open_source(str(write_tar(tmp_path / "a.tar", members)), cache)


def test_oci_layout_missing_or_unsupported(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    with pytest.raises(NotAnImage, match="oci-layout is not in the archive"):
        open_source(str(write_tar(tmp_path / "a.tar", [("index.json", img.index)])), cache)
    members: list[Entry] = [
        ("oci-layout", b'{"imageLayoutVersion":"2.0.0"}'),
        ("index.json", img.index),
    ]
    with pytest.raises(Unsupported, match=r"2\.0\.0"):
        open_source(str(write_tar(tmp_path / "b.tar", members)), cache)


# -- docker-save --------------------------------------------------------------------


def docker_members(
    img: Image,
    tags: list[str],
    layer_path: str = "abc/layer.tar",
    diff_ids: list[str] | None = None,
) -> list[Entry]:
    config = json.dumps(
        {"rootfs": {"type": "layers", "diff_ids": diff_ids or [sha(img.layer)]}}
    ).encode()
    items = [{"Config": "cfg.json", "RepoTags": tags, "Layers": [layer_path]}]
    return [
        ("cfg.json", config),
        ("abc/layer.tar", img.layer),
        ("manifest.json", json.dumps(items).encode()),
    ]


def test_docker_untagged_image_has_an_unnamed_entry(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    source = open_source(str(write_tar(tmp_path / "d.tar", docker_members(img, []))), cache)
    (entry,) = json.loads(source.index_bytes())["manifests"]
    assert "annotations" not in entry
    assert source.synthesized(digest_mod.parse(entry["digest"]))
    source.close()


def test_docker_odd_repotags(
    tmp_path: Path, cache: DiskCache, caplog: pytest.LogCaptureFixture
) -> None:
    img = oci_image()
    tags = ["busybox", "repo@sha256:" + "0" * 64, "localhost:5000/x:y"]
    with caplog.at_level(logging.WARNING):
        source = open_source(str(write_tar(tmp_path / "d.tar", docker_members(img, tags))), cache)
    names = [e["annotations"][REF_NAME] for e in json.loads(source.index_bytes())["manifests"]]
    assert names == ["docker.io/library/busybox:latest", "localhost:5000/x:y"]
    assert "digest reference" in caplog.text
    source.close()


def test_docker_missing_layer(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    members = docker_members(img, ["a:1"], layer_path="nope/layer.tar")
    with pytest.raises(InvalidInput, match=r"layer 'nope/layer.tar' is not in the archive"):
        open_source(str(write_tar(tmp_path / "d.tar", members)), cache)


def test_docker_layer_link_leaving_archive(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    members = docker_members(img, ["a:1"], layer_path="evil/layer.tar")
    members.insert(0, ("evil/layer.tar", "sym", "../../etc/passwd"))
    with pytest.raises(InvalidInput, match="is not in the archive"):
        open_source(str(write_tar(tmp_path / "d.tar", members)), cache)


def test_docker_diff_ids_mismatch(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    members = docker_members(img, ["a:1"], diff_ids=[sha(img.layer), sha(b"x")])
    with pytest.raises(InvalidInput, match="2 diff_ids for 1 layers"):
        open_source(str(write_tar(tmp_path / "d.tar", members)), cache)


def test_docker_one_bad_image_leaves_the_others(
    tmp_path: Path, cache: DiskCache, caplog: pytest.LogCaptureFixture
) -> None:
    img = oci_image()
    members = docker_members(img, ["good:1"])
    items = json.loads(members[-1][1])  # type: ignore[arg-type]
    items.append({"Config": "missing.json", "RepoTags": ["bad:1"], "Layers": []})
    members[-1] = ("manifest.json", json.dumps(items).encode())
    with caplog.at_level(logging.ERROR):
        source = open_source(str(write_tar(tmp_path / "d.tar", members)), cache)
    names = [e["annotations"][REF_NAME] for e in json.loads(source.index_bytes())["manifests"]]
    assert names == ["docker.io/library/good:1"]
    assert "config 'missing.json' is not in the archive (image left out)" in caplog.text
    source.close()


def test_docker_same_diff_id_different_sizes(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    members = docker_members(img, ["a:1"])
    config = json.dumps({"rootfs": {"diff_ids": [sha(img.layer)] * 2}}).encode()
    items = [
        {"Config": "cfg.json", "RepoTags": ["a:1"], "Layers": ["abc/layer.tar", "short/layer.tar"]}
    ]
    members = [
        ("cfg.json", config),
        members[1],
        ("short/layer.tar", img.layer[:512]),
        ("manifest.json", json.dumps(items).encode()),
    ]
    with pytest.raises(InvalidInput, match=r"bytes in short/layer\.tar"):
        open_source(str(write_tar(tmp_path / "d.tar", members)), cache)


def test_docker_empty_manifest_list(tmp_path: Path, cache: DiskCache) -> None:
    with pytest.raises(NotAnImage, match="lists no images"):
        open_source(str(write_tar(tmp_path / "d.tar", [("manifest.json", b"[]")])), cache)


# -- not images at all --------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "an empty file"),
        (b"just some text\n" * 100, "not a tar file"),
        (gzip.compress(b"hello"), "gzip data that is not a tar"),
        (b"\x28\xb5\x2f\xfd" + b"\0" * 100, "zstd data that is not a tar"),
        (zstandard.ZstdCompressor().compress(b"hello\n" * 100), "zstd data that is not a tar"),
    ],
)
def test_not_an_archive(tmp_path: Path, cache: DiskCache, content: bytes, message: str) -> None:
    path = tmp_path / "thing.tar"
    path.write_bytes(content)
    with pytest.raises(NotAnImage) as info:
        open_source(str(path), cache)
    assert str(info.value).startswith(f"{path}: not an image archive (")
    assert message in str(info.value)


def test_gzip_of_plain_tar_without_image(tmp_path: Path, cache: DiskCache) -> None:
    plain = write_tar(tmp_path / "x.tar", [("hello.txt", b"hi")]).read_bytes()
    path = tmp_path / "x.tgz"
    path.write_bytes(gzip.compress(plain))
    with pytest.raises(NotAnImage, match=r"not an image archive \(a gzip'd tar without"):
        open_source(str(path), cache)


def test_not_a_regular_file(cache: DiskCache) -> None:
    with pytest.raises(NotAnImage, match="/dev/null: is a character device, not an image layout"):
        open_source("/dev/null", cache)


# -- Docker 25+ format (OCI layout + manifest.json) ------------------------------


def v25_members(img: Image, index: bytes, with_manifest: bool = True) -> list[Entry]:
    items = [
        {
            "Config": f"blobs/sha256/{sha(img.config)[7:]}",
            "RepoTags": ["app:1"],
            "Layers": [f"blobs/sha256/{sha(img.layer)[7:]}"],
        }
    ]
    blobs = img.blob_members() if with_manifest else img.blob_members()[:2]
    return [
        ("oci-layout", LAYOUT),
        ("index.json", index),
        *blobs,
        ("manifest.json", json.dumps(items).encode()),
    ]


def test_v25_named_index_is_served_as_is(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    source = open_source(str(write_tar(tmp_path / "a.tar", v25_members(img, img.index))), cache)
    assert source.kind == "docker-archive"
    assert source.index_bytes() == img.index
    source.close()


def test_v25_unnamed_entry_gets_repotags(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    entry = {"mediaType": mt.OCI_MANIFEST, "digest": sha(img.manifest), "size": len(img.manifest)}
    index = json.dumps({"schemaVersion": 2, "manifests": [{**entry, "annotations": None}]})
    source = open_source(
        str(write_tar(tmp_path / "a.tar", v25_members(img, index.encode()))), cache
    )
    (got,) = json.loads(source.index_bytes())["manifests"]
    assert got["digest"] == sha(img.manifest)
    assert got["annotations"][REF_NAME] == "docker.io/library/app:1"
    assert not source.synthesized(digest_mod.parse(got["digest"]))
    source.close()


def test_v25_without_manifest_blob_synthesizes_one(tmp_path: Path, cache: DiskCache) -> None:
    img = oci_image()
    index = b'{"schemaVersion":2,"manifests":null}'
    members = v25_members(img, index, with_manifest=False)
    source = open_source(str(write_tar(tmp_path / "a.tar", members)), cache)
    (got,) = json.loads(source.index_bytes())["manifests"]
    assert got["mediaType"] == mt.OCI_MANIFEST
    digest = digest_mod.parse(got["digest"])
    assert source.synthesized(digest)
    manifest = json.loads(read_all(source, got["digest"]))
    assert manifest["layers"][0]["digest"] == sha(img.layer)
    assert manifest["config"]["digest"] == sha(img.config)
    assert read_all(source, sha(img.layer)) == img.layer
    source.close()
