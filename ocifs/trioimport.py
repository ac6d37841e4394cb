"""Import trio without the `ldconfig -p` it runs at import time.

trio names its worker threads through `pthread_setname_np`, and finds the library
holding it with `ctypes.util.find_library("pthread")`, which on Linux runs
`/sbin/ldconfig -p` in a subprocess: ~10 ms of the daemon's start-up, before the
mount can answer (docs/bench.md, start-up). Since glibc 2.34 that function lives
in libc.so.6, which is already loaded; when it is there, the lookup is answered
with it for the duration of the import. Elsewhere (older glibc, musl) the
original lookup runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys


def import_trio() -> None:
    """Import trio (and so make pyfuse3's import cheaper) without forking ldconfig."""
    if "trio" in sys.modules:
        return
    original = ctypes.util.find_library
    libc = _libc_with_setname()

    def find_library(name: str) -> str | None:
        return libc if name == "pthread" and libc else original(name)

    ctypes.util.find_library = find_library
    try:
        import trio  # noqa: F401
    finally:
        ctypes.util.find_library = original


def _libc_with_setname() -> str | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return "libc.so.6" if hasattr(libc, "pthread_setname_np") else None
