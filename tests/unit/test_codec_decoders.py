"""The index pass's decoders: in the pass's thread, a thread ahead, a child process.

Every promise of `LayerPass` is checked for each way of decoding (the child
one forced on small blobs): the bytes, the digest and diff_id, damage showing
what came before it, a blob that ends early, the limits, a reader whose pread
waits for bytes still arriving (a registry download), an early stop, and that
no decoder process outlives its pass.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import threading
import time
from pathlib import Path

import pytest
import zstandard

from ocifs.codec import child, decode
from ocifs.codec.blobio import BytesReader
from ocifs.codec.decode import LayerPass
from ocifs.codec.limits import DEFAULT, Limits
from ocifs.errors import BlobUnavailable, LimitExceeded
from ocifs.layers import indexer
from ocifs.model.digest import of_bytes
from ocifs.model.mediatypes import Compression
from tests.helpers import tarbuilder as tb

MODES = ["inline", "thread", "child"]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """inline: small blobs; thread: big ones; child: big ones with OCIFS_DECODER=child."""
    if request.param == "child":
        for comp in (Compression.GZIP, Compression.ZSTD):
            if child.command(comp) is None:
                pytest.fail(f"{child.TOOLS[comp][0]} is not installed (scripts/install-deps)")
        monkeypatch.setenv("OCIFS_DECODER", "child")
    else:
        monkeypatch.delenv("OCIFS_DECODER", raising=False)
    monkeypatch.setattr(decode, "CHILD_MIN_SIZE", 1 << 62 if request.param == "inline" else 0)
    return str(request.param)


def my_children() -> list[str]:
    """Processes this test process has started and not reaped (any thread's)."""
    found = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                found += f.read().split()
        except FileNotFoundError:  # a thread that just ended
            pass
    return found


@pytest.fixture(autouse=True)
def no_decoder_left() -> object:
    before = set(my_children())
    yield None
    assert set(my_children()) <= before, "a decoder process outlived its pass"


def layer_tar(files: int = 40, size: int = 100_000) -> bytes:
    """Members of random hex text: entropy-coded blocks (a flipped byte breaks
    them), compressed about half, so damage at 2/3 of the blob lands mid-layer."""
    return tb.build(
        [tb.File(f"f{i:03d}", os.urandom(size // 2).hex().encode()) for i in range(files)]
    )


def compress(data: bytes, comp: Compression) -> bytes:
    if comp is Compression.GZIP:
        half = len(data) // 2  # two members: a layer may be concatenated gzip
        return gzip.compress(data[:half], 1) + gzip.compress(data[half:], 1)
    # frames of 512 KiB with checksums (what zstd -T0 / pzstd write): the only damage
    # zstd notices in data bytes is a checksum mismatch at the end of a frame.
    z = zstandard.ZstdCompressor(level=1, write_checksum=True)
    return b"".join(z.compress(data[i : i + (1 << 19)]) for i in range(0, len(data), 1 << 19))


def run_pass(lp: LayerPass) -> bytes:
    try:
        out = b"".join(lp.chunks())
        lp.finish()
    finally:
        lp.close()
    return out


COMPS = [Compression.GZIP, Compression.ZSTD]


@pytest.mark.parametrize("comp", COMPS, ids=["gz", "zst"])
def test_bytes_digest_diff_id_and_copy(mode: str, comp: Compression, tmp_path: Path) -> None:
    raw = layer_tar()
    blob = compress(raw, comp) + (bytes(1000) if comp is Compression.GZIP else b"")
    sink = open(tmp_path / "copy", "w+b")  # noqa: SIM115
    with sink:
        lp = LayerPass(BytesReader(blob), of_bytes(blob), comp, "t", DEFAULT, sink, 1 << 40,
                       want_diff_id=True)
        assert run_pass(lp) == raw
    assert (tmp_path / "copy").read_bytes() == raw
    assert lp.diff_id == f"sha256:{hashlib.sha256(raw).hexdigest()}"
    assert len(lp.crcs) == -(-len(raw) // decode.CRC_BLOCK)


@pytest.mark.parametrize("comp", COMPS, ids=["gz", "zst"])
def test_digest_mismatch_is_never_accepted(mode: str, comp: Compression) -> None:
    blob = compress(layer_tar(), comp)
    lp = LayerPass(BytesReader(blob), of_bytes(blob + b"x"), comp, "t", DEFAULT)
    with pytest.raises(BlobUnavailable, match="does not match its digest"):
        run_pass(lp)


@pytest.mark.parametrize("comp", COMPS, ids=["gz", "zst"])
@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_damaged_layer_lists_the_members_before_the_damage(
    mode: str, comp: Compression, damage: str
) -> None:
    raw = layer_tar(files=60)
    good = compress(raw, comp)
    if damage == "cut":
        blob = good[: len(good) * 2 // 3]
    else:
        pos = len(good) * 2 // 3
        blob = good[:pos] + bytes([good[pos] ^ 0xFF]) * 64 + good[pos + 64 :]
    record, _ = indexer.build(BytesReader(blob), of_bytes(blob), comp, DEFAULT)
    listed = sorted(n for n in record.index.children[0] or {})
    if not (comp is Compression.ZSTD and damage == "cut" and mode != "child"):
        # python-zstandard's reader reports no error for a cut stream: the walker
        # sees the tar end, here in the last member's padding (the zstd CLI says it)
        assert not record.index.complete
        assert record.index.error
    assert 10 < len(listed) < 60, listed
    assert listed == [f"f{i:03d}" for i in range(len(listed))]  # a prefix, in order
    assert record.valid_size <= len(raw)


class ShortReader(BytesReader):
    """Claims more bytes than it has: the blob ends early."""

    @property
    def size(self) -> int:
        return len(self.data) + 4096


@pytest.mark.parametrize("comp", COMPS, ids=["gz", "zst"])
def test_blob_ending_early_fails_the_pass(mode: str, comp: Compression) -> None:
    blob = compress(layer_tar(), comp)
    with pytest.raises(BlobUnavailable, match="ends early"):
        indexer.build(ShortReader(blob), of_bytes(blob), comp, DEFAULT)


@pytest.mark.parametrize("comp", COMPS, ids=["gz", "zst"])
def test_decompressed_limit_stops_the_decoder(mode: str, comp: Compression) -> None:
    zeros = tb.build([tb.File("zeros", bytes(64 << 20))])
    blob = compress(zeros, comp)
    limits = Limits(max_uncompressed=8 << 20)
    with pytest.raises(LimitExceeded, match="more than 8388608 bytes"):
        indexer.build(BytesReader(blob), of_bytes(blob), comp, limits)


class Arriving:
    """A download in progress: pread blocks until the bytes asked for have arrived."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.have = 0
        self.cond = threading.Condition()
        threading.Thread(target=self._arrive, daemon=True).start()

    def _arrive(self) -> None:
        while self.have < len(self.data):
            time.sleep(0.002)
            with self.cond:
                self.have = min(len(self.data), self.have + 50_000)
                self.cond.notify_all()

    @property
    def size(self) -> int:
        return len(self.data)

    def pread(self, offset: int, size: int) -> bytes:
        end = min(offset + size, len(self.data))
        with self.cond:
            self.cond.wait_for(lambda: self.have >= end)
        return self.data[offset:end]

    def close(self) -> None:
        pass


@pytest.mark.parametrize("comp", COMPS, ids=["gz", "zst"])
def test_a_reader_whose_pread_waits_for_bytes(mode: str, comp: Compression) -> None:
    raw = layer_tar()
    blob = compress(raw, comp)
    record, _ = indexer.build(Arriving(blob), of_bytes(blob), comp, DEFAULT)  # type: ignore[arg-type]
    assert record.index.complete
    assert len(record.index.children[0] or {}) == 40
    assert record.diff_id == f"sha256:{hashlib.sha256(raw).hexdigest()}"


@pytest.mark.parametrize("comp", COMPS, ids=["gz", "zst"])
def test_unpack_stops_early_and_still_verifies_the_digest(mode: str, comp: Compression) -> None:
    raw = layer_tar(files=60, size=200_000)
    blob = compress(raw, comp)
    sink = io.BytesIO()
    indexer.unpack(BytesReader(blob), of_bytes(blob), comp, DEFAULT, sink, 3 << 20)
    assert sink.getvalue() == raw[: 3 << 20]
    with pytest.raises(BlobUnavailable, match="does not match its digest"):
        indexer.unpack(BytesReader(blob), of_bytes(b"other"), comp, DEFAULT, io.BytesIO(), 1000)


def test_child_decoder_is_used_for_big_blobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """With OCIFS_DECODER=child a blob over CHILD_MIN_SIZE is decoded by igzip/zstd."""
    monkeypatch.setenv("OCIFS_DECODER", "child")
    blob = compress(layer_tar(files=20), Compression.GZIP)
    assert len(blob) >= decode.CHILD_MIN_SIZE
    lp = LayerPass(BytesReader(blob), of_bytes(blob), Compression.GZIP, "t", DEFAULT)
    chunks = lp.chunks()
    next(chunks)
    seen = my_children()
    assert seen, "no decoder process while the pass runs"
    with open(f"/proc/{seen[0]}/comm") as f:
        assert f.read().strip() == "igzip"
    lp.close()  # abandoned mid-way: the child is killed and reaped
    assert not set(seen) & set(my_children())


def test_a_decoder_that_cannot_start_falls_back_to_a_thread(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OCIFS_DECODER", "child")
    monkeypatch.setattr(child, "command", lambda compression: ("/nonexistent/igzip", "-dc"))
    monkeypatch.setattr(decode, "CHILD_MIN_SIZE", 0)
    raw = layer_tar()
    blob = compress(raw, Compression.GZIP)
    record, _ = indexer.build(BytesReader(blob), of_bytes(blob), Compression.GZIP, DEFAULT)
    assert record.index.complete and len(record.index.children[0] or {}) == 40
    assert record.diff_id == f"sha256:{hashlib.sha256(raw).hexdigest()}"
    assert "cannot start /nonexistent/igzip" in caplog.text


def test_an_abandoned_pass_leaves_no_decoder_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blob that is long compressed but decodes to little (a 32 MiB zstd skippable
    frame) keeps the decoder thread reading and hashing without output; after close()
    without finish() (an error abandoned the pass) it must stop, not wait forever
    on the hashing queue nobody drains."""
    monkeypatch.delenv("OCIFS_DECODER", raising=False)
    monkeypatch.setattr(decode, "CHILD_MIN_SIZE", 0)
    skippable = b"\x50\x2a\x4d\x18" + (32 << 20).to_bytes(4, "little") + bytes(32 << 20)
    blob = compress(layer_tar(files=2), Compression.ZSTD) + skippable
    lp = LayerPass(BytesReader(blob), of_bytes(blob), Compression.ZSTD, "abandoned", DEFAULT)
    chunks = lp.chunks()
    next(chunks)
    lp.close()
    deadline = time.monotonic() + 30
    while any(t.name in ("ocifs-decode", "ocifs-layer-pass") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a decoder thread of an abandoned pass kept running"
        time.sleep(0.05)
