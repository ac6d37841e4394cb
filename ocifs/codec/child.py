"""Decompression in a child process (`igzip -dc`, `zstd -qdc`) fed through pipes.

Opt-in (`OCIFS_DECODER=child` in the environment of `ocifs mount`): measured
against a decoder thread in the daemon (docs/layers.md, "Decoding on two
cores"), the child takes 0.2-0.35 s of CPU out of the daemon per 200 MiB layer
but costs 0.1-0.2 s more in total (pipe copies both ways), and on a loaded
machine its hand-offs through the pipes made the first listing slower. It is
kept for measuring on other machines, where the CLIs may decode faster than
the bindings.

The compressed bytes always come through the child's stdin, written by a
feeder thread that reads the `BlobReader` (so archive members, registry
downloads arriving progressively and readers whose pread blocks all work the
same) and hashes them on the way. The decoded bytes come back through stdout.

Cleanup: the child is started under `setpriv --pdeathsig KILL` (no
preexec_fn, so subprocess keeps its vfork fast path), and it dies anyway when
the daemon does: its stdin reaches end-of-file early (it exits with an error)
and its stdout has no reader (SIGPIPE). `close()` kills it and reaps it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator

from ocifs.errors import BlobUnavailable
from ocifs.model.mediatypes import Compression

#: the decoder command per compression; both write the decoded stream to stdout.
TOOLS: dict[Compression, tuple[str, ...]] = {
    Compression.GZIP: ("igzip", "-dc"),
    Compression.ZSTD: ("zstd", "-qdc"),
}
_PIPE_SIZE = 1 << 20  # F_SETPIPE_SZ: 1 MiB per read instead of the default 64 KiB
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def enabled() -> bool:
    """Whether big layers are decoded by a child (`OCIFS_DECODER=child`)."""
    return os.environ.get("OCIFS_DECODER") == "child"


@functools.cache
def command(compression: Compression) -> tuple[str, ...] | None:
    """The argv of the child decoder for `compression`, or None (tool not installed)."""
    tool = TOOLS.get(compression)
    if tool is None:
        return None
    path = shutil.which(tool[0])
    if path is None:
        return None
    setpriv = shutil.which("setpriv")
    prefix = (setpriv, "--pdeathsig", "KILL") if setpriv else ()
    return (*prefix, path, *tool[1:])


def _pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # a smaller pipe only costs more reads
        fcntl.fcntl(w, _F_SETPIPE_SZ, _PIPE_SIZE)
    return r, w


class ChildDecoder:
    """One child decoding `source` (compressed chunks) into `chunks()`.

    `source` is iterated on the feeder thread, to the end even when the child
    stops early (damage): the caller's digest covers the whole blob. An error
    it raises is kept and re-raised by `chunks()` / `join_feeder()`.
    """

    def __init__(self, argv: tuple[str, ...], source: Iterable[bytes], out_size: int) -> None:
        self._out_size = out_size
        self._stop = threading.Event()
        self.feed_error: BaseException | None = None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        in_r, in_w = _pipe()
        out_r, out_w = _pipe()
        try:
            self._proc = subprocess.Popen(
                argv, stdin=in_r, stdout=out_w, stderr=self._stderr, close_fds=True
            )
        except BaseException:
            for fd in (in_r, in_w, out_r, out_w):
                os.close(fd)
            self._stderr.close()
            raise
        os.close(in_r)
        os.close(out_w)
        self._out = open(out_r, "rb", buffering=out_size)  # noqa: SIM115 (closed in close())
        self._feeder = threading.Thread(
            target=self._feed, args=(source, in_w), name="ocifs-decode-feed", daemon=True
        )
        self._feeder.start()

    def _feed(self, source: Iterable[bytes], fd: int) -> None:
        """Write every chunk to the child; after it stops reading, keep consuming (hashing)."""
        piping = True
        try:
            for data in source:
                if self._stop.is_set():
                    return
                view = memoryview(data)
                while piping and view:
                    try:
                        view = view[os.write(fd, view) :]
                    except OSError:  # EPIPE: the child ended (damage, or killed)
                        piping = False
        except BaseException as exc:  # re-raised on the pass's thread
            self.feed_error = exc
        finally:
            os.close(fd)  # end of input for the child (only this thread owns fd)

    def chunks(self, on_failure: Callable[[str], BaseException]) -> Iterator[bytes]:
        """Decoded chunks of `out_size` bytes (the last may be shorter).

        At the end: the feeder's error if it had one (e.g. the blob ends
        early), else `on_failure(the child's message)` if the child failed.
        """
        read = self._out.read
        size = self._out_size
        while True:
            data = read(size)
            if data:
                yield data
            if len(data) < size:
                break
        rc = self._proc.wait()
        if self.feed_error is not None or rc != 0:
            self.join_feeder()
        if rc < 0:  # killed (OOM killer, an admin): not the layer's fault, nothing cached
            raise BlobUnavailable(f"the decoder process was killed by signal {-rc}")
        if rc != 0:
            raise on_failure(self._message(rc))

    def _message(self, rc: int) -> str:
        self._stderr.seek(0)
        text = self._stderr.read(4096).decode("utf-8", "replace").strip()
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return lines[-1] if lines else f"decoder exited with status {rc}"

    def join_feeder(self) -> None:
        """Wait until the feeder has consumed the source; re-raise its error."""
        self._feeder.join()
        if self.feed_error is not None:
            err, self.feed_error = self.feed_error, None
            raise err

    def stop_child(self) -> None:
        """Kill the child (the feeder then only hashes the rest) and reap it."""
        if self._proc.poll() is None:
            with contextlib.suppress(OSError):
                self._proc.kill()
        self._proc.wait()
        self._out.close()

    def close(self) -> None:
        """Abandon the pass: stop the feeder at its next chunk, kill and reap the child."""
        self._stop.set()
        self.stop_child()
        self._stderr.close()
