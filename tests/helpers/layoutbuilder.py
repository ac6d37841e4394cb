"""Hand-written OCI layouts for hostile-input tests: JSON with correct digests.

Shares no code with ocifs: blobs are hashed with hashlib, documents written with
json.dumps. Each method returns the descriptor (a dict) that points at what it
wrote, so a test can bend any field of it (size, mediaType, platform...).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests.helpers import tarbuilder

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
REF = "org.opencontainers.image.ref.name"

Desc = dict[str, Any]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    """An OCI image layout directory being written (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.refs: list[Desc] = []
        self.write_index()

    def blob_path(self, desc: Desc | str) -> Path:
        digest = desc if isinstance(desc, str) else desc["digest"]
        return self.path / "blobs" / "sha256" / digest.split(":", 1)[1]

    def blob(self, data: bytes, media_type: str) -> Desc:
        digest = sha256(data)
        self.blob_path(digest).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def json_blob(self, obj: Any, media_type: str) -> Desc:
        return self.blob(json.dumps(obj, indent=1).encode(), media_type)

    def layer(self, members: list[tarbuilder.Member], how: str = "tar") -> tuple[Desc, str]:
        """(descriptor, diff_id) of a layer built from tarbuilder members."""
        tar = tarbuilder.build(members)
        desc = self.blob(tarbuilder.compress(tar, how), tarbuilder.MEDIA[how])
        return desc, sha256(tar)

    def image(
        self,
        layers: list[tuple[Desc, str]],
        *,
        diff_ids: list[str] | None = None,
        media_type: str = OCI_MANIFEST,
        extra: dict[str, Any] | None = None,
    ) -> Desc:
        """A config (diff_ids from the layers unless given) and a manifest over it."""
        config = self.json_blob(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {
                    "type": "layers",
                    "diff_ids": [d for _, d in layers] if diff_ids is None else diff_ids,
                },
            },
            OCI_CONFIG,
        )
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": config,
            "layers": [desc for desc, _ in layers],
        }
        manifest.update(extra or {})
        return self.json_blob(manifest, media_type)

    def index(self, manifests: list[Desc]) -> Desc:
        return self.json_blob(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, OCI_INDEX
        )

    def tag(self, desc: Desc, name: str) -> Desc:
        tagged = {**desc, "annotations": {REF: name}}
        self.refs.append(tagged)
        self.write_index()
        return tagged

    def write_index(self) -> None:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs}
        (self.path / "index.json").write_text(json.dumps(index, indent=1))


def simple_layers(layout: Layout, text: str = "hello\n") -> list[tuple[Desc, str]]:
    """Two small layers: a directory with a file, then a second file."""
    return [
        layout.layer([tarbuilder.Dir("etc"), tarbuilder.File("etc/hello", data=text.encode())]),
        layout.layer([tarbuilder.File("second", data=b"second layer\n")], "gz"),
    ]
