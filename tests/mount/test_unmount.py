"""Unmount never waits for background work (RELIABILITY: unmount leaves nothing partial).

Index passes and blob downloads run in worker threads, which trio cannot
cancel: the daemon used to outlive `ocifs umount` until the pass reached the
end of its layer (or the download its last byte). The shutdown path now sets
the store's stop flag and stops the downloads; these tests hold a pass (at the
index gate, `OCIFS_TEST_INDEX_GATE`) or a download (the fault proxy's pause)
and check by order, not by time: the daemon is gone while the gate is still
closed or the proxy still holds the body, and it left no cache entry, no temp
file and no decoder process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocifs.cache import STALE_TEMP_S, DiskCache
from ocifs.errors import Unmounting
from ocifs.layers import serial
from ocifs.layers.store import DATA_KIND, INDEX_KIND
from ocifs.model import digest as digest_mod
from ocifs.registry.options import RegistryOptions
from ocifs.sources.registry import BLOB_KIND, open_registry
from tests.conftest import OCIFS, REPO, _is_mounted, _wait_gone, ocifs, require_fuse, require_tools
from tests.helpers import tarbuilder as tb
from tests.helpers.faultproxy import FaultProxy
from tests.helpers.layoutbuilder import Layout
from tests.helpers.registry import make_big_image, make_ca_and_cert, push, start_registry
from tests.mount.test_index_kill import children_of, comm

#: generous bound for the daemon's exit: without the stop it waits for the gate
#: (120 s) or the held download (an hour), so this only catches a hang
EXIT_BOUND = 60.0


def temp_files(cache_dir: Path) -> list[Path]:
    return [p for p in cache_dir.rglob(".tmp-*") if p.is_file()]


def _unmount_and_wait(m: Any) -> None:
    pid = m.pid
    result = ocifs("umount", str(m.path))
    assert result.returncode == 0, result.stderr
    assert _wait_gone(pid, EXIT_BOUND), "the daemon outlived the unmount"


@pytest.mark.parametrize("decoder", ["thread", "child"])
def test_unmount_during_an_index_pass_stops_it_and_leaves_nothing(
    mount_image: Any, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
    decoder: str,
) -> None:
    if decoder == "child":
        monkeypatch.setenv("OCIFS_DECODER", "child")
    layout = Layout(tmp_path / "layout")
    # 8 MiB that do not compress: the blob is decoded on the other core, and the
    # pass cannot have the rest of the layer in hand when the gate holds it
    late = os.urandom(8 << 20)
    members = [tb.File("first", data=b"one\n"), tb.File("big", data=late),
               tb.File("last", data=b"end\n")]
    desc, _diff_id = layout.layer(members, "gz")
    layout.tag(layout.image([(desc, _diff_id)]), "held")
    gate = tmp_path / "gate"
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")
    monkeypatch.setenv("OCIFS_TEST_INDEX_GATE", f"1:{gate}")
    m = mount_image(layout.path)

    # answered by the running pass, held at the gate before its second member
    assert (m.path / "refs/held/layers/0/first").stat().st_size == 4
    decoders = [c for c in children_of(m.pid) if comm(c) == "igzip"]
    if decoder == "child":
        assert decoders, "no igzip child while the pass runs"

    _unmount_and_wait(m)
    key = desc["digest"]
    # the pass ended by the stop (at the gate or at its next chunk), not at its end
    assert f"indexing layer {key} stopped (unmounting)" in m.log_text()
    for pid in decoders:
        assert _wait_gone(pid), f"decoder {pid} outlived the daemon"
    cache = DiskCache(cache_dir)
    assert cache.get(INDEX_KIND, key, version=serial.FORMAT) is None
    assert not cache.path_for(DATA_KIND, key).exists()
    assert temp_files(cache_dir) == []
    log = m.log_text()
    assert "stopped (unmounting)" in log and "unmounted" in log
    assert " WARNING " not in log

    # a later mount indexes the layer from scratch
    monkeypatch.delenv("OCIFS_TEST_INDEX_GATE")
    m2 = mount_image(layout.path)
    assert (m2.path / "refs/held/layers/0/big").read_bytes() == late
    assert cache.get(INDEX_KIND, key, version=serial.FORMAT) is not None


def test_sigterm_while_waiting_for_another_daemons_index_exits_at_once(
    mount_image: Any, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two mounts, one cache: the second waits for the first's index of a shared layer
    (the entry's build lock); a SIGTERM ends that wait instead of the 600 s bound."""
    layout = Layout(tmp_path / "layout")
    members = [tb.File("first", data=b"one\n"), tb.File("last", data=b"end\n")]
    desc, diff_id = layout.layer(members, "gz")
    layout.tag(layout.image([(desc, diff_id)]), "common")
    gate = tmp_path / "gate"
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")
    monkeypatch.setenv("OCIFS_TEST_INDEX_GATE", f"1:{gate}")
    first = mount_image(layout.path)
    assert (first.path / "refs/common/layers/0/first").stat().st_size == 4  # holds the lock
    second = mount_image(layout.path)
    pid = second.pid
    failures: list[BaseException] = []

    def look() -> None:
        try:
            (second.path / "refs/common/layers/0/last").stat()
        except OSError as exc:
            failures.append(exc)

    looker = threading.Thread(target=look)
    looker.start()
    locks = cache_dir / "locks" / INDEX_KIND
    deadline = time.monotonic() + EXIT_BOUND
    while not any(str(locks) in target for target in open_files(pid)):
        assert time.monotonic() < deadline, "the second daemon never waited for the lock"
        time.sleep(0.01)
    os.kill(pid, signal.SIGTERM)
    assert _wait_gone(pid, EXIT_BOUND), "the daemon waited for the other one's index"
    # the first daemon (held at the gate) has not written the index: the second one
    # stopped waiting for it rather than loading it
    assert DiskCache(cache_dir).get(INDEX_KIND, desc["digest"], version=serial.FORMAT) is None
    looker.join(EXIT_BOUND)
    assert not looker.is_alive() and failures  # its lookup failed: it was stopped
    assert not _is_mounted(second.path)
    assert "signal 15: unmounting" in second.log_text()

    gate.touch()  # the first daemon goes on and caches the index
    assert (first.path / "refs/common/layers/0/last").read_bytes() == b"end\n"
    assert DiskCache(cache_dir).get(INDEX_KIND, desc["digest"], version=serial.FORMAT)


