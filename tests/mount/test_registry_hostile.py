"""Hostile and faulty registries: every answer a registry can give wrongly, through a
real mount.

A real registry (Debian's docker-registry) holds a one-layer image; a fault proxy
in front of it (tests/helpers/faultproxy.py, `rules`) answers chosen requests
itself: loops, endless and huge bodies, stalls and trickles, redirect loops,
lying headers, 404s, hang-ups; the token tests use the registry's token mode with
a token endpoint that misbehaves (tests/helpers/tokenserver.py, `mode`).

What each must give (docs/registry.md, "Network failures"): at mount, one line
naming the reference and the problem, exit 1, no mount, no traceback; while
mounted, EIO on what the bad answer was for and nothing else, one log line,
nothing cached, and the daemon gone at once when unmounted. Reads go through a
child process with a time bound (`_probe`), so a hang fails the test instead of
hanging the suite. The client's timeout, retries and backoff are made short for
these tests (OCIFS_TEST_REGISTRY_*, honoured in test mode only).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocifs.cache import DiskCache
from ocifs.sources.registry import BLOB_KIND, MANIFEST_KIND
from tests.conftest import _wait_gone, require_fuse, require_tools
from tests.helpers.faultproxy import (
    FaultProxy,
    Rule,
    endless,
    forward,
    hang_up,
    hold,
    json_answer,
    redirect,
    static,
)
from tests.helpers.registry import (
    PASSWORD,
    USER,
    Registry,
    make_big_image,
    push,
    start_registry,
)
from tests.helpers.tokenserver import TokenServer
from tests.mount.test_registry import _refused
from tests.mount.test_unmount import temp_files

#: bound for a probe or the daemon's exit: only catches a hang (the tests' timeouts
#: are 3 s; the unmount tests set 600 s, so only the stop can end their requests)
BOUND = 90.0
SIZE = 1 << 20  # bytes of the layer's one file
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ERROR_404 = {"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry"}]}


@pytest.fixture(autouse=True)
def short_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIFS_TEST_MODE", "1")
    monkeypatch.setenv("OCIFS_TEST_REGISTRY_TIMEOUT", "3")
    monkeypatch.setenv("OCIFS_TEST_REGISTRY_RETRIES", "2")
    monkeypatch.setenv("OCIFS_TEST_REGISTRY_BACKOFF", "0.05")


class Image:
    def __init__(self, layout: Path, layer: str) -> None:
        self.layout = layout
        self.layer = layer
        index = json.loads((layout / "index.json").read_text())
        self.manifest = index["manifests"][0]["digest"]
        doc = json.loads(self.blob(self.manifest))
        self.config = doc["config"]["digest"]

    def blob(self, digest: str) -> bytes:
        return (self.layout / "blobs/sha256" / digest.split(":")[1]).read_bytes()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Image]]:
    require_fuse()
    require_tools("docker-registry", "skopeo")
    layout = tmp_path_factory.mktemp("hostile-image") / "layout"
    layer = make_big_image(layout, SIZE)
    reg = start_registry(tmp_path_factory.mktemp("registry-hostile"))
    try:
        push(layout, "big", reg, "big:1")
        yield reg, Image(layout, layer)
    finally:
        reg.stop()


@pytest.fixture
def proxy(registry: tuple[Registry, Image]) -> Iterator[FaultProxy]:
    p = FaultProxy(registry[0].host)
    try:
        yield p
    finally:
        p.close()


_PROBE = r"""
import hashlib, os, sys
op, path = sys.argv[1], sys.argv[2]
try:
    if op == "read":
        with open(path, "rb") as f:
            print("ok", hashlib.sha256(f.read()).hexdigest())
    else:
        print("ok", *sorted(os.listdir(path)))
except OSError as exc:
    print("err", exc.errno)
