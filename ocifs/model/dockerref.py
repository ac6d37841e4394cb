"""Docker image references, as far as an export needs them.

A docker-archive's `manifest.json` names images in `RepoTags` as familiar
`repo:tag` strings, and readers (containers/image, Docker) refuse anything
else. containerd's exporter turns the image name into such a tag and puts the
bare tag into `org.opencontainers.image.ref.name`; these functions do the same
with the grammar of github.com/distribution/reference.
"""

from __future__ import annotations

import re

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_PATH = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_MAX_NAME = 255
DEFAULT_DOMAIN = "docker.io"


def _split(name: str) -> tuple[str, str, str] | None:
    """(domain, path, tag) of a normalized `name:tag`, or None if it is not one."""
    if "@" in name:
        return None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon <= slash:
        return None  # no tag
    repo, tag = name[:colon], name[colon + 1 :]
    first, _, rest = repo.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, repo
        if "/" not in path:
            path = f"library/{path}"
    if len(domain) + 1 + len(path) > _MAX_NAME:
        return None
    if not (_DOMAIN_RE.match(domain) and _PATH.match(path) and _TAG_RE.match(tag)):
        return None
    return domain, path, tag


def familiar_tag(name: str) -> str | None:
    """`repo:tag` as `docker save` writes it in RepoTags, or None if `name` has no tag."""
    parts = _split(name)
    if parts is None:
        return None
    domain, path, tag = parts
    if domain == DEFAULT_DOMAIN:
        if path.startswith("library/") and path.count("/") == 1:
            path = path[len("library/") :]
        return f"{path}:{tag}"
    return f"{domain}/{path}:{tag}"


def oci_ref_name(name: str) -> str:
    """What containerd writes into `org.opencontainers.image.ref.name` for an image name:
    the tag of a full reference with a registry (`docker.io/library/busybox:latest`
    -> `latest`), else the name itself."""
    first, _, rest = name.partition("/")
    parts = _split(name) if rest else None
    if parts is None or not ("." in first or ":" in first or first == "localhost"):
        return name
    return parts[2]
