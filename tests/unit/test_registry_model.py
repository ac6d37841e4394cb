"""Issue 12: registry references, credential files and auth challenges (no network)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ocifs.errors import InvalidInput
from ocifs.registry import auth
from ocifs.registry.reference import parse


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("docker://busybox", "docker.io", "library/busybox", None, None),
        ("docker://busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("docker://docker.io/library/busybox:3", "docker.io", "library/busybox", "3", None),
        ("docker://index.docker.io/foo/bar", "docker.io", "foo/bar", None, None),
        ("docker://user/app", "docker.io", "user/app", None, None),
        ("docker://localhost/app", "localhost", "app", None, None),
        ("docker://localhost:5000/a/b/c:v1", "localhost:5000", "a/b/c", "v1", None),
        ("docker://127.0.0.1:5000/app", "127.0.0.1:5000", "app", None, None),
        ("docker://quay.io/org/app:1.0-rc_2", "quay.io", "org/app", "1.0-rc_2", None),
        (
            "docker://ghcr.io/o/app@sha256:" + "a" * 64,
            "ghcr.io", "o/app", None, "sha256:" + "a" * 64,
        ),
        (
            "docker://ghcr.io/o/app:t@sha256:" + "b" * 64,
            "ghcr.io", "o/app", "t", "sha256:" + "b" * 64,
        ),
    ],
)  # fmt: skip
def test_references_follow_skopeo_shorthand(text, registry, repository, tag, digest) -> None:
    ref = parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert (str(ref.digest) if ref.digest else None) == digest
    assert ref.api_host == ("registry-1.docker.io" if registry == "docker.io" else registry)
    assert parse(str(ref)) == ref


@pytest.mark.parametrize(
    "text",
    [
        "docker://",
        "docker:///app",
        "docker:///host.io/x",
        "docker:////x",
        "docker://Upper/Case",
        "docker://host.io/app:bad tag",
        "docker://host.io/app@sha256:short",
        "docker://host.io/app@md5:" + "a" * 32,
        "docker://host.io/a//b",
        "oci:/some/layout",
    ],
)
def test_bad_references_are_one_line_errors(text) -> None:
    with pytest.raises(InvalidInput) as err:
        parse(text)
    assert "\n" not in str(err.value)
    if text.startswith("docker:///"):
        assert str(err.value).endswith("with two slashes only")


def _write(path: Path, auths: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths}))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_credentials_from_files_in_podman_and_docker_order(tmp_path, monkeypatch) -> None:
    ref = parse("docker://reg.example:5000/team/app:1")
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home/.config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert auth.find(ref, None, None) is None

    _write(
        tmp_path / "home/.docker/config.json", {"https://reg.example:5000": {"auth": b64("d:1")}}
    )
    assert auth.find(ref, None, None).username == "d"
    _write(tmp_path / "run/containers/auth.json", {"reg.example:5000": {"auth": b64("p:2:colon")}})
    found = auth.find(ref, None, None)
    assert (found.username, found.password) == ("p", "2:colon")
    # a more specific namespace entry wins
    _write(
        tmp_path / "run/containers/auth.json",
        {"reg.example:5000": {"auth": b64("p:2")}, "reg.example:5000/team": {"auth": b64("t:3")}},
    )
    assert auth.find(ref, None, None).username == "t"
    explicit = _write(
        tmp_path / "mine.json", {"reg.example:5000": {"username": "u", "password": "4"}}
    )
    assert auth.find(ref, None, str(explicit)).username == "u"
    assert auth.find(ref, "c:5", str(explicit)).username == "c"
    hub = _write(tmp_path / "hub.json", {"https://index.docker.io/v1/": {"auth": b64("h:6")}})
    assert auth.find(parse("docker://busybox"), None, str(hub)).username == "h"


def test_bad_credentials_are_one_line_errors(tmp_path) -> None:
    ref = parse("docker://reg.example/app")
    with pytest.raises(InvalidInput, match="USER:PASSWORD"):
        auth.find(ref, "no-colon", None)
    bad = _write(tmp_path / "bad.json", {"reg.example": {"auth": "%%%"}})
    with pytest.raises(InvalidInput, match="base64"):
        auth.find(ref, None, str(bad))
    with pytest.raises(InvalidInput, match="does not exist"):
        auth.find(ref, None, str(tmp_path / "missing.json"))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InvalidInput, match="cannot read auth file"):
        auth.find(ref, None, str(tmp_path / "broken.json"))


def test_challenges_are_parsed() -> None:
    c = auth.parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull",error="insufficient_scope"'
    )
    assert c is not None and c.scheme == "bearer"
    assert c.params["realm"] == "https://auth.docker.io/token"
    assert c.params["scope"] == "repository:library/busybox:pull"
    assert c.params["error"] == "insufficient_scope"
    basic = auth.parse_challenge('Basic realm="Registry Realm"')
    assert (
        basic is not None and basic.scheme == "basic" and basic.params["realm"] == "Registry Realm"
    )
    assert auth.parse_challenge("") is None


def test_the_registry_code_does_not_import_pyfuse3() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['pyfuse3'] = None\n"
        "import ocifs.sources.registry, ocifs.registry.options, ocifs.registry.client\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
