"""Usage mistakes on the real command line: one line naming the argument and the problem.

Each case runs `python -m ocifs ...` as a user would type it and checks the
whole of stderr: exactly one line, exit status 2, no argparse usage block and
no Python wording (`invalid int value`, `argument command:`, `choose from`).
"""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import OCIFS, REPO, ocifs

PYTHONISH = (
    "usage:", "Traceback", "invalid int value", "argument -", "argument COMMAND", "choose from",
    "error:",
)


def _one_line(*args: str, status: int = 2) -> str:
    result = ocifs(*args)
    lines = result.stderr.splitlines()
    assert result.returncode == status, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert not any(word in lines[0] for word in PYTHONISH), lines[0]
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "ocifs: no command given (one of mount, umount, list, status, init, gc, check); "
            "see `ocifs --help`"),
        (("--bogus",), "ocifs: unknown option --bogus (commands: mount, umount, list, status, "
            "init, gc, check); see `ocifs --help`"),
        (("mont", "a", "b"), "ocifs: unknown command 'mont' (did you mean mount? commands: "
            "mount, umount, list, status, init, gc, check); see `ocifs --help`"),
        (("mount",), "ocifs mount: missing SOURCE, MOUNTPOINT; see `ocifs mount --help`"),
        (("mount", "a", "b", "--bogus"),
            "ocifs mount: unknown option --bogus; see `ocifs mount --help`"),
        (("mount", "a", "b", "c"),
            "ocifs mount: unexpected argument 'c'; see `ocifs mount --help`"),
        (("mount", "a", "b", "--log"),
            "ocifs mount: --log needs a value; see `ocifs mount --help`"),
        (("mount", "--cache-size", "5X", "a", "b"),
            "ocifs mount: --cache-size: invalid size '5X' (e.g. 500M, 10G); "
            "see `ocifs mount --help`"),
        (("mount", "--cache-size", "0", "a", "b"),
            "ocifs mount: --cache-size: invalid size '0' (more than 0, e.g. 500M, 10G); "
            "see `ocifs mount --help`"),
        (("check", "-j", "x", "."), "ocifs check: --jobs: invalid value 'x'; "
            "see `ocifs check --help`"),
        (("gc",), "ocifs gc: missing LAYOUT; see `ocifs gc --help`"),
        (("status", "-x", "/tmp"), "ocifs status: unknown option -x; see `ocifs status --help`"),
        (("umount",), "ocifs umount: missing MOUNTPOINT; see `ocifs umount --help`"),
    ],
)
def test_usage_errors_are_one_line(args: tuple[str, ...], expected: str) -> None:
    assert _one_line(*args) == expected


@pytest.mark.parametrize(
    ("source", "hint"),
    [
        ("oci:./no-such-layout:1.0", "without skopeo's `oci:` prefix"),
        ("oci-archive:/no/such.tar", "without skopeo's `oci-archive:` prefix"),
        ("docker:/127.0.0.1:5000/app", "a registry repository is written docker://HOST/REPO"),
        ("DOCKER://127.0.0.1:5000/app", "a registry repository is written docker://HOST/REPO"),
        ("docker//127.0.0.1:5000/app", "a registry repository is written docker://HOST/REPO"),
    ],
)
def test_a_skopeo_style_source_says_how_to_write_it(source: str, hint: str, tmp_path) -> None:
    line = _one_line("mount", source, str(tmp_path), status=1)
    assert line.startswith(f"ocifs: {source}: no such file or directory ("), line
    assert hint in line


def test_help_shows_examples_and_every_command() -> None:
    result = ocifs("--help")
    assert result.returncode == 0
    for command in ("mount", "umount", "list", "status", "init", "gc", "check"):
        assert f"\n    {command} " in result.stdout, command
    assert "ocifs mount ./my-layout /mnt/img" in result.stdout
    assert "docker://" in ocifs("mount", "--help").stdout


def test_an_unforeseen_os_error_is_one_line(tmp_path) -> None:
    """A relative path from a deleted working directory: no traceback."""
    gone = tmp_path / "gone"
    gone.mkdir()
    script = f"cd {gone} && rmdir {gone} && exec env PYTHONPATH={REPO} \"$@\""
    result = subprocess.run(["sh", "-c", script, "sh", *OCIFS, "mount", "./x", "./y"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "ocifs: the current directory (deleted?): No such file or directory"
    ]
