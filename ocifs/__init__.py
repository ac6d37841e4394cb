"""ocifs: mount OCI image layouts and image archives as browsable filesystems."""

from __future__ import annotations

import functools

#: The distribution name (the PyPI name `ocifs` belongs to an unrelated project).
DISTRIBUTION = "ocifs-mount"


@functools.cache
def package_version() -> str:
    """The installed version, from the package metadata (pyproject.toml is the one source).

    Read on first use, not at import: importlib.metadata costs start-up time
    that every `ocifs mount` would pay. Cached: it reads files.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown (not installed: run scripts/install-deps)"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return package_version()
    raise AttributeError(f"module 'ocifs' has no attribute {name!r}")
