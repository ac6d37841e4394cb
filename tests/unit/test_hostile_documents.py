"""Model and layer-pass pieces behind the hostile-input promises (no mount)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from ocifs.codec.blobio import BytesReader
from ocifs.codec.limits import DEFAULT
from ocifs.errors import BlobUnavailable, InvalidInput, Unsupported
from ocifs.layers import indexer
from ocifs.model import documents
from ocifs.sources.layout_dir import LayoutDir
from tests.helpers import tarbuilder as tb
from tests.helpers.layoutbuilder import DOCKER_MANIFEST, OCI_MANIFEST, Layout


@pytest.mark.parametrize("how", ["tar", "gz", "zst"])
def test_the_index_pass_records_the_diff_id(how: str) -> None:
    tar = tb.build([tb.File("a", b"x" * 3000), tb.Dir("d")])
    blob = tb.compress(tar, how)
    reader = BytesReader(blob)
    comp = indexer.choose_compression(tb.MEDIA[how], blob[:512], "t")
    record, _ = indexer.build(reader, tb.digest_of(blob), comp, DEFAULT)
    assert record.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()


def test_documents_report_their_own_media_type_and_schema_1() -> None:
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "a/b", "digest": "sha256:" + "0" * 64, "size": 1},
        "layers": [],
    }
    assert documents.parse_manifest(json.dumps(manifest).encode(), "m").own_media_type == (
        OCI_MANIFEST
    )
    del manifest["mediaType"]
    assert documents.parse_manifest(json.dumps(manifest).encode(), "m").own_media_type is None
    with pytest.raises(Unsupported, match="unsupported schema 1"):
        documents.parse_manifest(b'{"schemaVersion": 1}', "m")
    assert documents.kind_of("application/vnd.docker.distribution.manifest.v1+prettyjws") == (
        "schema1"
    )
    assert documents.kind_of(DOCKER_MANIFEST) == "manifest"


def test_diff_ids_must_be_an_array_of_strings() -> None:
    good = b'{"rootfs": {"type": "layers", "diff_ids": ["sha256:1", "sha256:2"]}}'
    assert documents.parse_diff_ids(good, "c") == ["sha256:1", "sha256:2"]
    for bad in (b"[]", b'{"rootfs": {}}', b'{"rootfs": {"diff_ids": [1]}}'):
        with pytest.raises(InvalidInput, match=r"rootfs\.diff_ids"):
            documents.parse_diff_ids(bad, "c")


def test_a_fifo_blob_is_refused_without_blocking(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "layout")
    desc = layout.blob(b"some bytes", "application/octet-stream")
    path = layout.blob_path(desc)
    path.unlink()
    os.mkfifo(path)
    source = LayoutDir(str(layout.path))
    with pytest.raises(BlobUnavailable, match="is a FIFO, not a regular file"):
        source.open_blob(tb.digest_of(b"some bytes"))  # would wait for a writer if blocking
    assert source.blob_size(tb.digest_of(b"some bytes")) is None


def test_a_blob_reader_notices_its_file_changing(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "layout")
    desc = layout.blob(b"0123456789", "application/octet-stream")
    source = LayoutDir(str(layout.path))
    reader = source.open_blob(tb.digest_of(b"0123456789"))
    assert reader.pread(0, 4) == b"0123" and not reader.changed()
    with open(layout.blob_path(desc), "r+b") as f:
        f.write(b"x")
    assert reader.changed()
    reader.close()


def test_sockets_directories_and_symlinks_as_blobs_are_never_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    layout = Layout(tmp_path / "layout")
    kinds = {}
    for kind in ("a socket", "a directory", "a symlink"):
        desc = layout.blob(kind.encode(), "application/octet-stream")
        path = layout.blob_path(desc)
        path.unlink()
        if kind == "a socket":
            sock = socket.socket(socket.AF_UNIX)
            monkeypatch.chdir(path.parent)  # AF_UNIX paths are limited to 108 bytes
            sock.bind(path.name)
        elif kind == "a directory":
            path.mkdir()
        else:
            path.symlink_to("/dev/zero")
        kinds[kind] = tb.digest_of(kind.encode())
    source = LayoutDir(str(layout.path))
    for kind, digest in kinds.items():
        with pytest.raises(BlobUnavailable, match=f"is {kind}, not a regular file"):
            source.open_blob(digest)
    sock.close()
