"""Issue 12: a repository in a real registry (Debian's docker-registry) mounted lazily.

Every image pushed with skopeo must give the same tree as the same image
mounted from its local layout; auth, TLS and refresh are checked against the
real registry, request counts from its own log.
"""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocifs.cache import DiskCache
from tests.conftest import FIXTURES, OCIFS, REPO, require_fuse, require_tools
from tests.helpers import treecompare
from tests.helpers.faultproxy import FaultProxy
from tests.helpers.registry import (
    PASSWORD,
    USER,
    Registry,
    big_image_behind_proxy,
    make_big_image,
    push,
    start_registry,
)
from tests.helpers.tokenserver import TokenServer

REGCLIENT = FIXTURES / "regclient/testdata/testrepo"
#: multi-platform indexes, a nested index, artifacts, docker and OCI manifests
REGCLIENT_TAGS = ["v1", "v2", "v3", "a1", "a2", "a3", "ai", "child", "a-docker", "a-docker-oci"]
SAMPLE_TAGS = {"1.0": "sample:1.0", "1.0-zstd": "sample:1.0-zstd"}
BIG = 4 * 1024 * 1024  # bytes of the big test layers


def _require() -> None:
    require_fuse()
    require_tools("docker-registry", "skopeo", "htpasswd", "openssl")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, sample_layout: Path) -> Iterator[Registry]:
    """A plain-HTTP registry holding the sample image and the regclient test repo."""
    _require()
    reg = start_registry(tmp_path_factory.mktemp("registry-plain"))
    try:
        for tag, name in SAMPLE_TAGS.items():
            push(sample_layout, name, reg, f"sample:{tag}")
        for tag in REGCLIENT_TAGS:
            push(REGCLIENT, tag, reg, f"testrepo:{tag}")
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, sample_layout: Path) -> Iterator[Registry]:
    """TLS with a CA made here, and htpasswd (bcrypt) basic auth; also a 4 MiB layer."""
    _require()
    reg = start_registry(tmp_path_factory.mktemp("registry-tls"), tls=True, htpasswd=True)
    try:
        creds = ("--dest-creds", f"{USER}:{PASSWORD}")
        push(sample_layout, "sample:1.0", reg, "sample:1.0", *creds)
        big = tmp_path_factory.mktemp("big-tls")
        reg.extra["big"] = (big, make_big_image(big, BIG))
        push(big, "big", reg, "big:1", *creds)
        yield reg
    finally:
        reg.stop()


def _snapshot(path: Path) -> dict[str, tuple]:
    snap = treecompare.snapshot(path)
    # these two name the ref: the tag here, `repo:tag` in a layout
    snap.pop("descriptor.json", None)
    snap.pop("image.tar", None)
    return snap


def _blob_members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.name.startswith("blobs/") and m.isfile()
        }


def _same_tree(reg_dir: Path, layout_dir: Path) -> None:
    expected, actual = _snapshot(layout_dir), _snapshot(reg_dir)
    assert len(actual) > 3
    assert treecompare.diff(expected, actual) == []
    if (layout_dir / "image.tar").exists():
        assert _blob_members(reg_dir / "image.tar") == _blob_members(layout_dir / "image.tar")


def test_every_pushed_image_equals_its_local_layout(mount_image, plain, sample_layout) -> None:
    local_sample = mount_image(sample_layout)
    remote_sample = mount_image(plain.ref("sample"), "--tls-verify=false")
    assert sorted(os.listdir(remote_sample.path / "refs")) == sorted(SAMPLE_TAGS)
    for tag, name in SAMPLE_TAGS.items():
        _same_tree(remote_sample.path / "refs" / tag, local_sample.path / "refs" / name)
        assert (remote_sample.path / "refs" / tag / "rootfs/etc/os-release").read_bytes() == (
            local_sample.path / "refs" / name / "rootfs/etc/os-release"
        ).read_bytes()

    local = mount_image(REGCLIENT)
    remote = mount_image(plain.ref("testrepo"), "--tls-verify=false")
    assert sorted(os.listdir(remote.path / "refs")) == sorted(REGCLIENT_TAGS)
    for tag in REGCLIENT_TAGS:
        _same_tree(remote.path / "refs" / tag, local.path / "refs" / tag)
    # by-digest/ holds every manifest reachable from the tags, like the layout's
    for name in os.listdir(remote.path / "by-digest"):
        assert (local.path / "by-digest" / name).is_dir()


