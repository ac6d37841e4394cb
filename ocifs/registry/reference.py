"""`docker://HOST[:PORT]/REPO[:TAG|@DIGEST]` references, with skopeo/podman's shorthand rules.

The transport syntax is skopeo's. A first path component that contains a `.` or a
`:`, or is `localhost`, names the registry; anything else is a Docker Hub
repository (`docker://busybox` is `docker.io/library/busybox`). Unlike skopeo, a
reference without tag or digest is not `:latest`: it means the whole repository
(every tag is shown under `refs/`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ocifs.errors import InvalidInput, Unsupported
from ocifs.model import digest as digest_mod
from ocifs.model.digest import Digest
from ocifs.model.reference import COMPONENT_RE as _COMPONENT
from ocifs.model.reference import DOMAIN_RE as _HOST
from ocifs.model.reference import TAG_RE as _TAG

PREFIX = "docker://"
DOCKER_HUB = "docker.io"
#: where Docker Hub's API actually answers
DOCKER_HUB_API = "registry-1.docker.io"

@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed reference; `tag` and `digest` are both None for a whole repository."""

    registry: str  # host[:port] as written (docker.io for the Hub)
    repository: str  # path below the registry, e.g. library/busybox
    tag: str | None = None
    digest: Digest | None = None

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    def __str__(self) -> str:
        text = f"{PREFIX}{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def repo_str(self) -> str:
        """The repository without tag or digest, e.g. `docker://host/repo`."""
        return f"{PREFIX}{self.registry}/{self.repository}"


def is_registry_reference(text: str) -> bool:
    return text.startswith(PREFIX)


def parse(text: str) -> Reference:
    """Parse `docker://...`; InvalidInput with one line saying what is wrong."""
    if not text.startswith(PREFIX):
        raise InvalidInput(f"{text}: not a docker:// reference")
    rest = text[len(PREFIX) :]
    if rest.startswith("/"):
        raise InvalidInput(f"{text}: write docker://HOST/REPO, with two slashes only")
    if not rest:
        raise InvalidInput(f"{text}: no repository named")

    digest: Digest | None = None
    if "@" in rest:
        rest, _, digest_text = rest.partition("@")
        try:
            digest = digest_mod.parse(digest_text)
        except (InvalidInput, Unsupported) as exc:
            raise InvalidInput(f"{text}: {exc}") from None

    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidInput(f"{text}: invalid tag {tag!r}")

    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, path = first, remainder
        if not _HOST.match(registry):
            raise InvalidInput(f"{text}: invalid registry host {registry!r}")
    else:
        registry, path = DOCKER_HUB, rest
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not path:
        raise InvalidInput(f"{text}: no repository named")
    for component in path.split("/"):
        if not _COMPONENT.match(component):
            raise InvalidInput(
                f"{text}: invalid repository name {path!r} (lower case letters, digits "
                "and separators only)"
            )
    if len(path) > 255:
        raise InvalidInput(f"{text}: repository name longer than 255 characters")
    return Reference(registry=registry, repository=path, tag=tag, digest=digest)