"""


def _probe(op: str, path: Path) -> tuple[str, ...]:
    """("ok", sha256 hex or the names) or ("err", errno), from a child process."""
    out = subprocess.run([sys.executable, "-c", _PROBE, op, str(path)], capture_output=True,
                         text=True, timeout=BOUND, check=True).stdout.split()  # fmt: skip
    return ("err", out[1]) if out[0] == "err" else tuple(out)


def _reads(path: Path, data: bytes) -> None:
    assert _probe("read", path) == ("ok", hashlib.sha256(data).hexdigest())


def _eio(path: Path) -> None:
    assert _probe("read", path) == ("err", str(errno.EIO))


def _error_lines(m: Any) -> list[str]:
    return [line for line in m.log_text().splitlines() if " ERROR " in line]


def _mount(mount_image: Any, proxy: FaultProxy, tmp_path: Path, ref: str = "big:1") -> Any:
    return mount_image(proxy.ref(ref), "--tls-verify=false", cache=tmp_path / "cache")


def _cached(tmp_path: Path, kind: str, digest: str) -> bool:
    return DiskCache(tmp_path / "cache").path_for(kind, digest).exists()


def _the_rest_answers(m: Any, image: Image) -> None:
    """The mount keeps answering: the tag, the manifest, the config (all fetched before
    or besides the bad answer)."""
    assert _probe("list", m.path / "refs") == ("ok", "1")
    assert json.loads((m.path / "index.json").read_bytes())["manifests"]
    _reads(m.path / "refs/1/manifest.json", image.blob(image.manifest))
    _reads(m.path / "refs/1/config.json", image.blob(image.config))


# -- the tag list -----------------------------------------------------------------------

TAGS = r"/v2/big/tags/list\?n=1000$"


@pytest.mark.parametrize("shape", ["itself", "two-page loop", "other host", "not a URL"])
def test_a_tag_list_link_that_loops_or_leaves_is_one_line(proxy, tmp_path, shape) -> None:
    """Before: a `Link` back to the same page was followed 10,000 times (10,000 requests,
    the tags 10,000 times over); one to another host was followed (with the token)."""
    page = {"name": "big", "tags": ["1"]}
    first = '</v2/big/tags/list?n=1000>; rel="next"'
    second = '</v2/big/tags/list?n=1000&last=1>; rel="next"'
    links = {"itself": first, "two-page loop": second,
             "other host": '<http://127.0.0.2:9/v2/big/tags/list?n=1000>; rel="next"',
             "not a URL": '<http://[::1/x>; rel="next"'}  # fmt: skip
    proxy.rules.append(Rule(TAGS, json_answer(page, {"Link": links[shape]})))
    proxy.rules.append(Rule(r"last=1$", json_answer(page, {"Link": first})))
    line = _refused(tmp_path, proxy.ref("big"), "--tls-verify=false")
    expected = {"itself": "leads back to it", "two-page loop": "leads back to it",
                "other host": "leads to another host", "not a URL": "is not a URL"}  # fmt: skip
    assert proxy.ref("big") in line and expected[shape] in line, line
    assert len([r for r in proxy.requests if "/tags/list" in r]) <= 2 * 2  # http + https tries


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_an_endless_tag_list_is_refused_at_its_limit(proxy, tmp_path, framing) -> None:
    """Before: the whole body was read into memory (an endless one: until memory ran out)."""
    length = None if framing == "chunked" else 1 << 40
    proxy.rules.append(Rule(TAGS, endless(b'{"tags": ["', b'a", "a' * 8192, length=length)))
    line = _refused(tmp_path, proxy.ref("big"), "--tls-verify=false")
    assert "tags/list" in line and "larger than the 16777216-byte limit" in line, line
    # read up to the limit (chunked) or not at all (the length says it all)
    assert proxy.sent < (40 << 20), proxy.sent


def test_too_many_tags_is_one_line(proxy, tmp_path) -> None:
    proxy.rules.append(Rule(TAGS, json_answer({"tags": [f"t{i}" for i in range(100_001)]})))
    line = _refused(tmp_path, proxy.ref("big"), "--tls-verify=false")
    assert "more than 100000 tags" in line and "big:TAG" in line, line


def test_tag_names_that_are_not_tags_are_left_out(mount_image, proxy, tmp_path) -> None:
    """Before: each name went into a request URL as is (`../../x` walked out of the
    repository's path, `a?b` became a query) and into the tree."""
    bad = ["../../v2/other/manifests/x", "a?b", "x/y", ".hidden", "a" * 129, "t\nx"]
    proxy.rules.append(Rule(TAGS, json_answer({"name": "big", "tags": ["1", *bad]})))
    m = _mount(mount_image, proxy, tmp_path, "big")
    assert _probe("list", m.path / "refs") == ("ok", "1")
    asked = [r for r in proxy.requests if "/manifests/" in r]
    assert asked and all(r.startswith(("HEAD /v2/big/manifests/1", "GET /v2/big/manifests/sha"))
                         for r in asked), asked  # fmt: skip
    assert m.log_text().count("which is not a valid tag; not shown") == len(bad)


# -- manifests ---------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_an_endless_manifest_is_eio_at_its_limit(
    mount_image, registry, proxy, tmp_path, framing
) -> None:
    """Before: read whole into memory, then compared with the 64 MiB limit, and fetched
    again by each access (the listing, the open, the read)."""
    image = registry[1]
    length = None if framing == "chunked" else 1 << 40
    proxy.rules.append(Rule(f"/manifests/{image.manifest}$",
                            endless(b"{", b" " * 65536, length=length)))  # fmt: skip
    m = _mount(mount_image, proxy, tmp_path)
    m.expect_log(r"larger than the 67108864-byte limit")
    _eio(m.path / "refs/1/manifest.json")
    assert "limit" in (m.path / "refs/1/error.txt").read_text()
    assert _probe("list", m.path / "refs") == ("ok", "1")
    # one fetch, read up to the limit (chunked) or not at all (the length says it all);
    # the listing and the reads right after it get the same error without a new one
    fetches = [r for r in proxy.requests if r.startswith("GET") and image.manifest in r]
    assert 1 <= len(fetches) <= 2, fetches  # 2: only if the probes took over 5 s
    assert proxy.sent < len(fetches) * (80 << 20), proxy.sent
    with open(f"/proc/{m.pid}/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    assert peak < 1 << 20, f"daemon peak RSS {peak} KiB"  # KiB: 1 GiB, far above 2 x 64 MiB
    assert not _cached(tmp_path, MANIFEST_KIND, image.manifest)


def test_a_manifest_of_another_size_than_its_head_said_is_eio(
    mount_image, registry, proxy, tmp_path
) -> None:
    """Before: served with the HEAD's size (a file whose st_size and bytes disagree)."""
    image = registry[1]
    real = len(image.blob(image.manifest))
    proxy.rules.append(Rule(r"/manifests/1$", forward(set_response={
        "Content-Length": str(real + 7)}), method="HEAD"))  # fmt: skip
    m = _mount(mount_image, proxy, tmp_path)
    m.expect_log(rf"manifest has {real} bytes, the registry said {real + 7}")
    _eio(m.path / "refs/1/manifest.json")
    assert not _cached(tmp_path, MANIFEST_KIND, image.manifest)


def test_a_lying_docker_content_digest(mount_image, registry, proxy, tmp_path) -> None:
    """The header only says which digest to ask for: a digest the registry does not
    have is EIO on that ref (404 from the registry), the rest of the mount answers;
    on a manifest fetched by tag it is a mount error (its bytes hash otherwise)."""
    image = registry[1]
    bogus = "sha256:" + "0" * 64
    proxy.rules.append(Rule(r"/manifests/1$", forward(set_response={
        "Docker-Content-Digest": bogus}), method="HEAD"))  # fmt: skip
    m = _mount(mount_image, proxy, tmp_path)
    m.expect_log(r"404 MANIFEST_UNKNOWN")
    assert _probe("list", m.path / "refs") == ("ok", "1")
    _eio(m.path / "refs/1/manifest.json")
    assert "404" in (m.path / "refs/1/error.txt").read_text()
    assert not _cached(tmp_path, MANIFEST_KIND, bogus)

    proxy.rules[:] = [
        Rule(r"/manifests/1$", forward(set_response={"Docker-Content-Digest": "",
             "Content-Type": "text/plain"}), method="HEAD"),
        Rule(r"/manifests/1$", forward(set_response={"Docker-Content-Digest": bogus}),
             method="GET"),
    ]  # fmt: skip
    line = _refused(tmp_path, proxy.ref("big:1"), "--tls-verify=false")
    assert f"Docker-Content-Digest says {bogus}" in line and image.manifest in line, line


def test_a_tag_whose_answers_lie_is_left_out_of_the_repository(mount_image, proxy, tmp_path):
    """A whole-repository mount: a tag whose HEAD claims a manifest over the limit, and
    one whose manifest (fetched by tag) hashes otherwise than its Docker-Content-Digest,
    are left out with a warning each; the rest mounts. Before: either failed the whole
    mount. Mounted alone, such a tag is the one-line mount error."""
    doc = b'{"schemaVersion": 2}'
    plain = {"Content-Type": "text/plain"}
    proxy.rules += [
        Rule(TAGS, json_answer({"tags": ["1", "huge", "liar"]})),
        Rule(r"/manifests/huge$", static(200, b"", {"Content-Type": OCI_MANIFEST,
             "Docker-Content-Digest": "sha256:" + "1" * 64}, length=1 << 30), method="HEAD"),
        Rule(r"/manifests/liar$", static(200, b"", plain, length=len(doc)), method="HEAD"),
        Rule(r"/manifests/liar$", static(200, doc, {**plain,
             "Docker-Content-Digest": "sha256:" + "2" * 64}), method="GET"),
    ]  # fmt: skip
    m = _mount(mount_image, proxy, tmp_path, "big")
    assert _probe("list", m.path / "refs") == ("ok", "1")
    log = m.log_text()
    assert "big:huge: huge: the registry says its manifest has 1073741824 bytes" in log, log
    assert "big:liar: " in log and "Docker-Content-Digest says sha256:2222" in log, log
    line = _refused(tmp_path, proxy.ref("big:huge"), "--tls-verify=false")
    assert "over the 67108864-byte document limit" in line, line


def test_a_manifest_that_is_not_json_shows_why(mount_image, proxy, tmp_path) -> None:
    """Bytes that hash right but are no manifest: the raw bytes and error.txt, as for a
    local layout; a HEAD with a media type that is no manifest's: fetched by tag and
    hashed, and shown as what it says it is."""
    bad = b'{"schemaVersion": 2, "mediaType": '
    digest = "sha256:" + hashlib.sha256(bad).hexdigest()
    head = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest}
    proxy.rules.append(Rule(r"/manifests/bad$", static(200, b"", head, length=len(bad)),
                            method="HEAD"))  # fmt: skip
    proxy.rules.append(Rule(f"/manifests/{digest}$", static(200, bad, head)))
    proxy.rules.append(Rule(r"/manifests/1$", forward(set_response={
        "Content-Type": "text/html"}), method="HEAD"))  # fmt: skip
    proxy.rules.append(Rule(TAGS, json_answer({"tags": ["1", "bad"]})))
    m = _mount(mount_image, proxy, tmp_path, "big")
    _reads(m.path / "refs/bad/manifest.json", bad)
    assert "JSON" in (m.path / "refs/bad/error.txt").read_text()
    assert "rootfs" in _probe("list", m.path / "refs/1")
    assert (m.path / "refs/1/rootfs/big.bin").stat().st_size == SIZE


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
def test_a_content_coded_answer_is_refused(mount_image, registry, proxy, tmp_path, coding):
    """Answers are asked for without a content coding. Before: httpx decoded whatever
    came (each piece whole: a zstd bomb of a few KiB is gigabytes), and a body that
    did not decode raised an error no caller expected (a traceback in the log)."""
    image = registry[1]
    coded = {"Content-Encoding": coding, "Content-Type": OCI_MANIFEST}
    body = b"\x28\xb5\x2f\xfd?"  # the start of a zstd frame, and nonsense
    proxy.rules.append(Rule(f"/manifests/{image.manifest}$", static(200, body, coded)))
    m = _mount(mount_image, proxy, tmp_path)
    m.expect_log(rf"{coding}-encoded \(asked for without coding\)")
    _eio(m.path / "refs/1/manifest.json")
    assert _probe("list", m.path / "refs") == ("ok", "1")


