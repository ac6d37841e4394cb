"""`ocifs.trioimport`: trio imported without `ldconfig -p`, its thread names intact."""

from __future__ import annotations

import ast
import subprocess
import sys

_PROBE = r"""
import ctypes.util, os, subprocess, sys
calls = []
original = ctypes.util.find_library
def spy(name):
    calls.append(name)
    return original(name)
ctypes.util.find_library = spy

from ocifs import trioimport
trioimport.import_trio()
import trio

def comm():
    with open(f"/proc/self/task/{__import__('threading').get_native_id()}/comm") as f:
        return f.read().strip()

async def main():
    return await trio.to_thread.run_sync(comm)

print(repr((ctypes.util.find_library is spy, calls, trio.run(main))))
"""


def test_trio_is_imported_without_ldconfig_and_names_its_threads() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    ).stdout
    restored, calls, thread_name = ast.literal_eval(out)
    assert restored, "find_library was not put back after the import"
    # trio asked for pthread, and that question never reached the original
    # lookup (the one that runs ldconfig): the spy saw nothing
    assert calls == []
    # trio names a worker after what it runs ("comm from __main__...", cut to
    # the kernel's 15 characters); unnamed, it would be the process's name
    assert thread_name.startswith("comm from")
