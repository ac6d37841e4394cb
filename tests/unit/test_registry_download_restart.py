"""A registry download that fails and is started again under a running index pass.

The pass does not hash a registry download itself (`blobio.SelfVerifying`): it
trusts the download's digest check. When the download it started on fails and a
later read starts another one, the pass holds bytes of both, and the second
download's match says nothing about the first's bytes: the pass must fail, not
cache an index built from bytes no hash covered. The network is scripted here
(`_fetch` writes what a hostile registry would send) to place the restart
exactly under the pass; everything else is the real download and the real pass.
"""

from __future__ import annotations

import os
import threading
import time
import types
from pathlib import Path

import pytest

import ocifs.sources.registry as registry_source
from ocifs.cache import DiskCache
from ocifs.codec.decode import LayerPass
from ocifs.codec.limits import DEFAULT
from ocifs.errors import BlobUnavailable
from ocifs.model.digest import of_bytes
from ocifs.model.mediatypes import Compression

MiB = 1 << 20
GOOD = os.urandom(4 * MiB)
BAD = bytes(4 * MiB)


class _TwoDownloads(registry_source._Download):
    """First download: 2 MiB of wrong bytes, then the connection drops (after
    `first_read` is set). Every later download: the right bytes."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.started = 0
        self.first_read = threading.Event()

    def _fetch(self, out: int) -> None:
        self.started += 1
        if self.started == 1:
            os.pwrite(out, BAD[: 2 * MiB], 0)
            self._written(2 * MiB)
            self.first_read.wait(10)
            raise registry_source._Failed("the answer ended early (after 1 attempts)")
        os.pwrite(out, GOOD, 0)
        self._written(len(GOOD))


def _download(tmp_path: Path) -> _TwoDownloads:
    client = types.SimpleNamespace(
        repo_url=lambda tail: "http://registry.invalid/" + tail,
        stopping=threading.Event(),
        options=types.SimpleNamespace(retries=0, backoff=0, timeout=1),
    )
    source = types.SimpleNamespace(cache=DiskCache(tmp_path / "cache"), client=client)
    return _TwoDownloads(source, of_bytes(GOOD), len(GOOD))


def _wait_past_failure_hold(d: _TwoDownloads) -> None:
    deadline = time.monotonic() + 10
    while d._error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert d._error is not None, "the first download did not fail"
    while time.monotonic() - d._failed_at <= registry_source.FAILURE_HOLD:
        time.sleep(0.01)


def test_a_pass_over_a_restarted_download_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_source, "FAILURE_HOLD", 0.2)
    d = _download(tmp_path)
    lp = LayerPass(d, of_bytes(GOOD), Compression.NONE, "test", DEFAULT)
    chunks = lp.chunks()
    first = next(chunks)  # from the first download's partial file
    assert first == BAD[: len(first)]
    d.first_read.set()
    _wait_past_failure_hold(d)  # the pass was busy elsewhere meanwhile
    rest = b"".join(chunks)  # the next read starts the second download
    assert d.started == 2
    assert first + rest != GOOD  # what the pass saw: bytes of both downloads
    with pytest.raises(BlobUnavailable, match="not verified"):
        lp.finish()
    lp.close()


def test_the_verdict_names_the_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_source, "FAILURE_HOLD", 0.2)
    d = _download(tmp_path)
    token = d.claim_verification()
    assert token is not None
    d.first_read.set()
    _wait_past_failure_hold(d)
    assert d.pread(0, len(GOOD)) == GOOD  # the second download, verified
    assert d.started == 2
    assert not d.verified(token)
    again = d.claim_verification()  # a new pass over the verified copy
    assert again is not None and again != token and d.verified(again)
    d.stop()
