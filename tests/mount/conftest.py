"""Fixtures shared by the `.import/` mount tests (test_import, test_import_faults)."""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import layoutcheck
from tests.mount.test_import import empty_layout


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A umoci layout with two tags, and skopeo-made archives of it."""
    base = tmp_path_factory.mktemp("images")
    src = str(base / "src")
    layoutcheck.make_layout(src, "v1", {"a.txt": b"a\n", "big.bin": os.urandom(3_000_000)})
    layoutcheck.make_layout(src, "v2", {"b.txt": b"b\n"})
    out = {"layout": Path(src)}
    out["oci"] = Path(layoutcheck.to_archive(src, "v1", str(base / "oci.tar"), "oci-archive"))
    out["docker"] = Path(layoutcheck.to_archive(
        src, "v2", str(base / "docker.tar"), "docker-archive", "busybox:1"))
    gz = base / "oci.tar.gz"
    gz.write_bytes(gzip.compress(out["oci"].read_bytes(), 1))
    out["oci.gz"] = gz
    subprocess.run(["zstd", "-q", "-f", str(out["docker"])], check=True)
    out["docker.zst"] = Path(f"{out['docker']}.zst")
    return out


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    return empty_layout(tmp_path / "layout")