# -- stalls, trickles, redirects, hang-ups ------------------------------------------------


@pytest.mark.parametrize("what", ["blob", "manifest"])
@pytest.mark.parametrize("how", ["stall", "trickle"])
def test_a_stalled_or_trickling_answer_is_eio_after_the_retries(
    mount_image, registry, proxy, tmp_path, what, how
) -> None:
    """A stall ends with the read timeout; a trickle (a byte every 0.2 s: slow-loris)
    with the pace rule (under 1 KiB/s over a timeout's span). Before: a trickle
    was waited for as long as it lasted (the read hung)."""
    image = registry[1]
    digest = image.layer if what == "blob" else image.manifest
    cut = {"stall_at": 100} if how == "stall" else {"trickle_at": 100}
    proxy.rules.append(Rule(f"/{what}s/{digest}$", forward(**cut), method="GET"))
    m = _mount(mount_image, proxy, tmp_path)
    cause = "timed out" if how == "stall" else r"stalled: \d+ bytes in \d+ s"
    m.expect_log(cause)
    m.expect_log(rf"{'blob' if what == 'blob' else 'manifest'} {digest}")
    m.expect_log(r"layer sha256:[0-9a-f]{64}")
    if what == "blob":
        _eio(m.path / "refs/1/layers/0.tar")
        _reads(m.path / "refs/1/config.json", image.blob(image.config))
        assert not _cached(tmp_path, BLOB_KIND, image.layer)
    else:
        _eio(m.path / "refs/1/manifest.json")
        assert not _cached(tmp_path, MANIFEST_KIND, image.manifest)
    assert _probe("list", m.path / "refs") == ("ok", "1")
    assert [line for line in _error_lines(m) if "attempts" in line], m.log_text()