def test_one_tag_or_digest_shows_just_that(mount_image, plain, sample_layout) -> None:
    m = mount_image(plain.ref("sample:1.0-zstd"), "--tls-verify=false")
    assert os.listdir(m.path / "refs") == ["1.0-zstd"]
    index = json.loads((sample_layout / "index.json").read_text())
    digest = next(
        d["digest"]
        for d in index["manifests"]
        if d["annotations"]["org.opencontainers.image.ref.name"] == "sample:1.0"
    )
    m2 = mount_image(plain.ref(f"sample@{digest}"), "--tls-verify=false")
    assert os.listdir(m2.path / "refs") == [digest]
    text = (m2.path / "refs" / digest / "rootfs/etc/os-release").read_text()
    assert "ocifs sample" in text


def test_mount_fetches_nothing_until_opened_and_a_second_mount_uses_the_cache(
    mount_image, plain, tmp_path, sample_layout
) -> None:
    cache = tmp_path / "shared-cache"
    before = len(plain.requests())
    m = mount_image(plain.ref("sample:1.0"), "--tls-verify=false", cache=cache)
    at_mount = plain.requests()[before:]
    assert not [r for r in at_mount if "/blobs/" in r], at_mount
    assert len([r for r in at_mount if "/manifests/" in r]) <= 2, at_mount
    # read everything: layers, config, rootfs
    subprocess.run(
        ["find", str(m.path / "refs"), "-type", "f", "-exec", "cat", "{}", "+"],
        check=True,
        capture_output=True,
    )
    first = plain.requests()[before:]
    assert [r for r in first if "/blobs/" in r]
    subprocess.run(["fusermount3", "-u", str(m.path)], check=True)

    again = len(plain.requests())
    m2 = mount_image(plain.ref("sample:1.0"), "--tls-verify=false", cache=cache)
    subprocess.run(
        ["find", str(m2.path / "refs"), "-type", "f", "-exec", "cat", "{}", "+"],
        check=True,
        capture_output=True,
    )
    second = plain.requests()[again:]
    # only the API check and the tag's manifest: nothing it already has
    assert "HEAD /v2/sample/manifests/1.0" in second, second
    assert all(r in ("GET /v2/", "HEAD /v2/sample/manifests/1.0") for r in second), second
    assert "indexing layer" not in m2.log_text()

    # layer indexes are keyed by digest: the local layout of the same image finds them
    local = mount_image(sample_layout, cache=cache)
    subprocess.run(["find", str(local.path / "refs/sample:1.0/rootfs")], check=True,
                   capture_output=True)  # fmt: skip
    assert "indexing layer" not in local.log_text()


def test_tls_and_basic_auth(mount_image, secure, sample_layout, tmp_path) -> None:
    cert_dir = str(secure.ca.parent)
    m = mount_image(
        secure.ref("sample:1.0"), "--cert-dir", cert_dir, "--creds", f"{USER}:{PASSWORD}"
    )
    local = mount_image(sample_layout)
    _same_tree(m.path / "refs/1.0", local.path / "refs/sample:1.0")

    # credentials from an auth file, as podman login writes it
    authfile = tmp_path / "auth.json"
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    authfile.write_text(json.dumps({"auths": {secure.host: {"auth": token}}}))
    # given relative to the caller's directory (the daemon runs in /): still found
    m2 = mount_image(secure.ref("sample"), "--cert-dir", os.path.relpath(cert_dir, REPO),
                     "--authfile", os.path.relpath(authfile, REPO))  # fmt: skip
    assert os.listdir(m2.path / "refs") == ["1.0"]


def test_a_big_blob_over_tls_reads_right(mount_image, secure) -> None:
    """Most of a big body is read from the TLS socket directly (registry/download.py)."""
    layout, layer = secure.extra["big"]
    blob = (layout / "blobs/sha256" / layer.split(":")[1]).read_bytes()
    m = mount_image(
        secure.ref("big:1"), "--cert-dir", str(secure.ca.parent), "--creds", f"{USER}:{PASSWORD}"
    )
    assert (m.path / "refs/1/layers/0.tar").read_bytes() == blob
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        member = tar.extractfile("big.bin")
        assert member is not None
        assert (m.path / "refs/1/rootfs/big.bin").read_bytes() == member.read()


