"""HTTP to one registry repository: auth handshake, retries, bounded connections.

One `httpx.Client` per process (the daemon forks after the mount-time checks,
and a pool must not cross a fork), shared by worker threads (httpx clients are
thread-safe). Its pool holds at most `max_connections` connections: that is
the bound on concurrent requests; further requests wait for a free connection.

Every request is retried on connection errors, timeouts, stalled or trickled
answers (`pace.py`, applied to every byte a connection reads: `sockets.py`)
and 5xx answers with exponential backoff, and after `Retry-After` (capped) on
429, `retries` times; then it fails with a one-line `RegistryError` naming the
URL and the cause. TLS failures and 4xx answers are not retried.

Hostile answers are bounded (docs/registry.md, "Network failures"): bodies read
into memory have a size limit per kind (a bigger one is an error once its
limit is reached, not a memory spike), redirects are followed here (at most
MAX_REDIRECTS, a loop is an error, the credentials never leave the registry's
own origin, and a redirect's body is never read), answers are asked for and
must come without a content coding (a compressed answer could be a bomb), and
`stop()` ends every request in flight at once (`sockets.py`).

Auth (distribution spec): a 401 with `WWW-Authenticate: Bearer realm=...`
fetches a token from the realm for the challenge's scope (default
`repository:<repo>:pull`) with the credentials, if any, as basic auth, caches
it per scope and retries once; `Basic` sends the credentials on every request.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, TypeVar

import httpcore
import httpx

from ocifs import log as log_mod
from ocifs.errors import RegistryError, Unmounting
from ocifs.model.documents import MAX_DOCUMENT_BYTES
from ocifs.registry import sockets
from ocifs.registry.auth import Challenge, Credentials, parse_challenge
from ocifs.registry.pace import TooSlow
from ocifs.registry.reference import Reference
from ocifs.registry.sockets import StoppableBackend

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
#: longest Retry-After honoured (seconds); longer ones are waited this long
MAX_RETRY_AFTER = 30.0
USER_AGENT = "ocifs"
#: largest body read into memory, per kind of answer
DOCUMENT_LIMIT = MAX_DOCUMENT_BYTES
TAG_PAGE_LIMIT = 16 << 20
TOKEN_LIMIT = 1 << 20
#: an error answer's body is only read for its message: the rest is not wanted
ERROR_LIMIT = 64 << 10
#: tags and pages of the tag list read at most (each tag costs a HEAD at mount)
MAX_TAGS = 100_000
MAX_TAG_PAGES = 1_000
MAX_REDIRECTS = 10
_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True, slots=True)
class ClientOptions:
    tls_verify: bool = True
    cert_dir: str | None = None
    credentials: Credentials | None = None
    #: connect/read/write timeout per operation, seconds
    timeout: float = 30.0
    #: attempts after the first, for transient failures
    retries: int = 4
    #: first backoff; doubles per attempt
    backoff: float = 0.25
    max_connections: int = 8


class ShortTimings(TypedDict, total=False):
    """The ClientOptions fields a test may shorten (`timings_for_tests`)."""

    timeout: float
    retries: int
    backoff: float


def timings_for_tests() -> ShortTimings:
    """ClientOptions fields from OCIFS_TEST_REGISTRY_TIMEOUT / _RETRIES / _BACKOFF,
    honoured only with OCIFS_TEST_MODE=1: a hostile-registry test of a stalled
    answer would otherwise wait 5 x 30 s for its EIO."""
    from ocifs.durable import test_env

    found = ShortTimings()
    if text := test_env("OCIFS_TEST_REGISTRY_TIMEOUT"):
        found["timeout"] = float(text)
    if text := test_env("OCIFS_TEST_REGISTRY_RETRIES"):
        found["retries"] = int(text)
    if text := test_env("OCIFS_TEST_REGISTRY_BACKOFF"):
        found["backoff"] = float(text)
    return found


def _ssl_context(ref: Reference, options: ClientOptions) -> ssl.SSLContext | bool:
    """System trust store plus the CA (`*.crt`) and client (`*.cert`+`*.key`) files of
    `--cert-dir`, or of /etc/containers/certs.d/HOST and /etc/docker/certs.d/HOST."""
    if not options.tls_verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context()
    dirs = (
        [Path(options.cert_dir)]
        if options.cert_dir
        else [
            Path("/etc/containers/certs.d") / ref.registry,
            Path("/etc/docker/certs.d") / ref.registry,
        ]
    )
    for d in dirs:
        if options.cert_dir and not d.is_dir():
            raise RegistryError(f"--cert-dir {d}: not a directory")
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            path = d / name
            try:
                if name.endswith(".crt") and options.tls_verify:
                    ctx.load_verify_locations(cafile=str(path))
                elif name.endswith(".cert"):
                    key = d / (name.removesuffix(".cert") + ".key")
                    ctx.load_cert_chain(str(path), str(key))
            except (OSError, ssl.SSLError) as exc:
                raise RegistryError(f"{path}: cannot load certificate: {exc}") from None
    return ctx


#: getaddrinfo's texts for a name that has no address: EAI_NONAME (first: the one
#: not worth retrying, unlike EAI_AGAIN) and EAI_NODATA
_UNKNOWN_HOST = ("Name or service not known", "No address associated with hostname")
#: Python's own decoration of socket and TLS errors, cut from what users read:
#: "[Errno 111] ", "[SSL: WRONG_VERSION_NUMBER] ", " (_ssl.c:1006)"
_PYTHON_NOISE = re.compile(r"\[Errno -?\d+\] |\[SSL: [A-Z_]+\] | \(_ssl\.c:\d+\)")


def describe(exc: BaseException) -> str:
    """One line for a transport error: its text without Python's decoration
    ("[Errno -2] Name or service not known" → "unknown host"), or the class name."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if any(t in text for t in _UNKNOWN_HOST):
        return "unknown host"
    return _PYTHON_NOISE.sub("", text).strip() or type(exc).__name__