@pytest.mark.parametrize("where", ["blob", "mount"])
def test_a_redirect_loop_is_one_line(mount_image, registry, proxy, tmp_path, where) -> None:
    """Before: httpx's TooManyRedirects, which the client did not catch: a traceback
    at mount, an `unexpected failure` with a traceback in the daemon's log."""
    image = registry[1]
    if where == "mount":
        proxy.rules.append(Rule(r"^/v2/$", redirect("/v2/?again")))
        proxy.rules.append(Rule(r"^/v2/\?again$", redirect("/v2/")))
        line = _refused(tmp_path, proxy.ref("big:1"), "--tls-verify=false")
        assert "redirect loop" in line and proxy.ref("big:1") in line, line
        return
    blob = f"/v2/big/blobs/{image.layer}"
    proxy.rules.append(Rule(f"{blob}$", redirect(f"{blob}?signed=1")))
    proxy.rules.append(Rule(r"\?signed=1$", redirect(blob)))
    m = _mount(mount_image, proxy, tmp_path)
    m.expect_log(r"redirect loop")
    m.expect_log(rf"blob {image.layer}")
    _eio(m.path / "refs/1/layers/0.tar")
    _the_rest_answers(m, image)


def test_a_registry_that_hangs_up_on_everything(mount_image, registry, proxy, tmp_path):
    image = registry[1]
    proxy.rules.append(Rule(".", hang_up))
    line = _refused(tmp_path, proxy.ref("big:1"), "--tls-verify=false")
    assert proxy.ref("big:1") in line and "(after 3 attempts)" in line, line

    proxy.rules.clear()
    m = _mount(mount_image, proxy, tmp_path)
    _reads(m.path / "refs/1/config.json", image.blob(image.config))
    proxy.rules.append(Rule(".", hang_up))  # from now on, every connection
    m.expect_log(r"disconnected without sending a response")
    m.expect_log(rf"blob {image.layer}")
    _eio(m.path / "refs/1/layers/0.tar")
    _the_rest_answers(m, image)
    assert not _cached(tmp_path, BLOB_KIND, image.layer)


