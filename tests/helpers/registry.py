"""A real registry for tests: Debian's `docker-registry` (CNCF distribution) on 127.0.0.1.

`start_registry(workdir, ...)` writes a config, starts `docker-registry serve`
on a free port with a throw-away storage directory and waits until `/v2/`
answers; `Registry.stop()` ends it. TLS uses a CA and server certificate made
here with openssl; basic auth an htpasswd file made with `htpasswd -B`. The
registry's access log (one `response completed` line per request) is what
tests count requests with.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.faultproxy import FaultProxy

REGISTRY_BIN = "docker-registry"
USER, PASSWORD = "ocifs", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_ca_and_cert(d: Path, name: str = "server") -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for 127.0.0.1 and localhost."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "ca").mkdir(exist_ok=True)
    # the CA alone in its directory: that directory is a valid --cert-dir
    ca_key, ca_crt = d / "ca.key", d / "ca" / "ca.crt"
    key, csr, crt = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=ocifs test CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_crt),
    )
    run(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    ext = d / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "openssl",
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_crt),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(crt),
    )
    return ca_crt, crt, key


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    workdir: Path
    process: subprocess.Popen[bytes]
    log: Path
    tls: bool
    ca: Path | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def ref(self, repo: str) -> str:
        return f"docker://{self.host}/{repo}"

    def requests(self) -> list[str]:
        """`METHOD URI` of every request answered so far, from the registry's log."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if "response completed" not in line:
                continue
            method = re.search(r"http\.request\.method=(\S+)", line)
            uri = re.search(r'http\.request\.uri=(?:"([^"]*)"|(\S+))', line)
            if method and uri:
                out.append(f"{method.group(1)} {uri.group(1) or uri.group(2)}")
        return out

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_registry(
    workdir: Path,
    *,
    tls: bool = False,
    htpasswd: bool = False,
    token: dict[str, str] | None = None,
    port: int | None = None,
    storage: Path | None = None,
) -> Registry:
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    storage = storage or workdir / "storage"
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "ocifs-test-secret"},
    }
    ca = None
    if tls:
        ca, crt, key = make_ca_and_cert(workdir / "tls")
        config["http"]["tls"] = {"certificate": str(crt), "key": str(key)}  # type: ignore[index]
    if htpasswd:
        pw = workdir / "htpasswd"
        result = subprocess.run(
            ["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True
        )
        pw.write_text(result.stdout)
        config["auth"] = {"htpasswd": {"realm": "ocifs-test", "path": str(pw)}}
    if token:
        config["auth"] = {"token": token}
    cfg = workdir / "config.yml"
    cfg.write_text(json.dumps(config))  # YAML is a superset of JSON
    log = workdir / "registry.log"
    proc = subprocess.Popen(
        [REGISTRY_BIN, "serve", str(cfg)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    reg = Registry(f"127.0.0.1:{port}", workdir, proc, log, tls, ca)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                reg.stop()
                raise RuntimeError("docker-registry did not start listening") from None
            time.sleep(0.05)
    return reg


def push(layout: Path, tag_in_layout: str, reg: Registry, repo_tag: str, *extra: str) -> None:
    """`skopeo copy --all --preserve-digests oci:LAYOUT:TAG docker://HOST/REPO:TAG`."""
    args = ["skopeo", "copy", "-q", "--all", "--preserve-digests"]
    if reg.tls:
        args += ["--dest-cert-dir", str(reg.ca.parent)] if reg.ca else []
    else:
        args += ["--dest-tls-verify=false"]
    args += [*extra, f"oci:{layout}:{tag_in_layout}", f"docker://{reg.host}/{repo_tag}"]
    subprocess.run(args, check=True, capture_output=True, timeout=120)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return bytes(r.read())


def make_big_image(layout: Path, size: int, tag: str = "big") -> str:
    """An OCI layout with one uncompressed layer holding `size` random bytes in /big.bin.

    Returns the layer's digest.
    """
    import hashlib
    import io
    import os
    import tarfile

    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        hexd = hashlib.sha256(data).hexdigest()
        (blobs / hexd).write_bytes(data)
        return f"sha256:{hexd}"

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("big.bin")
        info.size = size
        info.mtime = 1700000000
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    layer = buf.getvalue()
    layer_digest = put(layer)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "config": {},
        }
    ).encode()
    config_digest = put(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    manifest_digest = put(manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": manifest_digest,
                        "size": len(manifest),
                        "annotations": {"org.opencontainers.image.ref.name": tag},
                    }
                ],
            }
        )
    )
    return layer_digest


@contextlib.contextmanager
def big_image_behind_proxy(
    d: Path, size: int, name: str = "big"
) -> Iterator[tuple[Registry, FaultProxy, Path, str]]:
    """A registry of its own (a test may kill it) holding `big:1`, a one-layer image of
    `size` bytes (/big.bin), behind a fault proxy: (registry, proxy, layout, layer
    digest). The layout and the registry's storage go in `d`, named after `name`."""
    layout = d / f"{name}-layout"
    layer = make_big_image(layout, size)
    reg = start_registry(d / f"registry-{name}")
    proxy = FaultProxy(reg.host)
    try:
        push(layout, "big", reg, "big:1")
        yield reg, proxy, layout, layer
    finally:
        proxy.close()
        reg.stop()
