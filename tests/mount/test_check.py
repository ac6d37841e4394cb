"""`ocifs check`: real images check clean; each kind of damage gives its line and exit 1;
unusable sources exit 2 with one line; the mountpoint form checks the mount's source."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, copy_layout, ocifs
from tests.helpers import layoutbuilder, tarbuilder

TARBALLS = FIXTURES / "go-containerregistry" / "pkg" / "v1" / "tarball" / "testdata"


def check(*args: str | Path) -> tuple[int, list[str], str]:
    """(exit code, stdout lines, stderr) of `ocifs check`; never a traceback."""
    result = ocifs("check", *map(str, args), timeout=120)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result.returncode, result.stdout.splitlines(), result.stderr


def check_json(*args: str | Path) -> dict[str, Any]:
    result = ocifs("check", "--json", *map(str, args), timeout=120)
    assert result.returncode in (0, 1), result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def problems(lines: list[str]) -> list[str]:
    """The finding lines that are problems (not warnings, unreferenced or the summary)."""
    return [ln for ln in lines[:-1]
            if not ln.startswith(("warning: ", "unreferenced: ", "(the source"))]


def manifest_of(layout: Path, ref: str) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_text())
    entry = next(e for e in index["manifests"]
                 if e.get("annotations", {}).get(layoutbuilder.REF) == ref)
    doc: dict[str, Any] = json.loads(blob(layout, entry["digest"]).read_bytes())
    return doc


def blob(layout: Path, digest: str) -> Path:
    alg, hex_ = digest.split(":", 1)
    return layout / "blobs" / alg / hex_


@pytest.fixture
def tampered(images: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the umoci layout (tags v1 and v2) to damage."""
    return copy_layout(images["layout"], tmp_path / "copy")


@pytest.mark.parametrize("kind", ["layout", "oci", "oci.gz", "docker", "docker.zst"])
def test_images_made_by_umoci_and_skopeo_check_clean(images: dict[str, Path], kind: str) -> None:
    code, lines, err = check(images[kind])
    assert code == 0, [*lines, err]
    assert lines[-1].startswith(f"{images[kind]}: clean"), lines
    assert "0 layer(s)" not in lines[-1]


def test_the_readme_sample_and_fixtures_check_clean(sample_layout: Path) -> None:
    for source in (sample_layout, FIXTURES / "regclient" / "testdata" / "testrepo",
                   TARBALLS / "test_bundle.tar", TARBALLS / "test_link.tar",
                   TARBALLS / "test_load_manifest.tar", TARBALLS / "hello-world-v25.tar"):
        code, lines, err = check(source)
        assert code == 0 and "clean" in lines[-1], (source, lines, err)


def test_flipped_byte_in_a_layer(tampered: Path) -> None:
    layer = manifest_of(tampered, "v1")["layers"][0]["digest"]
    path = blob(tampered, layer)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    code, lines, _ = check(tampered)
    assert code == 1
    bad = problems(lines)
    assert any(ln.startswith(f"layer {layer} (ref 'v1' > manifest ")
               and "does not match its digest" in ln for ln in bad), bad
    assert "1 problem(s)" in lines[-1] or "2 problem(s)" in lines[-1], lines


