"""Descriptor: the (mediaType, digest, size) triple that points at content."""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from ocifs.errors import InvalidInput, Unsupported
from ocifs.log import once as log_once
from ocifs.model import digest as digest_mod
from ocifs.model.digest import Digest

log = logging.getLogger(__name__)

# RFC 6838 grammar used by the image spec for media types.
_MEDIA_TYPE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)

#: Sizes are int64 in the spec (and in stat): anything larger cannot be a blob.
MAX_SIZE = (1 << 63) - 1

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    platform: Platform | None = field(default=None, compare=False, hash=False)
    artifact_type: str = field(default="", compare=False, hash=False)
    data: bytes | None = field(default=None, compare=False, hash=False)
    # The JSON object this descriptor was parsed from, byte-for-byte semantics kept
    # so `descriptor.json` can show it exactly as written.
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def ref_name(self) -> str | None:
        return self.annotations.get(REF_NAME)


def _str(obj: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: field {key!r} must be a string")
    return value


def parse(obj: object, where: str) -> Descriptor:
    """Validate one descriptor object; `where` names it in error messages."""
    if not isinstance(obj, dict):
        raise InvalidInput(f"{where}: descriptor is not a JSON object")
    media_type = _str(obj, "mediaType", where)
    if not _MEDIA_TYPE.match(media_type):
        raise InvalidInput(f"{where}: invalid mediaType {media_type!r}")
    try:
        dig = digest_mod.parse(obj.get("digest"))
    except (InvalidInput, Unsupported) as exc:
        raise type(exc)(f"{where}: {exc}") from None
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(f"{where}: size must be a non-negative integer")
    if size > MAX_SIZE:
        raise InvalidInput(f"{where}: size {size} is out of range (2^63 and above)")
    annotations = obj.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise InvalidInput(f"{where}: annotations must map strings to strings")
    platform = None
    plat = obj.get("platform")
    if plat is not None:
        if not isinstance(plat, dict):
            raise InvalidInput(f"{where}: platform is not a JSON object")
        platform = Platform(
            os=_str(plat, "os", where),
            architecture=_str(plat, "architecture", where),
            variant=_str(plat, "variant", where, required=False),
            os_version=_str(plat, "os.version", where, required=False),
        )
    data = None
    if "data" in obj:
        encoded = _str(obj, "data", where)
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"{where}: data is not valid base64") from exc
        if len(data) != size or not dig.matches(data):
            # The blob itself stays authoritative; unverifiable inline bytes are never used.
            message = f"{where}: embedded data does not match size and digest; ignored"
            log_once(log, logging.WARNING, message)
            data = None
    return Descriptor(
        media_type=media_type,
        digest=dig,
        size=size,
        annotations=dict(annotations),
        platform=platform,
        artifact_type=_str(obj, "artifactType", where, required=False),
        data=data,
        raw=obj,
    )
