"""Hand-written OCI layouts around hand-built layer blobs (hostile-input tests).

Writes blobs, config, manifest and index.json with correct digests, so the
only oddity in an image is the one a test puts there. Shares no code with ocifs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests.helpers.tarbuilder import compress

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {
    "tar": "application/vnd.oci.image.layer.v1.tar",
    "gz": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zst": "application/vnd.oci.image.layer.v1.tar+zstd",
}


class Layout:
    """An OCI image layout directory being written."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.manifests: list[dict[str, Any]] = []
        self.write_index()

    def blob(self, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        """Store `data`; its descriptor (extra fields such as `platform` added as given)."""
        hexd = hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / "sha256" / hexd).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{hexd}", "size": len(data), **extra}

    def json_blob(self, obj: Any, media_type: str, **extra: Any) -> dict[str, Any]:
        return self.blob(json.dumps(obj).encode(), media_type, **extra)

    def image(self, layers: list[tuple[bytes, str]]) -> dict[str, Any]:
        """An image manifest over `layers`: (uncompressed tar, "tar"|"gz"|"zst")."""
        descs = [self.blob(compress(tar, how), LAYER_TYPES[how]) for tar, how in layers]
        diff_ids = [f"sha256:{hashlib.sha256(tar).hexdigest()}" for tar, _ in layers]
        config = {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": self.json_blob(config, CONFIG),
            "layers": descs,
        }
        return self.json_blob(manifest, MANIFEST)

    def index(self, children: list[dict[str, Any]]) -> dict[str, Any]:
        return self.json_blob(
            {"schemaVersion": 2, "mediaType": INDEX, "manifests": children}, INDEX
        )

    def tag(self, desc: dict[str, Any], name: str) -> None:
        annotations = {"org.opencontainers.image.ref.name": name}
        self.manifests.append({**desc, "annotations": annotations})
        self.write_index()

    def write_index(self) -> None:
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": self.manifests}
        (self.root / "index.json").write_text(json.dumps(index))