def open_files(pid: int) -> list[str]:
    targets = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
    except OSError:
        pass
    return targets


@contextlib.contextmanager
def registry_behind_proxy(
    tmp_path: Path, size: int, *, tls: bool = False
) -> Iterator[tuple[FaultProxy, str]]:
    """(fault proxy in front of a registry holding a `size`-byte layer, its digest);
    `tls`: the proxy answers HTTPS."""
    require_fuse()
    require_tools("docker-registry", "skopeo")
    layout = tmp_path / "layout"
    layer = make_big_image(layout, size)
    reg = start_registry(tmp_path / "registry")
    cert = None
    if tls:
        _ca, crt, key = make_ca_and_cert(tmp_path / "proxy-tls")
        cert = (crt, key)
    proxy = FaultProxy(reg.host, tls=cert)
    try:
        push(layout, "big", reg, "big:1")
        yield proxy, layer
    finally:
        proxy.close()
        reg.stop()


def test_sigterm_while_a_download_waits_to_retry_exits_before_the_retries(
    mount_image: Any, tmp_path: Path, cache_dir: Path
) -> None:
    """The registry answers 429, Retry-After 30 s: the download thread waits before its
    next attempt. A SIGTERM ends that wait: no second request ever reaches the
    registry, no partial file is left (the unmount used to give the thread 5 s, then
    leave it with its temp file), and the stop is no ERROR."""
    with registry_behind_proxy(tmp_path, 4 << 20) as (proxy, layer):
        proxy.mode, proxy.digest, proxy.fail_next = "busy", layer, 100
        proxy.retry_after = "30"  # the client's cap: the wait cannot end before the signal
        m = mount_image(proxy.ref("big:1"), "--tls-verify=false")
        errors: list[OSError] = []

        def read() -> None:
            try:
                (m.path / "refs/1/layers/0.tar").read_bytes()
            except OSError as exc:
                errors.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        deadline = time.monotonic() + EXIT_BOUND
        while "retrying in 30.00 s" not in m.log_text():
            assert time.monotonic() < deadline, "the download never waited to retry"
            time.sleep(0.005)
        pid = m.pid
        os.kill(pid, signal.SIGTERM)
        assert _wait_gone(pid, EXIT_BOUND)
        reader.join(EXIT_BOUND)
        assert errors  # the read failed: its download was stopped
        assert proxy.refused == [429]  # the wait ended with the signal, not with a retry
    assert temp_files(cache_dir) == []
    assert not DiskCache(cache_dir).path_for(BLOB_KIND, layer).exists()
    log = m.log_text()
    assert "stopped (unmounting)" in log
    assert not [line for line in log.splitlines() if " ERROR " in line]