def test_a_404_for_a_blob_the_manifest_names(mount_image, registry, proxy, tmp_path) -> None:
    image = registry[1]
    proxy.rules.append(Rule(f"/blobs/{image.layer}$", static(404, json.dumps(ERROR_404).encode(),
                            {"Content-Type": "application/json"})))  # fmt: skip
    m = _mount(mount_image, proxy, tmp_path)
    m.expect_log(r"404 BLOB_UNKNOWN: blob unknown to registry")
    m.expect_log(rf"blob {image.layer}")
    _eio(m.path / "refs/1/layers/0.tar")
    _the_rest_answers(m, image)
    assert not _cached(tmp_path, BLOB_KIND, image.layer)
    errors = _error_lines(m)
    assert len([e for e in errors if "404 BLOB_UNKNOWN" in e]) == 1, errors
    # the line names the request once (was: "GET URL: URL: 404 …")
    assert all(e.count(f"/blobs/{image.layer}") == 1 for e in errors), errors


def test_a_200_for_a_range_request_is_skipped_forward(mount_image, registry, proxy, tmp_path):
    """The first answer breaks off half-way; the resumed request's Range is ignored (200,
    the whole blob): its first half is skipped, the blob reads right."""
    image = registry[1]
    blob = f"/blobs/{image.layer}$"
    half = len(image.blob(image.layer)) // 2
    proxy.rules.append(Rule(blob, forward(cut_at=half), method="GET", times=1))
    proxy.rules.append(Rule(blob, forward(drop_request=("Range",)), method="GET"))
    m = _mount(mount_image, proxy, tmp_path)
    _reads(m.path / "refs/1/layers/0.tar", image.blob(image.layer))
    assert len([r for r in proxy.requests if r.startswith("GET") and image.layer in r]) == 2
    assert "resuming in" in m.log_text()


