"""Issue 13: after the README's setup, `ocifs` is a command on the PATH.

`scripts/install-deps` (what `scripts/test` and `scripts/demo` run) links
.venv/bin/ocifs into /usr/local/bin for root, as `pipx install --global` does;
an ordinary user's ~/.local/bin is covered by tests/mount/test_user.py.
"""

from __future__ import annotations

import os
import subprocess
from importlib.metadata import version

from tests.conftest import REPO, require


def test_install_deps_puts_ocifs_on_roots_path() -> None:
    """The link goes where install-deps is told: /usr/local/bin by default, or the
    OCIFS_BIN_DIR the suite runs with (engineers sharing a machine set it so that
    their runs leave the machine's /usr/local/bin/ocifs alone)."""
    require(None if os.geteuid() == 0 else "root (the /usr/local/bin link is root's)")
    bin_dir = os.environ.get("OCIFS_BIN_DIR", "/usr/local/bin")
    require(None if bin_dir else "OCIFS_BIN_DIR= (empty): install-deps links nowhere")
    subprocess.run(["bash", str(REPO / "scripts/install-deps")], check=True,
                   capture_output=True, timeout=280)
    link = os.path.join(bin_dir, "ocifs")
    assert os.path.realpath(link) == os.path.realpath(REPO / ".venv/bin/ocifs")
    # a login shell's PATH, from anywhere: no `.venv/bin/` prefix needed
    result = subprocess.run(["ocifs", "--version"], capture_output=True, text=True, check=True,
                            cwd="/", env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert result.stdout == f"ocifs {version('ocifs-mount')}\n"
