"""ocifs/threadname.py: the OS sees the names ocifs gives its threads (top -H, perf,
/proc/PID/task/TID/comm; the registry bench splits a cold read's CPU by them)."""

from __future__ import annotations

import threading
from pathlib import Path

from ocifs.threadname import name_os_thread, set_os_name


def _comm_of_new_thread(name: str) -> str:
    seen: list[str] = []

    def run() -> None:
        set_os_name(name)
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen[0].strip()


def test_a_thread_named_for_the_os_shows_that_name() -> None:
    assert _comm_of_new_thread("ocifs-blob-rx") == "ocifs-blob-rx"


def test_a_thread_passes_its_python_name_to_the_os() -> None:
    seen: list[str] = []

    def run() -> None:
        name_os_thread()
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text())

    thread = threading.Thread(target=run, name="ocifs-blob-sha")
    thread.start()
    thread.join()
    assert seen == ["ocifs-blob-sha\n"]


def test_a_long_name_is_cut_to_what_the_kernel_keeps() -> None:
    assert _comm_of_new_thread("ocifs-a-very-long-thread-name") == "ocifs-a-very-lo"
