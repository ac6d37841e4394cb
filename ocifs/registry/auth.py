"""Where credentials come from, and what a registry's `WWW-Authenticate` asks for.

Credentials are looked up the way podman and skopeo do, first match wins:
`--creds USER:PASS`, `--authfile FILE`, `$REGISTRY_AUTH_FILE`,
`${XDG_RUNTIME_DIR}/containers/auth.json`, `~/.config/containers/auth.json`,
`~/.docker/config.json`. In the files, `auths` entries carry a base64
`user:password` under `auth` (or separate `username`/`password`); a key may be
`host`, `host/namespace/repo` (the longest matching prefix wins) or a URL such
as `https://index.docker.io/v1/`. Credential helpers (`credHelpers`,
`credsStore`) are not run.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ocifs.errors import InvalidInput
from ocifs.registry.reference import DOCKER_HUB, Reference

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str
    #: where they came from, for error messages ("--creds", a file path)
    origin: str

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def parse_creds(text: str) -> Credentials:
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise InvalidInput("--creds: expected USER:PASSWORD")
    return Credentials(user, password, "--creds")


def default_auth_files() -> list[Path]:
    files: list[Path] = []
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        files.append(Path(env))
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        files.append(Path(runtime) / "containers" / "auth.json")
    home = Path.home()
    config = os.environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    files.append(Path(config) / "containers" / "auth.json")
    docker_config = os.environ.get("DOCKER_CONFIG")
    files.append(
        Path(docker_config) / "config.json" if docker_config else home / ".docker" / "config.json"
    )
    return files


def _normalise_key(key: str) -> str:
    key = re.sub(r"^https?://", "", key)
    if key.startswith(("index.docker.io/v1", "registry-1.docker.io")):
        return DOCKER_HUB
    key = key.removesuffix("/v1/").removesuffix("/v2/").rstrip("/")
    return DOCKER_HUB if key in ("index.docker.io", "registry-1.docker.io") else key


def _entry_credentials(entry: object, origin: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidInput(f"{origin}: `auth` entry is not base64 of USER:PASSWORD") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise InvalidInput(f"{origin}: `auth` entry is not base64 of USER:PASSWORD")
        return Credentials(user, password, origin)
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str) and name:
        return Credentials(name, secret, origin)
    return None


def from_file(path: Path, ref: Reference) -> Credentials | None:
    """Credentials for `ref` in one auth file; None if it has none (or does not exist)."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: cannot read auth file: {exc}") from None
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return None
    wanted = f"{ref.registry}/{ref.repository}"
    best: tuple[int, object] | None = None
    for key, entry in auths.items():
        norm = _normalise_key(str(key))
        matches = wanted == norm or wanted.startswith(norm + "/")
        if matches and (best is None or len(norm) > best[0]):
            best = (len(norm), entry)
    if best is None:
        return None
    return _entry_credentials(best[1], f"{path} ({ref.registry})")


def find(ref: Reference, creds: str | None, authfile: str | None) -> Credentials | None:
    """The credentials to use for `ref`, or None for anonymous access."""
    if creds is not None:
        return parse_creds(creds)
    if authfile is not None:
        path = Path(authfile)
        if not path.exists():
            raise InvalidInput(f"{authfile}: auth file does not exist")
        return from_file(path, ref)
    for path in default_auth_files():
        found = from_file(path, ref)
        if found is not None:
            log.debug("credentials for %s from %s", ref.registry, path)
            return found
    return None


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "basic" or "bearer", lower case
    params: dict[str, str]


_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenge(header: str) -> Challenge | None:
    """`Bearer realm="...",service="...",scope="..."` -> Challenge (first scheme only)."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            break
        value = m.group(2) if m.group(2) is not None else (m.group(3) or "")
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return Challenge(scheme.lower(), params)
