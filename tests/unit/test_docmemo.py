"""The memo of verified documents: a second reader gets the same bytes without a read of
the source; a descriptor with another size, or a digest never verified, still goes to the
source and fails there; the memo stays within its byte budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocifs import export
from ocifs.docmemo import DocumentMemo
from ocifs.errors import BlobUnavailable
from ocifs.model import descriptor
from ocifs.sources.layout_dir import LayoutDir
from tests.helpers import layoutbuilder


def _layout(tmp_path: Path) -> tuple[LayoutDir, layoutbuilder.Layout, dict]:
    lay = layoutbuilder.Layout(tmp_path / "lay")
    image = lay.image(layoutbuilder.simple_layers(lay))
    lay.tag(image, "img")
    return LayoutDir(str(lay.path), writable=False), lay, image


def test_plan_after_a_directory_build_reads_no_document_again(tmp_path: Path) -> None:
    source, lay, image = _layout(tmp_path)
    desc = descriptor.parse(image, "test")
    memo = DocumentMemo()
    memo.read(source, desc)  # what the image directory build does
    path = lay.blob_path(image)
    path.write_bytes(b" " * path.stat().st_size)  # a read of the source would now fail
    with pytest.raises(BlobUnavailable, match="does not match its digest"):
        export.plan(source, desc, {})
    layout = export.plan(source, desc, {}, memo.read)  # served from the memo
    assert (memo.hits, memo.misses) == (1, 1)
    assert layout.size > image["size"]


def test_other_size_or_unverified_digest_goes_to_the_source(tmp_path: Path) -> None:
    source, lay, image = _layout(tmp_path)
    memo = DocumentMemo()
    memo.read(source, descriptor.parse(image, "test"))
    with pytest.raises(BlobUnavailable, match="larger than the 10 bytes"):
        memo.read(source, descriptor.parse({**image, "size": 10}, "test"))
    path = lay.blob_path(image)
    data = path.read_bytes()
    bad = lay.blob(data.replace(b"schemaVersion", b"schemaversion"), image["mediaType"])
    lay.blob_path(bad).write_bytes(data)  # the file no longer matches its name
    with pytest.raises(BlobUnavailable, match="does not match its digest"):
        memo.read(source, descriptor.parse(bad, "test"))


def test_bounded(tmp_path: Path) -> None:
    lay = layoutbuilder.Layout(tmp_path / "lay")
    source = LayoutDir(str(lay.path), writable=False)
    memo = DocumentMemo(max_bytes=3000, max_entry=1500)
    descs = [descriptor.parse(lay.json_blob({"n": i, "pad": "x" * 900}, "x/y"), "t")
             for i in range(5)]
    big = descriptor.parse(lay.json_blob({"pad": "x" * 2000}, "x/y"), "t")
    for d in [*descs, big]:
        memo.read(source, d)
    assert memo._bytes <= 3000 and big.digest not in memo._docs
    assert list(memo._docs) == [d.digest for d in descs[-3:]]
