"""An HTTP proxy in front of a real registry that misbehaves on blob downloads.

Modes (set `proxy.mode`, optionally limited to one digest with `proxy.digest`), applied
to blob downloads and to manifests fetched by digest:
- "pass": forward unchanged;
- "truncate": announce the full Content-Length, send half the body, close;
  with `fail_next` > 0, only that many times (then forward);
- "corrupt": send the right length with one byte flipped in the middle;
- "busy" / "unavailable": answer the next `fail_next` blob requests with 429
  (`Retry-After: 1`) / 503, then forward;
- "slow": forward blob bodies in 64 KiB pieces with a pause between them
  (so a test can kill the registry mid-read); with `hold_after` set, an answer stops
  after that many body bytes until `resume` is set (`close()` sets it). The upstream
  connection then has a small fixed receive buffer, so the registry cannot have
  handed the kernel much more than the proxy has sent when it is killed (with
  autotuned buffers a blob of a few MiB sits whole in them and outlives the registry).
- "chunked": forward blob bodies with `Transfer-Encoding: chunked` and no
  Content-Length (httpx's own body path in ocifs); with `fail_next` > 0 that
  many answers end at half, without the last chunk.
Everything else (manifests by tag, tags, auth, HEAD) is forwarded unchanged. `blob_bytes`
counts body bytes sent for blobs. With `tls` (certificate, key) the proxy answers
HTTPS (ocifs with `--tls-verify=false` then talks TLS to it).

`rules` (checked before the modes, any path, GET and HEAD): `Rule(path_regex, answer,
method=None, times=None)`; the first rule that matches answers the request with
`answer(handler, proxy)`. Answers for hostile registries are made by the functions
at the end of this module (`static`, `endless`, `redirect`, `hang_up`, `hold`,
`forward`: the real answer with its request or response headers changed, cut,
stalled or trickled). `requests` lists `METHOD path` of every request received.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}


Answer = Callable[[BaseHTTPRequestHandler, "FaultProxy"], None]


@dataclass
class Rule:
    path: str  # a regex, searched in the request path (with its query)
    answer: Answer
    method: str | None = None  # GET or HEAD; None: both
    times: int | None = None  # answers left; None: every matching request
    hits: int = 0


class FaultProxy:
    def __init__(self, upstream: str, tls: tuple[Path, Path] | None = None) -> None:
        self.upstream = upstream  # host:port, plain http
        self.mode = "pass"
        self.digest: str | None = None
        self.blob_bytes = 0
        self.pause = 0.05
        self.hold_after: int | None = None
        self.resume = threading.Event()
        self.fail_next = 0
        self.retry_after = "1"  # the Retry-After of a 429 ("busy")
        self.refused: list[int] = []  # statuses answered instead of forwarding
        self.rules: list[Rule] = []
        self.requests: list[str] = []
        self.sent = 0  # body bytes sent by rule answers
        self._rules_lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                proxy._handle(self)

            def do_GET(self) -> None:
                proxy._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def ref(self, repo: str) -> str:
        return f"docker://{self.host}/{repo}"

    def close(self) -> None:
        self.resume.set()
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        self.requests.append(f"{h.command} {h.path}")
        with self._rules_lock:
            rule = next(
                (
                    r
                    for r in self.rules
                    if (r.method is None or r.method == h.command)
                    and re.search(r.path, h.path)
                    and (r.times is None or r.hits < r.times)
                ),
                None,
            )
            if rule is not None:
                rule.hits += 1
        if rule is None:
            self._forward(h)
            return
        try:
            rule.answer(h, self)
        except (OSError, http.client.HTTPException):
            h.close_connection = True  # the client went away

    def sent_in(self, h: BaseHTTPRequestHandler) -> int:
        """Body bytes sent so far in the answer `h` is giving."""
        return getattr(h, "_ocifs_sent", 0)

    def count(self, h: BaseHTTPRequestHandler, n: int) -> None:
        h._ocifs_sent = self.sent_in(h) + n  # type: ignore[attr-defined]
        self.sent += n

    def _faulty(self, path: str) -> bool:
        if not ("/blobs/" in path or "/manifests/sha" in path) or self.mode == "pass":
            return False
        return self.digest is None or path.endswith(self.digest)

    def _refuse(self, h: BaseHTTPRequestHandler) -> bool:
        if self.mode not in ("busy", "unavailable") or not self._faulty(h.path):
            return False
        if self.fail_next <= 0:
            return False
        self.fail_next -= 1
        status = 429 if self.mode == "busy" else 503
        self.refused.append(status)
        h.send_response(status)
        if status == 429:
            h.send_header("Retry-After", self.retry_after)
        h.send_header("Content-Length", "0")
        h.end_headers()
        return True

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        if self._refuse(h):
            return
        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP | {"host"}}
        try:
            conn = http.client.HTTPConnection(self.upstream, timeout=30)
            if self.mode == "slow" and self._faulty(h.path):
                host, port = self.upstream.rsplit(":", 1)
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                sock.settimeout(30)
                sock.connect((host, int(port)))
                conn.sock = sock
            conn.request(h.command, h.path, headers=headers)
            resp = conn.getresponse()
        except OSError as exc:
            body = f"upstream: {exc}\n".encode()
            h.send_response(502)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        faulty = self._faulty(h.path) and h.command == "GET" and resp.status in (200, 206)
        if faulty and self.mode == "truncate" and self.fail_next:
            self.fail_next -= 1
            self.refused.append(resp.status)
        elif faulty and self.mode == "truncate" and self.refused:
            faulty = False  # the limited failures are spent
        chunked = faulty and self.mode == "chunked"
        cut = chunked and self.fail_next > 0
        if cut:
            self.fail_next -= 1
            self.refused.append(resp.status)
        h.send_response(resp.status)
        length = resp.getheader("Content-Length")
        for k, v in resp.getheaders():
            if k.lower() not in _HOP and not (chunked and k.lower() == "content-length"):
                h.send_header(k, v)
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        if h.command == "HEAD":
            conn.close()
            return
        total = int(length) if length is not None else None
        sent = 0
        try:
            while True:
                chunk = resp.read(65536)
                if not chunk:
                    break
                if faulty and self.mode == "truncate" and total and sent + len(chunk) > total // 2:
                    chunk = chunk[: total // 2 - sent]
                    h.wfile.write(chunk)
                    h.wfile.flush()
                    h.close_connection = True
                    break
                if (
                    faulty
                    and self.mode == "corrupt"
                    and total
                    and sent <= total // 2 < sent + len(chunk)
                ):
                    i = total // 2 - sent
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
                if cut and total and sent + len(chunk) > total // 2:
                    h.close_connection = True
                    break
                if chunked:
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                else:
                    h.wfile.write(chunk)
                sent += len(chunk)
                if "/blobs/" in h.path:
                    self.blob_bytes += len(chunk)
                if faulty and self.mode == "slow":
                    h.wfile.flush()
                    if self.hold_after is not None and sent >= self.hold_after:
                        self.resume.wait()
                    else:
                        threading.Event().wait(self.pause)
            if chunked and not h.close_connection:
                h.wfile.write(b"0\r\n\r\n")
        except (OSError, http.client.HTTPException):
            h.close_connection = True
        finally:
            conn.close()
        if total is not None and sent < total:
            h.close_connection = True


# -- answers for `rules` -----------------------------------------------------------------


def _send_head(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str]) -> None:
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k, v)
    h.end_headers()


def static(
    status: int = 200,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    length: int | None = None,
) -> Answer:
    """A fixed answer; `length`: the Content-Length to claim (a lie: the connection is
    closed after the body)."""

    def answer(h: BaseHTTPRequestHandler, proxy: FaultProxy) -> None:
        claimed = len(body) if length is None else length
        _send_head(h, status, {**(headers or {}), "Content-Length": str(claimed)})
        if h.command != "HEAD":
            h.wfile.write(body)
            proxy.sent += len(body)
        if claimed != len(body):
            h.close_connection = True

    return answer


def json_answer(doc: object, headers: dict[str, str] | None = None) -> Answer:
    return static(200, json.dumps(doc).encode(), {"Content-Type": "application/json",
                                                  **(headers or {})})  # fmt: skip


def endless(
    first: bytes,
    repeat: bytes,
    headers: dict[str, str] | None = None,
    *,
    length: int | None = None,
) -> Answer:
    """`first`, then `repeat` for ever (until the client hangs up): chunked, or with a
    (huge) Content-Length `length`."""

    def answer(h: BaseHTTPRequestHandler, proxy: FaultProxy) -> None:
        framing = {"Transfer-Encoding": "chunked"} if length is None else {
            "Content-Length": str(length)}  # fmt: skip
        _send_head(h, 200, {**(headers or {}), **framing})
        h.close_connection = True
        if h.command == "HEAD":
            return
        piece = first
        while True:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if length is None else piece)
            proxy.sent += len(piece)
            piece = repeat

    return answer


def redirect(location: str, status: int = 302) -> Answer:
    return static(status, b"", {"Location": location})


def hang_up(h: BaseHTTPRequestHandler, proxy: FaultProxy) -> None:
    """Close the connection without a word."""
    h.close_connection = True
    h.connection.shutdown(socket.SHUT_RDWR)


def hold(h: BaseHTTPRequestHandler, proxy: FaultProxy) -> None:
    """Accept the request and send nothing until `proxy.resume` is set; then hang up."""
    proxy.resume.wait()
    hang_up(h, proxy)


def forward(
    *,
    drop_request: tuple[str, ...] = (),
    set_response: dict[str, str] | None = None,
    cut_at: int | None = None,
    stall_at: int | None = None,
    trickle_at: int | None = None,
    trickle_every: float = 0.2,
) -> Answer:
    """The registry's real answer, changed: request headers `drop_request` removed
    (e.g. Range), response headers replaced by `set_response` (a Content-Length too:
    a lie), the body cut at `cut_at` bytes (then closed), stalled at `stall_at` until
    `proxy.resume` is set, or trickled one byte per `trickle_every` s from `trickle_at`."""

    def answer(h: BaseHTTPRequestHandler, proxy: FaultProxy) -> None:
        h._ocifs_sent = 0  # type: ignore[attr-defined]
        drop = {d.lower() for d in drop_request} | _HOP | {"host"}
        headers = {k: v for k, v in h.headers.items() if k.lower() not in drop}
        conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
        try:
            conn.request(h.command, h.path, headers=headers)
            resp = conn.getresponse()
            out = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
            for k, v in (set_response or {}).items():
                out = {ok: ov for ok, ov in out.items() if ok.lower() != k.lower()}
                out[k] = v
            _send_head(h, resp.status, out)
            if h.command == "HEAD":
                return
            h.close_connection = True
            for piece in _pieces(resp):
                for at, act in ((cut_at, "cut"), (stall_at, "stall"), (trickle_at, "trickle")):
                    if at is not None and proxy.sent_in(h) + len(piece) > at:
                        head = piece[: max(0, at - proxy.sent_in(h))]
                        h.wfile.write(head)
                        h.wfile.flush()
                        proxy.count(h, len(head))
                        if act == "stall":
                            proxy.resume.wait()
                        elif act == "trickle":
                            for byte in piece[len(head):]:
                                if proxy.resume.wait(trickle_every):
                                    break
                                h.wfile.write(bytes([byte]))
                                h.wfile.flush()
                                proxy.count(h, 1)
                            proxy.resume.wait()
                        return
                h.wfile.write(piece)
                proxy.count(h, len(piece))
        finally:
            conn.close()

    return answer


def _pieces(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    while True:
        piece = resp.read(65536)
        if not piece:
            return
        yield piece
