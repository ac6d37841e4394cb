"""Image reference names, validated as containerd validates them before tagging.

`parse_docker_ref` follows the distribution/reference grammar with docker's
normalization, as `ctr images import` applies it to docker-save `RepoTags`
(`normalize.ParseDockerRef`): `busybox:1` -> `docker.io/library/busybox:1`,
and `''`, upper-case repositories, `../../etc:passwd` or names with spaces are
refused. `check_ref_name` is the OCI image spec's grammar for
`org.opencontainers.image.ref.name` (`v1`, `app/1.0`, a full reference).
`familiar_tag` and `oci_ref_name` name an exported image as containerd's
exporter and `docker save` do (RepoTags, the OCI ref name).
"""

from __future__ import annotations

import re

from ocifs.errors import InvalidInput

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$",
    re.ASCII,
)
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
#: one repository path component, a tag, a registry `host[:port]`, each whole
COMPONENT_RE = re.compile(rf"^{_PATH_COMPONENT}$", re.ASCII)
TAG_RE = re.compile(rf"^{_TAG}$", re.ASCII)
DOMAIN_RE = re.compile(rf"^{_DOMAIN}$", re.ASCII)
NAME_TOTAL_MAX = 255
DEFAULT_DOMAIN = "docker.io"
_OCI_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_OCI_REF_NAME = re.compile(rf"^{_OCI_COMPONENT}(?:/{_OCI_COMPONENT})*$")


def _split_domain(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"
                     and first.lower() == first):
        return DEFAULT_DOMAIN, name
    return first, rest


def parse_docker_ref(text: str, *, allow_digest: bool = False) -> str:
    """The normalized reference (`docker.io/library/busybox:1`); InvalidInput if invalid.

    A name with a digest is refused unless `allow_digest`: a RepoTag must be a tag.
    """
    if not isinstance(text, str) or not text:
        raise InvalidInput(f"{text!r}: not a valid image reference (empty)")
    if _HEX64.match(text):
        raise InvalidInput(f"{text!r}: not a valid image reference (a bare 64-hex id)")
    domain, remainder = _split_domain(text)
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = f"library/{remainder}"
    repo = remainder.split("@", 1)[0].rsplit(":", 1)[0] if ":" in remainder.rsplit("/", 1)[-1] \
        else remainder.split("@", 1)[0]
    if repo.lower() != repo:
        raise InvalidInput(f"{text!r}: not a valid image reference (repository name "
                           "must be lowercase)")
    full = f"{domain}/{remainder}"
    m = _REFERENCE.match(full)
    if m is None:
        raise InvalidInput(f"{text!r}: not a valid image reference")
    if len(m.group("name")) > NAME_TOTAL_MAX:
        raise InvalidInput(f"{text!r}: not a valid image reference (name over "
                           f"{NAME_TOTAL_MAX} characters)")
    if m.group("digest"):
        if allow_digest:
            return full
        raise InvalidInput(f"{text!r}: a digest reference, not a tag")
    if not m.group("tag"):
        full += ":latest"
    return full


def check_ref_name(text: object) -> str:
    """An `org.opencontainers.image.ref.name` value; InvalidInput if outside the grammar."""
    if not isinstance(text, str) or not _OCI_REF_NAME.match(text):
        raise InvalidInput(f"{text!r}: not a valid ref name (OCI image spec grammar)")
    return text


def _has_domain(first: str) -> bool:
    return "." in first or ":" in first or first == "localhost" or first.lower() != first


def _tagged(name: str) -> str | None:
    """The normalized `domain/path:tag` of a name that carries a tag (no digest), else None."""
    if "@" in name or name.rfind(":") <= name.rfind("/"):
        return None
    try:
        return parse_docker_ref(name)
    except InvalidInput:
        return None


def familiar_tag(name: str) -> str | None:
    """`repo:tag` as `docker save` writes it in RepoTags; None if `name` has no tag."""
    full = _tagged(name)
    if full is None:
        return None
    domain, path = full.split("/", 1)
    if domain == DEFAULT_DOMAIN:
        if path.startswith("library/") and path.count("/") == 1:
            path = path[len("library/") :]
        return path
    return full


def oci_ref_name(name: str) -> str:
    """What containerd writes into `org.opencontainers.image.ref.name` for an image name:
    the tag of a full reference with a registry (`docker.io/library/busybox:latest`
    -> `latest`), else the name itself."""
    first, slash, _ = name.partition("/")
    full = _tagged(name) if slash and _has_domain(first) else None
    return name if full is None else full.rsplit(":", 1)[1]