def test_a_206_for_another_range_is_eio(mount_image, registry, proxy, tmp_path) -> None:
    """The resumed request gets a 206 whose Content-Range starts elsewhere: those bytes
    cannot be placed; the download fails (EIO), nothing is cached, nothing is skewed."""
    image = registry[1]
    blob = f"/blobs/{image.layer}$"
    size = len(image.blob(image.layer))
    proxy.rules.append(Rule(blob, forward(cut_at=size // 2), method="GET", times=1))
    proxy.rules.append(Rule(blob, forward(set_response={
        "Content-Range": f"bytes 5-{size - 1}/{size}"}), method="GET"))  # fmt: skip
    m = _mount(mount_image, proxy, tmp_path)
    m.expect_log(rf"asked for bytes {size // 2}- but got range 'bytes 5-")
    m.expect_log(rf"blob {image.layer}")
    _eio(m.path / "refs/1/layers/0.tar")
    _the_rest_answers(m, image)
    assert not _cached(tmp_path, BLOB_KIND, image.layer)


def test_a_content_length_shorter_than_the_body(mount_image, registry, proxy, tmp_path):
    """The answer says half the length and sends everything: the first half is taken, the
    rest asked for with a range (the connection is not reused), and the blob reads right."""
    image = registry[1]
    blob = f"/blobs/{image.layer}$"
    half = len(image.blob(image.layer)) // 2
    proxy.rules.append(Rule(blob, forward(set_response={"Content-Length": str(half)}),
                            method="GET", times=1))  # fmt: skip
    m = _mount(mount_image, proxy, tmp_path)
    _reads(m.path / "refs/1/layers/0.tar", image.blob(image.layer))
    _the_rest_answers(m, image)


def test_a_content_length_longer_than_the_body(mount_image, registry, proxy, tmp_path):
    """A manifest whose answer claims more bytes than it sends, then closes: a broken
    answer, retried, then EIO on that manifest only (never a short document)."""
    image = registry[1]
    real = len(image.blob(image.manifest))
    proxy.rules.append(Rule(f"/manifests/{image.manifest}$", forward(set_response={
        "Content-Length": str(real + 100)}), method="GET"))  # fmt: skip
    m = _mount(mount_image, proxy, tmp_path)
    m.expect_log(r"peer closed connection without sending complete message body")
    _eio(m.path / "refs/1/manifest.json")
    assert _probe("list", m.path / "refs") == ("ok", "1")
    gets = [r for r in proxy.requests if r.startswith("GET") and image.manifest in r]
    # the first try and 2 retries (test timings), then the error; 6 only if the probes
    # took over FAILURE_HOLD (5 s), after which a new read tries again
    assert len(gets) in (3, 6), gets
    assert not _cached(tmp_path, MANIFEST_KIND, image.manifest)


def test_readers_of_a_manifest_being_fetched_wait_for_that_fetch(
    mount_image, registry, proxy, tmp_path, monkeypatch
) -> None:
    """Readers of a manifest (its blob file, read by several processes at once, and
    refs/1/manifest.json) while its fetch is under way wait for that fetch instead
    of each making its own (before: one GET, of up to 64 MiB, per reader)."""
    image = registry[1]

    def late(h: Any, p: FaultProxy) -> None:  # the real answer, once the readers wait
        p.resume.wait(BOUND)
        forward()(h, p)

    proxy.rules.append(Rule(f"/manifests/{image.manifest}$", late, method="GET", times=1))
    # the held answer must not time out (a retry is a second GET) on a loaded machine
    monkeypatch.setenv("OCIFS_TEST_REGISTRY_TIMEOUT", "60")
    m = _mount(mount_image, proxy, tmp_path)
    blob = m.path / "blobs/sha256" / image.manifest.split(":")[1]
    probes = [("read", blob)] * 3 + [("read", m.path / "refs/1/manifest.json")]
    results: list[tuple[str, ...]] = []
    threads = [threading.Thread(target=lambda op=op, path=path: results.append(
        _probe(op, path))) for op, path in probes]  # fmt: skip
    for t in threads:
        t.start()
    deadline = time.monotonic() + BOUND
    while not any(r.startswith("GET") and image.manifest in r for r in proxy.requests):
        assert time.monotonic() < deadline, "the manifest was never asked for"
        time.sleep(0.05)
    time.sleep(2.0)  # the other readers reach the fetch and wait for it
    proxy.resume.set()
    for t in threads:
        t.join(BOUND)
    digest = hashlib.sha256(image.blob(image.manifest)).hexdigest()
    assert results == [("ok", digest)] * 4, results
    gets = [r for r in proxy.requests if r.startswith("GET") and image.manifest in r]
    assert len(gets) == 1, gets


# -- the unmount while an answer is held ---------------------------------------------------


@pytest.mark.parametrize("what", ["blob headers", "manifest body"])
def test_unmount_while_an_answer_is_held_exits_at_once(
    mount_image, registry, proxy, tmp_path, monkeypatch, what
) -> None:
    """The registry accepted the request and sends nothing more (no headers for the blob,
    no more body for the manifest), with a 600 s timeout: only the stop can end it.
    Before: a manifest request held the worker thread, and trio.run with it, for the
    whole timeout; a blob request waiting for headers was left running after 5 s (no
    socket known to stop) with its partial file removed from under it."""
    monkeypatch.setenv("OCIFS_TEST_REGISTRY_TIMEOUT", "600")
    image = registry[1]
    if what == "blob headers":
        proxy.rules.append(Rule(f"/blobs/{image.layer}$", hold, method="GET"))
        target = "refs/1/layers/0.tar"
    else:
        proxy.rules.append(Rule(f"/manifests/{image.manifest}$", forward(stall_at=10)))
        target = "refs/1/manifest.json"
    m = _mount(mount_image, proxy, tmp_path)
    failed: list[BaseException] = []

    def read() -> None:
        try:
            (m.path / target).read_bytes()
        except OSError as exc:
            failed.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + BOUND
    key = image.layer if what == "blob headers" else image.manifest
    while not any(r.startswith("GET") and key in r for r in proxy.requests):
        assert time.monotonic() < deadline, f"{target} was never asked for"
        time.sleep(0.01)
    time.sleep(0.2)  # the daemon's thread is inside the request now (not asserted on)
    pid = m.pid
    os.kill(pid, signal.SIGTERM)  # the reader keeps the mount busy: a plain umount would fail
    assert _wait_gone(pid, BOUND), "the daemon waited for the held answer"
    assert not proxy.resume.is_set()  # the answer cannot have ended on its own
    reader.join(BOUND)
    assert failed, "the read did not fail"
    assert temp_files(tmp_path / "cache") == []
    log = m.log_text()
    assert " ERROR " not in log and "Traceback" not in log, log
    if what == "blob headers":  # the download ended by the stop, not left behind
        assert f"/v2/big/blobs/{image.layer}: stopped (unmounting)" in log, log


# -- the token endpoint ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, registry: tuple[Registry, Image]
) -> Iterator[tuple[Registry, TokenServer]]:
    tokens = TokenServer(tmp_path_factory.mktemp("token"), USER, PASSWORD)
    reg = start_registry(tmp_path_factory.mktemp("registry-token"),
                         token=tokens.registry_config())  # fmt: skip
    try:
        push(registry[1].layout, "big", reg, "big:1", "--dest-creds", f"{USER}:{PASSWORD}")
        yield reg, tokens
    finally:
        reg.stop()
        tokens.close()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("html", "answer is not JSON (text/html)"),
        ("huge", "answer larger than the 1048576-byte limit"),
        ("error", "500 Internal Server Error"),
        ("expired", "the registry refused a fresh token from http://127.0.0.1:"),
    ],
)
def test_a_misbehaving_token_endpoint_is_one_line(token_registry, tmp_path, mode, expected):
    """Before: an endless token answer was read whole into memory; a token the registry
    refuses again (expired) was reported as rejected credentials."""
    require_fuse()
    reg, tokens = token_registry
    tokens.mode, tokens.asked = mode, 0
    try:
        line = _refused(tmp_path, reg.ref("big:1"), "--tls-verify=false", "--creds",
                        f"{USER}:{PASSWORD}")  # fmt: skip
    finally:
        tokens.mode = "ok"
    assert reg.ref("big:1") in line and expected in line, line
    assert tokens.asked <= 2 * 3  # bounded: the retries, over https then http at most


