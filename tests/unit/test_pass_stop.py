"""The stop flag of an index pass (set when the daemon unmounts): the pass ends
at its next chunk with `Unmounting`, on every decoding path, and never reports
the input it cut short as damage."""

from __future__ import annotations

import gzip
import os
import threading

import pytest

from ocifs.codec import child
from ocifs.codec.blobio import BytesReader
from ocifs.codec.decode import LayerPass
from ocifs.codec.limits import DEFAULT
from ocifs.errors import Unmounting
from ocifs.model.digest import of_bytes
from ocifs.model.mediatypes import Compression


@pytest.mark.parametrize("decoder", ["inline", "thread", "child"])
def test_a_stopped_pass_ends_with_unmounting(
    decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCIFS_DECODER", "child" if decoder == "child" else "")
    if decoder == "child":
        assert child.enabled() and child.command(Compression.GZIP) is not None
    size = 64 << 10 if decoder == "inline" else 8 << 20  # CHILD_MIN_SIZE and more
    blob = gzip.compress(os.urandom(size) + bytes(16 << 20), compresslevel=1)
    stop = threading.Event()
    lp = LayerPass(BytesReader(blob), of_bytes(blob), Compression.GZIP, "test", DEFAULT,
                   stop=stop)
    produced = 0
    with pytest.raises(Unmounting, match="stopped"):
        try:
            for chunk in lp.chunks():
                produced += len(chunk)
                stop.set()
            lp.finish()
        finally:
            lp.close()
    assert produced < size + (16 << 20)


def test_a_pass_that_is_not_stopped_ends_normally() -> None:
    data = os.urandom(1 << 20)
    blob = gzip.compress(data, compresslevel=1)
    lp = LayerPass(BytesReader(blob), of_bytes(blob), Compression.GZIP, "test", DEFAULT,
                   stop=threading.Event())
    try:
        assert b"".join(lp.chunks()) == data
        lp.finish()
    finally:
        lp.close()
