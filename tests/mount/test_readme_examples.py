"""The README's runnable examples, run as written against a real mount.

Code blocks are read from README.md itself, so an example that stops working
(or an edit that breaks one) fails here. `/mnt/img` in an example is replaced
by the test's mountpoint; nothing else is changed. Each line runs in a fresh
empty directory with bash, as a user would paste it.

The `image.tar` examples once included `podman load -i /mnt/img/refs/app:1.0/image.tar`,
which fails (podman splits its argument at the ':'); the README now feeds podman
the archive on its standard input.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, copy_layout, require, require_tools
from tests.mount.test_export import Containerd

README = REPO / "README.md"
#: where `ocifs` is for the examples that call it: this interpreter's venv
OCIFS_BIN = Path(sys.executable).parent


def readme_block(heading: str) -> list[str]:
    """The command lines of the first ```sh block after `heading` (comments dropped)."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.DOTALL)
    assert block is not None, f"no sh block after {heading!r}"
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def test_exporting_examples_work_as_written(mount_image, sample_layout, tmp_path) -> None:
    require_tools("podman", "skopeo", "ctr", "containerd", "tar")
    require(None if os.geteuid() == 0 else "containerd needs root")
    layout = copy_layout(sample_layout, tmp_path / "layout")
    m = mount_image(layout)
    subprocess.run(["mv", "-T", f"{m.path}/refs/sample:1.0", f"{m.path}/refs/app:1.0"],
                   check=True)

    # podman and ctr with private stores (never the machine's images)
    storage = tmp_path / "storage.conf"
    runroot = Path(subprocess.run(["mktemp", "-d", "/tmp/ocifs-podman-XXXXXX"], check=True,
                                  capture_output=True, text=True).stdout.strip())
    storage.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp_path}/podman"\n'
                       f'runroot = "{runroot}"\n')
    (tmp_path / "ctrd").mkdir()
    containerd = Containerd(tmp_path / "ctrd")
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(storage),
           "CONTAINERD_ADDRESS": str(containerd.socket)}
    try:
        examples = readme_block("## Exporting: `image.tar`")
        assert any(line.startswith("podman load") for line in examples)
        for n, example in enumerate(examples):
            assert "/mnt/img/" in example, example
            cwd = tmp_path / f"example{n}"
            cwd.mkdir()
            result = subprocess.run(["bash", "-c", example.replace("/mnt/img", str(m.path))],
                                    cwd=cwd, env=env, capture_output=True, text=True,
                                    timeout=120)
            assert result.returncode == 0, f"{example}\n{result.stderr}"
            if example.startswith("podman load"):
                assert "Loaded image: localhost/app:1.0" in result.stdout, result.stdout
            if "skopeo copy" in example:
                assert (cwd / "out" / "index.json").is_file()
            if example.startswith("tar -tvf"):
                assert " index.json\n" in result.stdout and "blobs/sha256/" in result.stdout
        images = subprocess.run(["ctr", "images", "ls", "-q"], env=env, check=True,
                                capture_output=True, text=True).stdout.split()
        assert "app:1.0" in images, images
    finally:
        containerd.stop()
        subprocess.run(["rm", "-rf", str(runroot)], check=False)


def _refs(layout: Path) -> list[str]:
    index = json.loads((layout / "index.json").read_text())
    return sorted(
        (d.get("annotations") or {}).get("org.opencontainers.image.ref.name", "")
        for d in index["manifests"]
    )


def test_removing_examples_work_as_written(mount_image, sample_layout, tmp_path) -> None:
    """Each line of the README's removal block, on a fresh mount of `./my-layout` holding
    `app:1.0`, `app:stable` and `archive/old`, and one blob nothing references (`<hex>`)."""
    require_tools("umoci", "skopeo")
    examples = readme_block("## Removing: untag, retag, delete blobs, collect garbage")
    assert len(examples) == 5, examples
    expected_refs = [
        ["app:stable", "archive/old"],                   # rmdir refs/app:1.0
        ["app:stable", "archive/old"],                   # mv -T app:1.0 app:stable
        ["app:stable", "archive/app:1.0", "archive/old"],  # mv app:1.0 refs/archive/
        ["app:1.0", "app:stable", "archive/old"],        # rm blobs/sha256/<hex>
        ["app:1.0", "app:stable", "archive/old"],        # ocifs gc ./my-layout
    ]
    stray_hex = "0" * 64
    for n, (example, refs) in enumerate(zip(examples, expected_refs, strict=True)):
        cwd = tmp_path / f"example{n}"
        cwd.mkdir()
        layout = cwd / "my-layout"
        subprocess.run(["skopeo", "copy", "-q", f"oci:{sample_layout}:sample:1.0",
                        f"oci:{layout}:app:1.0"], check=True)
        for extra in ("app:stable", "archive/old"):
            subprocess.run(["skopeo", "copy", "-q", f"oci:{sample_layout}:sample:1.0",
                            f"oci:{layout}:{extra}"], check=True)
        stray = layout / "blobs/sha256" / stray_hex
        stray.write_bytes(b"nothing references this")
        os.utime(stray, (0, 0))  # older than gc's grace period
        m = mount_image(layout)
        command = example.replace("/mnt/img", str(m.path)).replace("<hex>", stray_hex)
        result = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True,
                                text=True, timeout=120,
                                env={**os.environ, "PATH": f"{OCIFS_BIN}:{os.environ['PATH']}"})
        assert result.returncode == 0, f"{example}\n{result.stderr}"
        assert _refs(layout) == refs, example
        if example.startswith(("rm ", "ocifs gc")):
            assert not stray.exists(), example
        else:
            assert stray.exists(), example