def test_the_token_flow_still_works(mount_image, token_registry, registry, tmp_path) -> None:
    reg, _tokens = token_registry
    m = mount_image(reg.ref("big:1"), "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}",
                    cache=tmp_path / "cache")  # fmt: skip
    _reads(m.path / "refs/1/layers/0.tar", registry[1].blob(registry[1].layer))


def test_a_redirect_elsewhere_carries_no_credentials(
    mount_image, token_registry, registry, tmp_path
) -> None:
    """The registry (token auth) sends blobs to storage elsewhere (another origin, here
    the plain registry holding the same blob): the bearer token is not sent there, and
    the bytes arrive right."""
    reg, _tokens = token_registry
    image = registry[1]
    front, storage = FaultProxy(reg.host), FaultProxy(registry[0].host)
    try:
        seen: list[str | None] = []

        def remember(h: Any, p: FaultProxy) -> None:
            seen.append(h.headers.get("Authorization"))
            forward()(h, p)

        storage.rules.append(Rule(r"/blobs/", remember))
        front.rules.append(Rule(f"/blobs/{image.layer}$", redirect(
            f"http://{storage.host}/v2/big/blobs/{image.layer}"), method="GET"))  # fmt: skip
        m = mount_image(front.ref("big:1"), "--tls-verify=false", "--creds",
                        f"{USER}:{PASSWORD}", cache=tmp_path / "cache")  # fmt: skip
        _reads(m.path / "refs/1/layers/0.tar", image.blob(image.layer))
        assert seen == [None]
        assert any(r.startswith("GET") and image.layer in r for r in front.requests)
    finally:
        front.close()
        storage.close()