def test_nothing_is_requested_from_the_registry_after_the_stop(
    tmp_path: Path, cache_dir: Path
) -> None:
    """A read that opens a blob after `stop()` (a request the loop was still answering)
    starts no download, and the client sends nothing more: Unmounting at once."""
    with registry_behind_proxy(tmp_path, 1 << 20) as (proxy, layer):
        proxy.mode, proxy.digest, proxy.fail_next = "unavailable", layer, 100
        options = RegistryOptions(tls_verify=False)
        source = open_registry(proxy.ref("big:1"), options, DiskCache(cache_dir))
        try:
            index = json.loads(source.index_bytes())
            source.manifest_bytes(digest_mod.parse(index["manifests"][0]["digest"]))
            source.stop()
            blob = source.open_blob(digest_mod.parse(layer))
            with pytest.raises(Unmounting):
                blob.pread(0, 4096)
            with pytest.raises(Unmounting):
                source.client.send("GET", source.client.repo_url("tags/list"))
            assert proxy.refused == []  # no request for the blob reached the registry
        finally:
            source.close()
    assert temp_files(cache_dir) == []


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_unmount_during_a_download_stops_it_and_leaves_nothing(
    mount_image: Any, tmp_path: Path, cache_dir: Path, tls: bool
) -> None:
    """Also over TLS, where the stop shuts the socket down under the TLS layer (an
    `SSLSocket.shutdown` from the unmount made the reading thread fail with a
    ValueError and a traceback)."""
    size = 16 << 20
    with registry_behind_proxy(tmp_path, size, tls=tls) as (proxy, layer):
        proxy.mode, proxy.digest, proxy.pause = "slow", layer, 0.0
        proxy.hold_after = 4 << 20  # then nothing more until proxy.resume is set
        m = mount_image(proxy.ref("big:1"), "--tls-verify=false")
        # The index pass reads the layer as it downloads: its first member is
        # answered once the first MiB is in; the proxy holds the rest.
        assert (m.path / "refs/1/layers/0/big.bin").stat().st_size == size
        _unmount_and_wait(m)
        assert not proxy.resume.is_set()  # the download cannot have ended on its own
    cache = DiskCache(cache_dir)
    assert not cache.path_for(BLOB_KIND, layer).exists()
    assert cache.get(INDEX_KIND, layer, version=serial.FORMAT) is None
    assert temp_files(cache_dir) == []
    log = m.log_text()
    assert "stopped (unmounting)" in log and "unmounted" in log
    assert " WARNING " not in log and "Traceback" not in log


def test_a_dead_daemons_temporary_file_goes_at_the_next_mount(
    mount_image: Any, sample_layout: Path, cache_dir: Path
) -> None:
    """A download the unmount could not end (a registry that never sends headers)
    leaves its partial file when the process exits: the next mount removes it. A
    temporary file a live process holds (its flock: `new_temp`) stays, however old."""
    cache = DiskCache(cache_dir)
    dead, dead_file = cache.new_temp(BLOB_KIND)
    dead_file.write(b"partial")
    dead_file.close()  # the writer is gone: nothing holds its lock
    live, live_file = cache.new_temp(BLOB_KIND)  # this process is the live writer
    try:
        live_file.write(b"still coming")
        live_file.flush()
        old = time.time() - 2 * STALE_TEMP_S
        for path in (dead, live):
            os.utime(path, (old, old))
        m = mount_image(sample_layout)
        deadline = time.monotonic() + EXIT_BOUND
        while "removed 1 stale temporary file" not in m.log_text():
            assert time.monotonic() < deadline, "the mount never swept the cache"
            time.sleep(0.01)
        assert not dead.exists()
        assert live.read_bytes() == b"still coming"
    finally:
        live_file.close()
        live.unlink(missing_ok=True)


@pytest.mark.parametrize("name", ["INT", "TERM"])
def test_signal_right_after_the_mount_exists_unmounts_cleanly(
    tmp_path: Path, sample_layout: Path, name: str
) -> None:
    """A Ctrl-C or SIGTERM between `pyfuse3.init` and the loop's signal handler (the
    daemon sends it to itself there, in test mode) unmounts like any other."""
    require_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "ocifs.log"
    env = {**os.environ, "OCIFS_TEST_MODE": "1", "OCIFS_TEST_SIGNAL_AFTER_INIT": name}
    try:
        proc = subprocess.run(
            [*OCIFS, "mount", "-f", "--log", str(log), "--cache-dir", str(tmp_path / "cache"),
             str(sample_layout), str(mnt)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, (proc.returncode, proc.stderr)
        assert not _is_mounted(mnt), "a dead mount was left behind"
        text = log.read_text()
        assert f"signal {getattr(signal, 'SIG' + name).value}: unmounting" in text
        assert "unmounted" in text and "Traceback" not in text
    finally:
        if _is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