def _is_tls_failure(exc: httpx.TransportError) -> bool:
    """A TLS handshake that failed: retrying cannot help (unlike a refused connection)."""
    text = str(exc)
    return "[SSL" in text or "certificate verify failed" in text


def _unknown_host(exc: httpx.TransportError) -> bool:
    """The name does not resolve (EAI_NONAME): not worth retrying, unlike EAI_AGAIN."""
    return isinstance(exc, httpx.ConnectError) and _UNKNOWN_HOST[0] in str(exc)


def _tls_hint(exc: httpx.TransportError) -> str:
    if "WRONG_VERSION_NUMBER" in str(exc) or "record layer" in str(exc):
        return "the registry may speak plain http: use --tls-verify=false"
    return "use --cert-dir DIR with the registry's CA, or --tls-verify=false"


def _retry_after(response: httpx.Response, default: float) -> float:
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    if value:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
            return max(0.0, min(when - time.time(), MAX_RETRY_AFTER))
        except (TypeError, ValueError):
            pass
    return default


def one_line(text: str, limit: int = 200) -> str:
    """A registry-supplied text fit for a log line: control characters replaced, cut."""
    flat = "".join(c if c.isprintable() else " " for c in text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def error_reason(status: int, phrase: str, body: bytes) -> str:
    """`404 MANIFEST_UNKNOWN: manifest unknown` from a distribution error body, if any."""
    reason = one_line(f"{status} {phrase}")
    try:
        errors = json.loads(body).get("errors")
    except (ValueError, AttributeError, RecursionError):
        return reason
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        code, message = errors[0].get("code"), errors[0].get("message")
        return one_line(f"{status} {code}: {message}")
    return reason


class _Again(Exception):
    """An answer worth asking again for (`RegistryClient._retrying`): after `delay`
    seconds (None: the backoff), or at once and not counted as an attempt (`now`:
    a 401 that brought credentials)."""

    def __init__(self, reason: str, delay: float | None = None, *, now: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.now = now


class _TooLarge(Exception):
    """A body over its limit (the Content-Length says so, or the bytes did)."""


class BodyTooLarge(RegistryError):
    """An answer's body is over the limit for its kind: that object is unusable (the
    registry as a whole may be fine)."""


def read_body(response: httpx.Response, limit: int, *, cut: bool = False) -> bytes:
    """The answer's body, at most `limit` bytes, and closes it.

    Beyond `limit`: _TooLarge, or with `cut` the first `limit` bytes. TooSlow if
    it trickles (the connection's pace, sockets.py), httpx.TransportError if it
    breaks off or stalls.
    Raw bytes: answers are asked for without content coding (`_check_coding`)."""
    try:
        length = response.headers.get("Content-Length", "")
        if not cut and length.isdigit() and int(length) > limit:
            raise _TooLarge(length)
        parts: list[bytes] = []
        total = 0
        for chunk in response.iter_raw():
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                if not cut:
                    raise _TooLarge(total)
                break
        return b"".join(parts)[:limit]
    finally:
        response.close()


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _use_backend(client: httpx.Client, backend: StoppableBackend) -> bool:
    """Make every connection pool of `client` connect through `backend`.

    httpx does not let one choose httpcore's network backend, so this sets it
    on the pools httpx made (its own transport and the proxy transports of the
    environment's *_PROXY variables). False if httpx's or httpcore's insides
    changed (the versions are pinned in pyproject.toml); the client then works
    on httpcore's plain backend, only `stop()` cannot end requests in flight and
    a trickled header is bounded by nothing but the read timeout (a unit test
    watches for that)."""
    if not sockets.AVAILABLE:
        return False
    installed = False
    try:
        transports = [client._transport, *client._mounts.values()]
    except AttributeError:
        return False
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        if isinstance(pool, httpcore.ConnectionPool) and hasattr(pool, "_network_backend"):
            pool._network_backend = backend
            installed = True
    return installed


class RegistryClient:
    """See the module docstring. Thread-safe."""

    def __init__(self, ref: Reference, options: ClientOptions) -> None:
        self.ref = ref
        self.options = options
        self.scheme = "https"
        self._verify = _ssl_context(ref, options)
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._backend = StoppableBackend(options.timeout)
        self._pid = -1
        self._tokens: dict[str, str] = {}
        self._realm = ""  # of the last bearer challenge, for messages
        self._basic = False
        #: set when the mount goes away: retry waits end and no new attempt starts
        self.stopping = threading.Event()

    # -- plumbing ---------------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.ref.api_host}"

    def repo_url(self, tail: str) -> str:
        return f"{self.base}/v2/{self.ref.repository}/{tail}"

    def http(self) -> httpx.Client:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                o = self.options
                self._client = httpx.Client(
                    verify=self._verify,
                    timeout=httpx.Timeout(o.timeout, pool=max(o.timeout, 120.0)),
                    limits=httpx.Limits(
                        max_connections=o.max_connections,
                        max_keepalive_connections=o.max_connections,
                    ),
                    follow_redirects=False,  # `_exchange` follows them
                    headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                )
                if self._pid != os.getpid():  # a fork: the parent's sockets are not ours
                    self._backend = StoppableBackend(o.timeout)
                if not _use_backend(self._client, self._backend):
                    log_mod.once(
                        log,
                        logging.WARNING,
                        f"httpx {httpx.__version__} / httpcore {httpcore.__version__}: "
                        "their connection pools are not where ocifs looks (see "
                        "pyproject.toml for the versions it supports); requests in "
                        "flight outlive an unmount and a trickled answer is bounded "
                        "only by the read timeout",
                    )
                self._pid = os.getpid()
            return self._client

    def stop(self) -> None:
        """Unmounting: no new request or connect, and every one in flight ends now
        (its thread sees `stopping` and raises Unmounting). Any thread; does not wait."""
        self.stopping.set()
        with self._lock:
            backend = self._backend
        backend.interrupt()

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = None

    def _scope(self, challenge: Challenge | None) -> str:
        if challenge is not None and challenge.params.get("scope"):
            return challenge.params["scope"]
        return f"repository:{self.ref.repository}:pull"

    def _auth_header(self, scope: str) -> str | None:
        token = self._tokens.get(scope)
        if token is not None:
            return f"Bearer {token}"
        creds = self.options.credentials
        if self._basic and creds is not None:
            return creds.basic_header()
        return None

    # -- requests ---------------------------------------------------------------------

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        ok: tuple[int, ...] = (200,),
        limit: int = DOCUMENT_LIMIT,
    ) -> httpx.Response:
        """One request with auth, redirects and retries; the response has a status in `ok`.

        Without `stream` the body is read here, within the retries: at most `limit`
        bytes (RegistryError beyond). Streamed responses are the caller's to close.
        Raises RegistryError, or Unmounting once `stopping` is set (no new request
        after the unmount, and one in flight ends with it).
        """
        reauthed = False
        scope = self._scope(None)
        own = _origin(httpx.URL(self.base))

        def once(attempt: int) -> httpx.Response:
            nonlocal reauthed, scope
            asked = scope

            def authorize(target: httpx.URL) -> str | None:
                # credentials and tokens go to the registry itself, never to a
                # host it redirects to (blob storage signs its own URLs)
                return self._auth_header(asked) if _origin(target) == own else None

            response = self._exchange(method, url, headers or {}, authorize)
            status = response.status_code
            if status in ok:
                self._check_coding(response, url)
                return response if stream else self._whole(response, limit)
            reason = self._reason(response)
            last = attempt >= self.options.retries
            if status == 401 and not reauthed:
                reauthed = True
                scope = self._authenticate(response, url)
                raise _Again(reason, now=True)
            if status == 429 and not last:
                raise _Again(reason, _retry_after(response, self._backoff(attempt)))
            if status >= 500 and not last:
                raise _Again(reason)
            bearer = status == 401 and scope in self._tokens
            raise RegistryError(self._explain(url, status, reason, bearer), status=status)

        return self._retrying(f"{method} {url}", once, tls_name=url, tls_hint=True)

    def _backoff(self, attempt: int) -> float:
        return float(self.options.backoff * 2**attempt)

    def _retrying(
        self, what: str, once: Callable[[int], _T], *, tls_name: str, tls_hint: bool
    ) -> _T:
        """`once(attempt)` until it returns: the retry rule every request shares.

        Connection errors, timeouts and stalled answers (TransportError, TooSlow)
        and what `once` says is worth asking again (`_Again`: a 5xx, a 429, a 401
        that brought a token) are retried `retries` times with exponential backoff;
        then a RegistryError naming `what`. A TLS failure (named `tls_name`), an
        unknown host and other httpx errors are not retried. Unmounting once
        `stopping` is set, before an attempt, after a broken one, or in the wait.
        """
        attempt = 0
        while True:
            if self.stopping.is_set():
                raise Unmounting(f"{what}: not sent (unmounting)")
            delay = self._backoff(attempt)
            try:
                return once(attempt)
            except _Again as again:
                if again.now:
                    continue
                if again.delay is not None:
                    delay = again.delay
                log.warning("%s: %s; retrying in %.2f s", what, again.reason, delay)
            except (httpx.TransportError, TooSlow) as exc:
                if self.stopping.is_set():
                    raise Unmounting(f"{what}: stopped (unmounting)") from None
                if isinstance(exc, httpx.ConnectError) and _is_tls_failure(exc):
                    hint = f" ({_tls_hint(exc)})" if tls_hint else ""
                    raise RegistryError(
                        f"{tls_name}: TLS failure: {describe(exc)}{hint}"
                    ) from None
                if isinstance(exc, httpx.TransportError) and _unknown_host(exc):
                    raise RegistryError(f"{what}: {describe(exc)}") from None
                if attempt >= self.options.retries:
                    raise RegistryError(
                        f"{what}: {describe(exc)} (after {attempt + 1} attempts)"
                    ) from None
                log.warning("%s: %s; retrying in %.2f s", what, describe(exc), delay)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:  # not worth retrying
                raise RegistryError(f"{what}: {describe(exc)}") from None
            attempt += 1
            self._pause(delay, what)

    def _exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        authorize: Callable[[httpx.URL], str | None],
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request and the redirects it leads to, streamed; a redirect's body is
        never read. A loop, a 11th redirect or one to a URL that is not http(s) is a
        RegistryError."""
        client = self.http()
        target = httpx.URL(url)
        if params:  # added to the URL's own query (a realm may carry one)
            target = target.copy_merge_params(params)
        seen = {str(target)}
        for _hop in range(MAX_REDIRECTS + 1):
            hdrs = dict(headers)
            auth = authorize(target)
            if auth is not None:
                hdrs["Authorization"] = auth
            response = client.send(client.build_request(method, target, headers=hdrs), stream=True)
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or not location:
                return response
            response.close()
            try:
                target = response.url.join(location)
            except (httpx.InvalidURL, ValueError):
                raise RegistryError(
                    f"{method} {url}: redirected to an invalid URL {one_line(location)!r}"
                ) from None
            if target.scheme not in ("http", "https"):
                raise RegistryError(f"{method} {url}: redirected to {one_line(str(target))}")
            if str(target) in seen:
                raise RegistryError(
                    f"{method} {url}: redirect loop ({one_line(str(target))} again)"
                )
            seen.add(str(target))
        raise RegistryError(f"{method} {url}: more than {MAX_REDIRECTS} redirects")

    def _whole(self, response: httpx.Response, limit: int) -> httpx.Response:
        """The response with its body read (bounded), as a plain in-memory response."""
        if response.request.method == "HEAD":
            response.close()
            data = b""
        else:
            try:
                data = read_body(response, limit)
            except _TooLarge:
                raise BodyTooLarge(
                    f"{response.url}: answer larger than the {limit}-byte limit"
                ) from None
        return httpx.Response(
            response.status_code, headers=response.headers, content=data, request=response.request
        )

    @staticmethod
    def _check_coding(response: httpx.Response, url: str) -> None:
        """Refuse a body with a content coding: asked for without one, and decoding a
        hostile one could make gigabytes of a few kilobytes (httpx decodes each
        piece whole)."""
        coding = response.headers.get("Content-Encoding", "").strip().lower()
        if coding not in ("", "identity") and response.request.method != "HEAD":
            response.close()
            raise RegistryError(
                f"{url}: the answer is {one_line(coding, 40)}-encoded (asked for without coding)"
            )

    def _pause(self, seconds: float, what: str) -> None:
        """The wait before a retry; cut short (Unmounting) when unmounting, so a
        download thread in it does not outlive the unmount."""
        if self.stopping.wait(seconds):
            raise Unmounting(f"{what}: stopped (unmounting)")

    def _reason(self, response: httpx.Response) -> str:
        """Why an answer failed, from its status and (bounded) error body; closes it."""
        body = b""
        try:
            coding = response.headers.get("Content-Encoding", "").strip().lower()
            if response.request.method != "HEAD" and coding in ("", "identity"):
                body = read_body(response, ERROR_LIMIT, cut=True)
        except (httpx.HTTPError, TooSlow):
            pass
        finally:
            response.close()
        return error_reason(response.status_code, response.reason_phrase, body)

    def _explain(self, url: str, status: int, reason: str, bearer: bool = False) -> str:
        if status == 401:
            creds = self.options.credentials
            if creds is None:
                return f"{url}: {reason}: the registry wants credentials (--creds, --authfile)"
            if bearer:  # 401 again with a token just fetched with them: the token is refused
                return (
                    f"{url}: {reason}: the registry refused a fresh token from {self._realm} "
                    f"(credentials from {creds.origin})"
                )
            return f"{url}: {reason}: credentials from {creds.origin} were rejected"
        if status == 403:
            return f"{url}: {reason}: access denied"
        return f"{url}: {reason}"

    def _authenticate(self, response: httpx.Response, url: str) -> str:
        """React to a 401: choose basic or fetch a bearer token. Returns the scope to use."""
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        creds = self.options.credentials
        if challenge is None:
            raise RegistryError(f"{url}: 401 without a WWW-Authenticate challenge", status=401)
        if challenge.scheme == "basic":
            if creds is None:
                raise RegistryError(
                    f"{url}: 401: the registry wants credentials (--creds, --authfile)", status=401
                )
            if self._basic:
                raise RegistryError(self._explain(url, 401, "401 Unauthorized"), status=401)
            self._basic = True
            return self._scope(None)
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise RegistryError(
                f"{url}: unsupported auth challenge {one_line(challenge.scheme, 40)!r}",
                status=401,
            )
        scope = self._scope(challenge)
        self._tokens[scope] = self._fetch_token(challenge, scope)
        # later requests use this scope's token first (same repository, same rights)
        self._tokens.setdefault(self._scope(None), self._tokens[scope])
        return scope

    def _fetch_token(self, challenge: Challenge, scope: str) -> str:
        """A bearer token from the challenge's realm: the same retries, bounds and
        stop as `send`; the credentials go to the realm's origin only."""
        realm = one_line(challenge.params["realm"], 500)
        try:
            realm_url = httpx.URL(challenge.params["realm"])
        except (httpx.InvalidURL, ValueError):
            realm_url = None
        if realm_url is None or realm_url.scheme not in ("http", "https"):
            raise RegistryError(f"{self.base}: 401 names an unusable token endpoint {realm!r}")
        self._realm = realm
        params = {"scope": scope}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        creds = self.options.credentials
        who = f"credentials from {creds.origin}" if creds else "anonymous access"

        def authorize(target: httpx.URL) -> str | None:
            same = _origin(target) == _origin(realm_url)
            return creds.basic_header() if creds is not None and same else None

        def once(attempt: int) -> tuple[bytes, str]:
            response = self._exchange("GET", str(realm_url), {}, authorize, params)
            if response.status_code == 200:
                self._check_coding(response, f"token endpoint {realm}")
                content_type = response.headers.get("Content-Type", "")
                try:
                    return read_body(response, TOKEN_LIMIT), content_type
                except _TooLarge:
                    raise RegistryError(
                        f"token endpoint {realm}: answer larger than the {TOKEN_LIMIT}-byte "
                        "limit"
                    ) from None
            status = response.status_code
            reason = self._reason(response)
            if status < 500 or attempt >= self.options.retries:
                raise RegistryError(
                    f"token endpoint {realm}: {reason} ({who}, scope {scope})", status=401
                )
            raise _Again(reason)

        body, content_type = self._retrying(
            f"token endpoint {realm}", once, tls_name=realm, tls_hint=False
        )
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            kind = one_line(content_type.split(";")[0], 60) or "no content type"
            raise RegistryError(f"token endpoint {realm}: answer is not JSON ({kind})") from None
        token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token endpoint {realm}: answer holds no token")
        if not (token.isascii() and token.isprintable()) or " " in token:
            raise RegistryError(
                f"token endpoint {realm}: the token is not fit for a header (control or "
                "non-ASCII characters)"
            )
        return token

    # -- the API ------------------------------------------------------------------------

    def ping(self) -> None:
        """`GET /v2/`: reachable, speaks the API, credentials accepted.

        With --tls-verify=false a registry that does not speak TLS at all is
        tried again over plain http (as skopeo and podman do).
        """
        try:
            self._ping()
        except RegistryError as exc:
            if self.options.tls_verify or self.scheme != "https" or exc.status is not None:
                raise
            self.scheme = "http"
            log.info("%s: no TLS answer; using plain http", self.ref.api_host)
            self._ping()

    def _ping(self) -> None:
        self.send("GET", f"{self.base}/v2/", stream=True).close()  # the body says nothing

    def list_tags(self) -> list[str]:
        """Every tag, following `Link` pagination: at most MAX_TAG_PAGES pages and
        MAX_TAGS tags, never a page twice (a `Link` back to a page read is a loop),
        never off the registry's origin."""
        tags: list[str] = []
        first = self.repo_url("tags/list")
        url: str | None = f"{first}?n=1000"
        seen: set[str] = set()
        while url is not None:
            if url in seen:
                raise RegistryError(f"{one_line(url)}: the tag list's `Link` leads back to it")
            if len(seen) >= MAX_TAG_PAGES:
                raise RegistryError(f"{first}: more than {MAX_TAG_PAGES} pages of tags")
            seen.add(url)
            response = self.send("GET", url, limit=TAG_PAGE_LIMIT)
            try:
                body = response.json()
            except (ValueError, RecursionError):
                raise RegistryError(f"{url}: tag list is not JSON") from None
            page = body.get("tags") if isinstance(body, dict) else None
            if page is None:
                page = []
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise RegistryError(f"{url}: tag list has no list of names")
            tags.extend(page)
            if len(tags) > MAX_TAGS:
                raise RegistryError(
                    f"{first}: more than {MAX_TAGS} tags (mount one: {self.ref.repo_str}:TAG)"
                )
            url = self._next_link(response, url)
        return tags

    def _next_link(self, response: httpx.Response, url: str) -> str | None:
        try:
            nxt = response.links.get("next", {}).get("url")
            if not nxt:
                return None
            joined = httpx.URL(url).join(nxt)
        except (httpx.InvalidURL, ValueError):
            raise RegistryError(f"{url}: the tag list's `Link` is not a URL") from None
        if _origin(joined) != _origin(httpx.URL(url)):
            raise RegistryError(
                f"{url}: the tag list's `Link` leads to another host ({one_line(str(joined))})"
            )
        return str(joined)

    def head_manifest(self, reference: str) -> httpx.Response:
        return self.send(
            "HEAD", self.repo_url(f"manifests/{reference}"), headers={"Accept": MANIFEST_ACCEPT}
        )

    def get_manifest(self, reference: str) -> httpx.Response:
        return self.send(
            "GET", self.repo_url(f"manifests/{reference}"), headers={"Accept": MANIFEST_ACCEPT}
        )

    @contextlib.contextmanager
    def blob_stream(self, digest: str, start: int) -> Iterator[httpx.Response]:
        """The blob from byte `start` on (206, or 200 from 0 if ranges are ignored)."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        response = self.send(
            "GET", self.repo_url(f"blobs/{digest}"), headers=headers, stream=True, ok=(200, 206)
        )
        try:
            yield response
        finally:
            response.close()
