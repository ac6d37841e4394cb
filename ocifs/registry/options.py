"""The `ocifs mount` options for registry sources, named as skopeo names them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ocifs.argtypes import seconds

DEFAULT_REFRESH = 60.0


@dataclass(frozen=True, slots=True)
class RegistryOptions:
    """How to reach a registry (here, not in sources/registry.py, so that parsing the
    command line does not import httpx and the rest of the source)."""

    creds: str | None = None
    authfile: str | None = None
    cert_dir: str | None = None
    tls_verify: bool = True
    #: seconds after which tags are re-resolved; 0: never
    refresh: float = DEFAULT_REFRESH


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("registry sources (docker://HOST[:PORT]/REPO[:TAG|@DIGEST])")
    g.add_argument("--creds", metavar="USER:PASS", help="credentials for the registry")
    g.add_argument(
        "--authfile",
        metavar="FILE",
        help="auth file (default: $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, "
        "~/.config/containers/auth.json, ~/.docker/config.json)",
    )
    g.add_argument(
        "--cert-dir",
        metavar="DIR",
        help="CA certificates (*.crt) and client certificate (*.cert + *.key) for TLS",
    )
    g.add_argument(
        "--tls-verify",
        metavar="BOOL",
        type=_bool,
        default=True,
        nargs="?",
        const=True,
        help="verify the registry's TLS certificate (default true); false also allows "
        "plain http for a registry that does not speak TLS",
    )
    g.add_argument(
        "--refresh",
        metavar="SECONDS",
        type=seconds(7 * 86_400),
        default=DEFAULT_REFRESH,
        help=f"re-resolve tags after this many seconds (default {DEFAULT_REFRESH:g}; 0 never)",
    )


def from_args(args: argparse.Namespace) -> RegistryOptions:
    return RegistryOptions(
        creds=args.creds,
        authfile=args.authfile,
        cert_dir=args.cert_dir,
        tls_verify=args.tls_verify,
        refresh=args.refresh,
    )