def test_truncated_blob(tampered: Path) -> None:
    layer = manifest_of(tampered, "v1")["layers"][0]
    path = blob(tampered, layer["digest"])
    os.truncate(path, layer["size"] // 2)
    code, lines, _ = check(tampered)
    assert code == 1
    assert any(f"layer {layer['digest']} (ref 'v1'" in ln
               and f"is {layer['size'] // 2} bytes; its descriptor says {layer['size']}" in ln
               for ln in lines), lines
    assert f"blob {layer['digest']}: content hashes to " in "\n".join(lines)


def test_missing_blob_and_quick_mode(tampered: Path) -> None:
    config = manifest_of(tampered, "v2")["config"]["digest"]
    blob(tampered, config).unlink()
    for extra in ([], ["--quick"]):
        code, lines, _ = check(*extra, tampered)
        assert code == 1
        assert any(ln.startswith(f"config {config} (ref 'v2' > manifest ")
                   and ln.endswith("missing (not in the source)") for ln in lines), lines
    assert "quick" in lines[-1]


def test_wrong_diff_id(tmp_path: Path) -> None:
    lay = layoutbuilder.Layout(tmp_path / "lay")
    layers = layoutbuilder.simple_layers(lay)
    wrong = layoutbuilder.sha256(b"not this layer")
    lay.tag(lay.image(layers, diff_ids=[layers[0][1], wrong]), "img")
    code, lines, _ = check(tmp_path / "lay")
    assert code == 1
    assert problems(lines) == [
        f"layer {layers[1][0]['digest']} (ref 'img' > manifest "
        f"{lay.refs[0]['digest']} layers[1]): uncompressed content hashes to {layers[1][1]}; "
        f"the config's rootfs.diff_ids[1] says {wrong}"
    ], lines


def test_invalid_manifest_json_and_nested_index(tmp_path: Path) -> None:
    lay = layoutbuilder.Layout(tmp_path / "lay")
    good = lay.image(layoutbuilder.simple_layers(lay))
    bad = lay.blob(b'{"schemaVersion": 2,', layoutbuilder.OCI_MANIFEST)
    lay.tag(lay.index([good, bad]), "multi")
    code, lines, _ = check(tmp_path / "lay")
    assert code == 1
    nested = lay.refs[0]["digest"]
    assert problems(lines) == [
        f"manifest {bad['digest']} (ref 'multi' > index {nested}): invalid JSON at line 1 "
        "column 21: Expecting property name enclosed in double quotes"
    ], lines
    doc = check_json(tmp_path / "lay")
    assert doc["clean"] is False and doc["counts"]["layers"] == 2


def test_wrongly_named_and_stray_files(tampered: Path) -> None:
    layer = manifest_of(tampered, "v1")["layers"][0]["digest"]
    alg, real = layer.split(":")
    other = "0" * 64
    shutil.copy(blob(tampered, layer), tampered / "blobs" / alg / other)
    (tampered / "blobs" / alg / "notes.txt").write_text("hi\n")
    code, lines, _ = check(tampered)
    assert code == 1
    assert f"blob sha256:{other}: content hashes to sha256:{real}, not to its name " \
           "(blob corrupt)" in lines
    assert "blobs/sha256/notes.txt: stray a regular file: the name is not a sha256 digest" \
        in lines
    # the wrongly named copy is also unreferenced: what gc would remove
    assert any(ln.startswith(f"unreferenced: blob sha256:{other}: ") for ln in lines)


def test_fifo_and_symlink_in_blobs_are_reported_never_opened(tampered: Path) -> None:
    layer = manifest_of(tampered, "v1")["layers"][0]["digest"]
    path = blob(tampered, layer)
    path.unlink()
    os.mkfifo(path)  # a blocking open would hang the check (and this test's timeout)
    hex_link = "1" * 64
    os.symlink("/etc/passwd", tampered / "blobs" / "sha256" / hex_link)
    code, lines, _ = check(tampered)
    assert code == 1
    assert f"blobs/{layer.replace(':', '/')}: is a FIFO; blobs must be regular files " \
           "(not read)" in lines
    assert f"blobs/sha256/{hex_link}: is a symlink; blobs must be regular files (not read)" \
        in lines
    assert any(ln.startswith(f"layer {layer} (ref 'v1'") and ln.endswith("missing (not in "
               "the source)") for ln in lines)


def test_unusable_sources_exit_2_with_one_line(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("a")
    cases = {
        tmp_path / "nothing": "no such file or directory",
        fifo: "is a FIFO",
        notes: "oci-layout: missing (not an OCI image layout)",
        TARBALLS / "content.tar": "not an image archive",
    }
    for source, reason in cases.items():
        code, lines, err = check(source)
        assert (code, lines) == (2, []), (source, err)
        assert err.count("\n") == 1 and reason in err and str(source) in err, err
    assert check()[0] == 2  # usage


def test_broken_index_json_is_a_problem_and_blobs_are_still_checked(tampered: Path) -> None:
    index = tampered / "index.json"
    index.write_bytes(index.read_bytes()[:40])
    code, lines, _ = check(tampered)
    assert code == 1
    assert lines[0].startswith("index.json: invalid JSON at line "), lines
    assert "0 document(s)" in lines[-1] and " 0 bytes hashed" not in lines[-1]


def test_damaged_archives(images: dict[str, Path], tmp_path: Path) -> None:
    flipped = tmp_path / "flipped.tar"
    data = bytearray(images["oci"].read_bytes())
    data[len(data) // 3] ^= 0x01  # inside the 3 MB layer that holds big.bin
    flipped.write_bytes(bytes(data))
    code, lines, err = check(flipped)
    assert code == 1, (lines, err)
    assert any(ln.startswith("layer sha256:") and "(ref 'v1' > manifest " in ln
               and ln.endswith("does not match its digest (blob corrupt)") for ln in lines), lines
    truncated = tmp_path / "cut.tar.gz"  # index.json comes last: nothing left to check
    data = bytearray(images["oci.gz"].read_bytes())
    truncated.write_bytes(bytes(data[: len(data) * 2 // 3]))
    code, lines, err = check(truncated)
    assert (code, lines) == (2, []), err
    assert err.count("\n") == 1 and "cut.tar.gz: archive is truncated" in err, err


def test_mountpoint_form(tampered: Path, mount_image: Any) -> None:
    mnt = mount_image(tampered)
    code, lines, _ = check(mnt.path)
    assert code == 0, lines
    assert lines[-2] == f"(the source of the mount {mnt.path})"
    assert lines[-1].startswith(f"{tampered}: clean")
    assert sorted(os.listdir(mnt.path / "refs")) == ["v1", "v2"]  # the mount is untouched
    layer = manifest_of(tampered, "v2")["layers"][0]["digest"]
    blob(tampered, layer).unlink()
    code, lines, _ = check(mnt.path)
    assert code == 1 and any(ln.startswith(f"layer {layer} (ref 'v2'") for ln in lines)
    doc = check_json(mnt.path)
    assert doc["mountpoint"] == str(mnt.path) and doc["source"] == str(tampered)
    assert not doc["clean"]


def test_layer_that_is_not_a_tar(tmp_path: Path) -> None:
    lay = layoutbuilder.Layout(tmp_path / "lay")
    junk = b"\x1f\x8b" + os.urandom(2000)
    desc = lay.blob(junk, tarbuilder.MEDIA["gz"])
    lay.tag(lay.image([(desc, layoutbuilder.sha256(b""))]), "junk")
    code, lines, _ = check(tmp_path / "lay")
    assert code == 1
    assert any(ln.startswith(f"layer {desc['digest']} (ref 'junk'") and "gzip" in ln
               for ln in lines), lines


def test_index_entry_problems_and_warnings_are_reported_once(tampered: Path) -> None:
    index = json.loads((tampered / "index.json").read_text())
    index["manifests"].append({**index["manifests"][0]})  # the same ref name twice
    index["manifests"].append({"mediaType": layoutbuilder.OCI_MANIFEST, "digest": "sha256:xyz",
                               "size": 3})
    text = json.dumps(index).replace('"schemaVersion": 2', '"schemaVersion": 2, '
                                     '"schemaVersion": 2')
    (tampered / "index.json").write_text(text)
    code, lines, _ = check(tampered)
    assert code == 1
    name = index["manifests"][0]["annotations"][layoutbuilder.REF]
    assert lines[:-1] == [
        f"index.json: manifests[{len(index['manifests']) - 1}]: invalid sha256 digest "
        "'sha256:xyz' (entry not checked)",
        "warning: index.json: duplicate JSON key 'schemaVersion' (the last one is used)",
        f"warning: ref {name!r}: named by 2 index.json entries: a mount shows the last one "
        "(the others under by-digest/)",
        f"warning: unreferenced blobs: not computed: index.json: manifests["
        f"{len(index['manifests']) - 1}]: invalid sha256 digest 'sha256:xyz'",
    ], lines
