"""OS names for ocifs's own threads, so `top -H`, `ps -L`, `perf` and
/proc/PID/task/TID/comm tell them apart (CPython 3.11 names only the Python
object; `name_os_thread` passes the Python name on). The registry bench reads
them to split a cold blob read's CPU by thread. Best effort: nothing happens
where pthread_setname_np is missing.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

#: the kernel keeps 15 bytes of a thread's name
_MAX = 15

_setname: Any = None
_self: Any = None
try:
    _libc = ctypes.CDLL(None)  # the process's own symbols: libc is among them
    _libc.pthread_setname_np.argtypes = [ctypes.c_ulong, ctypes.c_char_p]
    _libc.pthread_self.restype = ctypes.c_ulong
    _setname, _self = _libc.pthread_setname_np, _libc.pthread_self
except (OSError, AttributeError):  # pragma: no cover - not glibc/musl
    pass


def set_os_name(name: str) -> None:
    """Name the calling thread `name` (cut to 15 bytes) for the OS."""
    if _setname is not None:
        _setname(_self(), name.encode("utf-8", "replace")[:_MAX])


def name_os_thread() -> None:
    """Give the calling thread its Python name for the OS too: one name per thread
    (keep it within 15 bytes, or the OS shows it cut)."""
    set_os_name(threading.current_thread().name)