def _refused(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    mnt = tmp_path / f"mnt-refused-{len(list(tmp_path.iterdir()))}"
    mnt.mkdir()
    result = subprocess.run(
        [
            *OCIFS,
            "mount",
            *args[:1],
            str(mnt),
            "--cache-dir",
            str(tmp_path / "c"),
            *args[1:],
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.ismount(mnt) and os.listdir(mnt) == []
    return lines[0]


def test_mount_time_errors_are_one_line_and_leave_no_mount(secure, plain, tmp_path) -> None:
    require_fuse()
    ref = secure.ref("sample:1.0")
    cert = ["--cert-dir", str(secure.ca.parent)]
    line = _refused(tmp_path, ref, *cert, "--creds", f"{USER}:wrong")
    assert ref in line and "rejected" in line
    line = _refused(
        tmp_path, ref, *cert, env={"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    )
    assert ref in line and "credentials" in line
    line = _refused(tmp_path, ref, "--creds", f"{USER}:{PASSWORD}")
    assert ref in line and "TLS" in line
    assert "[SSL" not in line and "_ssl.c" not in line  # Python's decoration, cut
    line = _refused(tmp_path, plain.ref("sample:no-such-tag"), "--tls-verify=false")
    assert "tag 'no-such-tag' not found (404); the repository has: 1.0" in line
    line = _refused(tmp_path, plain.ref("no/such/repo"), "--tls-verify=false")
    assert "no/such/repo" in line and "404" in line
    line = _refused(tmp_path, plain.ref("no/such/repo:1"), "--tls-verify=false")
    assert "repository 'no/such/repo' not found (404)" in line
    line = _refused(tmp_path, plain.ref("sample"))  # plain http without --tls-verify=false
    assert plain.host in line and "[Errno" not in line
    line = _refused(tmp_path, "docker://no-such-host.invalid/x:1")
    assert "no-such-host.invalid" in line and "unknown host" in line and "[Errno" not in line


def test_tags_pushed_after_the_mount_appear_after_the_refresh(
    mount_image, plain, sample_layout
) -> None:
    m = mount_image(plain.ref("sample"), "--tls-verify=false", "--refresh", "1")
    assert "later" not in os.listdir(m.path / "refs")
    push(sample_layout, "sample:1.0", plain, "sample:later")
    deadline = time.monotonic() + 60
    while "later" not in os.listdir(m.path / "refs"):
        assert time.monotonic() < deadline, "the new tag never appeared"
        time.sleep(0.2)
    assert "ocifs sample" in (m.path / "refs/later/rootfs/etc/os-release").read_text()


# -- faults, served by a proxy in front of the real registry ---------------------------


@pytest.fixture
def big_registry(tmp_path: Path) -> Iterator[tuple[Registry, FaultProxy, Path, str]]:
    """A registry of its own (a test may kill it) with a 4 MiB layer, behind a fault proxy."""
    _require()
    with big_image_behind_proxy(tmp_path, BIG) as registry:
        yield registry


@pytest.fixture
def killable_registry(tmp_path: Path) -> Iterator[tuple[Registry, FaultProxy, str]]:
    """Like big_registry with a 16 MiB layer: more than the kernel buffers between the
    registry and the proxy hold, so killing the registry cuts the transfer."""
    _require()
    with big_image_behind_proxy(tmp_path, 4 * BIG, "huge") as (reg, proxy, _layout, layer):
        yield reg, proxy, layer


def _cached_blobs(cache: Path) -> list[Path]:
    return (
        [
            p
            for p in (cache / "registry-blob").rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        ]
        if (cache / "registry-blob").exists()
        else []
    )


def _read_fails_with_eio(path: Path) -> None:
    with pytest.raises(OSError) as err:
        path.read_bytes()
    assert err.value.errno == errno.EIO


@pytest.mark.parametrize("mode", ["corrupt", "truncate"])
def test_bad_blob_answers_give_eio_and_nothing_wrong_is_cached(
    mount_image, big_registry, tmp_path, mode
) -> None:
    reg, proxy, layout, layer = big_registry
    cache = tmp_path / "fault-cache"
    proxy.mode, proxy.digest = mode, layer
    m = mount_image(proxy.ref("big:1"), "--tls-verify=false", cache=cache)
    m.expect_log(r"GET http://127\.0\.0\.1:\d+/v2/big/blobs/sha256:[0-9a-f]{64}: ")
    m.expect_log(r"blob sha256:[0-9a-f]{64}: ")
    m.expect_log(r"layer sha256:[0-9a-f]{64}")
    _read_fails_with_eio(m.path / "refs/1/layers/0.tar")
    _read_fails_with_eio(m.path / "refs/1/rootfs/big.bin")
    assert os.listdir(m.path / "refs") == ["1"]  # the rest of the mount answers
    assert json.loads((m.path / "refs/1/manifest.json").read_bytes())["layers"]
    log = m.log_text()
    assert f"/v2/big/blobs/{layer}" in log
    assert ("does not match its digest" if mode == "corrupt" else "after") in log
    # cache file names are hashes of the key: ask the cache (was: a file-name check
    # that could never fail)
    committed = DiskCache(cache).path_for("registry-blob", layer)
    assert not committed.exists()
    # the same cache, straight to the registry: the right bytes, nothing stale
    m2 = mount_image(reg.ref("big:1"), "--tls-verify=false", cache=cache)
    blob = layout / "blobs/sha256" / layer.split(":")[1]
    assert (m2.path / "refs/1/layers/0.tar").read_bytes() == blob.read_bytes()
    assert committed.exists()  # the check above looks where a verified copy lands


def test_manifest_not_matching_its_digest_is_refused_and_not_cached(
    mount_image, big_registry, tmp_path
) -> None:
    reg, proxy, layout, _layer = big_registry
    index = json.loads((layout / "index.json").read_text())
    manifest = index["manifests"][0]["digest"]
    cache = tmp_path / "manifest-cache"
    proxy.mode, proxy.digest = "corrupt", manifest
    m = mount_image(proxy.ref("big:1"), "--tls-verify=false", cache=cache)
    m.expect_log(r"does not hash to sha256:[0-9a-f]{64}")
    _read_fails_with_eio(m.path / "refs/1/manifest.json")
    shown = sorted(os.listdir(m.path / "refs/1"))
    assert "rootfs" not in shown and "manifest.json" in shown, shown
    if "error.txt" in shown:  # the reason, inside the mount
        assert "does not hash to" in (m.path / "refs/1/error.txt").read_text()
    assert f"/v2/big/manifests/{manifest}" in m.log_text()
    # the same cache, straight to the registry: the whole tree
    m2 = mount_image(reg.ref("big:1"), "--tls-verify=false", cache=cache)
    assert "rootfs" in os.listdir(m2.path / "refs/1")
    blob = layout / "blobs/sha256" / manifest.split(":")[1]
    assert (m2.path / "refs/1/manifest.json").read_bytes() == blob.read_bytes()


def test_registry_killed_during_a_large_read_gives_eio(mount_image, killable_registry, tmp_path):
    reg, proxy, layer = killable_registry
    proxy.mode, proxy.digest = "slow", layer
    m = mount_image(proxy.ref("big:1"), "--tls-verify=false", cache=tmp_path / "kill-cache")
    m.expect_log(r"GET http://127\.0\.0\.1:\d+/v2/big/blobs/sha256:[0-9a-f]{64}: ")
    result: list[BaseException | bytes] = []

    def read() -> None:
        try:
            result.append((m.path / "refs/1/layers/0.tar").read_bytes())
        except OSError as exc:
            result.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 60
    while proxy.blob_bytes < BIG // 8:
        assert time.monotonic() < deadline, "the read never started"
        time.sleep(0.02)
    reg.kill()
    reader.join(timeout=120)
    assert not reader.is_alive(), "the read hangs"
    assert isinstance(result[0], OSError) and result[0].errno == errno.EIO, result[0]
    assert os.listdir(m.path / "refs") == ["1"]
    assert f"/v2/big/blobs/{layer}" in m.log_text()


def test_token_auth_against_the_registry_in_token_mode(mount_image, sample_layout, tmp_path):
    """The registry's own `auth: token` mode, with the token endpoint in tests/helpers."""
    _require()
    tokens = TokenServer(tmp_path / "token", USER, PASSWORD)
    reg = start_registry(tmp_path / "registry-token", token=tokens.registry_config())
    try:
        push(sample_layout, "sample:1.0", reg, "team/sample:1.0", "--dest-creds",
             f"{USER}:{PASSWORD}")  # fmt: skip
        m = mount_image(reg.ref("team/sample"), "--tls-verify=false", "--creds",
                        f"{USER}:{PASSWORD}")  # fmt: skip
        local = mount_image(sample_layout)
        _same_tree(m.path / "refs/1.0", local.path / "refs/sample:1.0")
        assert "repository:team/sample:pull" in tokens.issued
        line = _refused(tmp_path, reg.ref("team/sample"), "--tls-verify=false", "--creds",
                        f"{USER}:nope")  # fmt: skip
        assert "team/sample" in line and "token endpoint" in line and "401" in line
    finally:
        reg.stop()
        tokens.close()


@pytest.mark.parametrize("mode", ["busy", "unavailable", "truncate"])
def test_429_5xx_and_cut_answers_are_retried(mount_image, big_registry, tmp_path, mode) -> None:
    """Two failures, then the real answer: the read succeeds (cut answers are resumed)."""
    _reg, proxy, layout, layer = big_registry
    proxy.mode, proxy.digest, proxy.fail_next = mode, layer, 2
    m = mount_image(proxy.ref("big:1"), "--tls-verify=false", cache=tmp_path / "retry-cache")
    blob = layout / "blobs/sha256" / layer.split(":")[1]
    assert (m.path / "refs/1/layers/0.tar").read_bytes() == blob.read_bytes()
    expected = {"busy": 429, "unavailable": 503, "truncate": 200}[mode]
    assert proxy.refused[0] == expected and len(proxy.refused) == 2
    assert ("resuming in" if mode == "truncate" else "retrying in") in m.log_text()


def test_chunked_answers_read_right_and_resume(mount_image, big_registry, tmp_path) -> None:
    """Chunked bodies (no Content-Length) take httpx's own path; a cut one is resumed."""
    _reg, proxy, layout, layer = big_registry
    proxy.mode, proxy.digest, proxy.fail_next = "chunked", layer, 1
    m = mount_image(proxy.ref("big:1"), "--tls-verify=false", cache=tmp_path / "chunk-cache")
    blob = layout / "blobs/sha256" / layer.split(":")[1]
    assert (m.path / "refs/1/layers/0.tar").read_bytes() == blob.read_bytes()
    assert len(proxy.refused) == 1 and "resuming in" in m.log_text()


def test_the_cache_size_limit_holds_for_registry_blobs(mount_image, big_registry, tmp_path):
    """A 4 MiB blob with --cache-size 1M: read right, then evicted; the mount still reads it."""
    reg, _proxy, layout, layer = big_registry
    cache = tmp_path / "small-cache"
    m = mount_image(reg.ref("big:1"), "--tls-verify=false", "--cache-size", "1M", cache=cache)
    blob = (layout / "blobs/sha256" / layer.split(":")[1]).read_bytes()
    assert (m.path / "refs/1/layers/0.tar").read_bytes() == blob
    stored = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    assert stored <= 1024 * 1024
    with open(m.path / "refs/1/layers/0.tar", "rb") as f:  # served from the open copy
        f.seek(len(blob) // 2)
        assert f.read(4096) == blob[len(blob) // 2 : len(blob) // 2 + 4096]


def _held_cache_files(pid: int, cache: Path) -> list[tuple[str, int]]:
    """(target, size) of every file under `cache` the daemon holds open, deleted ones too."""
    held = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            size = os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except OSError:
            continue  # closed meanwhile
        if target.startswith(str(cache)):
            held.append((target, size))
    return held


def _disk_use(cache: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in cache.rglob("*") if p.is_file())


def test_repeated_failed_downloads_hold_no_files_or_disk(mount_image, big_registry, tmp_path):
    """Every answer cut short: each failed download's partial file is deleted and closed by
    the time the read fails, so retrying reads do not grow the daemon's open files or the
    cache's disk use (deleted files held open count: their size is read through /proc)."""
    _reg, proxy, _layout, layer = big_registry
    proxy.mode, proxy.digest = "truncate", layer  # every blob answer ends at half
    cache = tmp_path / "failing-cache"
    m = mount_image(proxy.ref("big:1"), "--tls-verify=false", cache=cache)
    m.expect_log(r"GET http://127\.0\.0\.1:\d+/v2/big/blobs/\S+: the answer ended early")
    m.expect_log(r"blob sha256:[0-9a-f]{64}: ")
    blob = m.path / "refs/1/layers/0.tar"
    seen = []
    for attempt in range(3):
        if attempt:
            time.sleep(5.5)  # FAILURE_HOLD: the next read starts a new download
        _read_fails_with_eio(blob)
        held = _held_cache_files(m.pid, cache)
        assert held == [], f"failed download {attempt} still holds {held}"
        seen.append((len(os.listdir(f"/proc/{m.pid}/fd")), _disk_use(cache)))
    assert m.log_text().count("(after 5 attempts)") == 3  # three downloads, each retried
    assert seen[2] == seen[0], seen
    assert _cached_blobs(cache) == []
