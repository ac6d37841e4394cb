"""HTTP to one registry repository: auth handshake, retries, bounded connections.

One `httpx.Client` per process (the daemon forks after the mount-time checks,
and a pool must not cross a fork), shared by worker threads (httpx clients are
thread-safe). Its pool holds at most `max_connections` connections: that is
the bound on concurrent requests; further requests wait for a free connection.

Every request is retried on connection errors, timeouts and 5xx answers with
exponential backoff, and after `Retry-After` (capped) on 429, `retries` times;
then it fails with a one-line `RegistryError` naming the URL and the cause.
TLS failures and 4xx answers are not retried.

Auth (distribution spec): a 401 with `WWW-Authenticate: Bearer realm=...`
fetches a token from the realm for the challenge's scope (default
`repository:<repo>:pull`) with the credentials, if any, as basic auth, caches
it per scope and retries once; `Basic` sends the credentials on every request.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import os
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from ocifs.errors import RegistryError, Unmounting
from ocifs.registry.auth import Challenge, Credentials, parse_challenge
from ocifs.registry.reference import Reference

log = logging.getLogger(__name__)

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


def describe(exc: BaseException) -> str:
    """One line for a transport error (httpx's own text, or the class name)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text or type(exc).__name__


def _is_tls_failure(exc: httpx.TransportError) -> bool:
    """A TLS handshake that failed: retrying cannot help (unlike a refused connection)."""
    text = str(exc)
    return "[SSL" in text or "certificate verify failed" in text


def _unknown_host(exc: httpx.TransportError) -> bool:
    """The name does not resolve (EAI_NONAME): not worth retrying, unlike EAI_AGAIN."""
    return isinstance(exc, httpx.ConnectError) and "Name or service not known" in str(exc)


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


def error_reason(response: httpx.Response) -> str:
    """`404 MANIFEST_UNKNOWN: manifest unknown` from a distribution error body, if any."""
    reason = f"{response.status_code} {response.reason_phrase}".strip()
    try:
        if response.is_stream_consumed or response.headers.get("content-type", "").startswith(
            "application/json"
        ):
            errors = response.json().get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                code, message = errors[0].get("code"), errors[0].get("message")
                return f"{response.status_code} {code}: {message}"
    except (ValueError, AttributeError, httpx.HTTPError):
        pass
    return reason


class RegistryClient:
    """See the module docstring. Thread-safe."""

    def __init__(self, ref: Reference, options: ClientOptions) -> None:
        self.ref = ref
        self.options = options
        self.scheme = "https"
        self._verify = _ssl_context(ref, options)
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._pid = -1
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._challenge: Challenge | None = None
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
                    follow_redirects=True,
                    headers={"User-Agent": USER_AGENT},
                )
                self._pid = os.getpid()
            return self._client

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
    ) -> httpx.Response:
        """One request with auth and retries; the response has a status in `ok`.

        Streamed responses are the caller's to close. Raises RegistryError, or
        Unmounting once `stopping` is set (no new request after the unmount).
        """
        attempt = 0
        reauthed = False
        scope = self._scope(None)
        while True:
            if self.stopping.is_set():
                raise Unmounting(f"{method} {url}: not sent (unmounting)")
            hdrs = dict(headers or {})
            auth = self._auth_header(scope)
            if auth is not None:
                hdrs["Authorization"] = auth
            delay = self.options.backoff * (2**attempt)
            client = self.http()
            try:
                request = client.build_request(method, url, headers=hdrs)
                response = client.send(request, stream=stream)
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.ConnectError) and _is_tls_failure(exc):
                    raise RegistryError(
                        f"{url}: TLS failure: {describe(exc)} ({_tls_hint(exc)})"
                    ) from None
                if _unknown_host(exc):
                    raise RegistryError(f"{method} {url}: {describe(exc)}") from None
                if attempt >= self.options.retries:
                    raise RegistryError(
                        f"{method} {url}: {describe(exc)} (after {attempt + 1} attempts)"
                    ) from None
                log.warning("%s %s: %s; retrying in %.2f s", method, url, describe(exc), delay)
            else:
                status = response.status_code
                if status in ok:
                    return response
                reason = self._reason(response, stream)
                if status == 401 and not reauthed:
                    reauthed = True
                    scope = self._authenticate(response, url)
                    continue
                if status == 429 and attempt < self.options.retries:
                    delay = _retry_after(response, delay)
                    log.warning("%s %s: %s; retrying in %.2f s", method, url, reason, delay)
                elif status >= 500 and attempt < self.options.retries:
                    log.warning("%s %s: %s; retrying in %.2f s", method, url, reason, delay)
                else:
                    raise RegistryError(self._explain(url, status, reason), status=status)
            attempt += 1
            self._pause(delay, f"{method} {url}")

    def _pause(self, seconds: float, what: str) -> None:
        """The wait before a retry; cut short (Unmounting) when unmounting, so a
        download thread in it does not outlive the unmount."""
        if self.stopping.wait(seconds):
            raise Unmounting(f"{what}: stopped (unmounting)")

    @staticmethod
    def _reason(response: httpx.Response, stream: bool) -> str:
        try:
            if stream:
                response.read()
            return error_reason(response)
        except httpx.HTTPError:
            return f"{response.status_code} {response.reason_phrase}"
        finally:
            response.close()

    def _explain(self, url: str, status: int, reason: str) -> str:
        if status == 401:
            creds = self.options.credentials
            if creds is None:
                return f"{url}: {reason}: the registry wants credentials (--creds, --authfile)"
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
                f"{url}: unsupported auth challenge {challenge.scheme!r}", status=401
            )
        scope = self._scope(challenge)
        self._tokens[scope] = self._fetch_token(challenge, scope)
        # later requests use this scope's token first (same repository, same rights)
        self._tokens.setdefault(self._scope(None), self._tokens[scope])
        return scope

    def _fetch_token(self, challenge: Challenge, scope: str) -> str:
        realm = challenge.params["realm"]
        params = {"scope": scope}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        creds = self.options.credentials
        headers = {"Authorization": creds.basic_header()} if creds is not None else {}
        attempt = 0
        while True:
            try:
                response = self.http().get(realm, params=params, headers=headers)
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.ConnectError) and _is_tls_failure(exc):
                    raise RegistryError(f"{realm}: TLS failure: {describe(exc)}") from None
                if attempt >= self.options.retries:
                    raise RegistryError(f"token endpoint {realm}: {describe(exc)}") from None
            else:
                if response.status_code == 200:
                    break
                if response.status_code < 500 or attempt >= self.options.retries:
                    who = f"credentials from {creds.origin}" if creds else "anonymous access"
                    raise RegistryError(
                        f"token endpoint {realm}: {error_reason(response)} ({who}, scope {scope})",
                        status=401,
                    )
            self._pause(self.options.backoff * (2**attempt), f"token endpoint {realm}")
            attempt += 1
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token endpoint {realm}: answer holds no token")
        return token

    # -- the API ------------------------------------------------------------------------

    def ping(self) -> None:
        """`GET /v2/`: reachable, speaks the API, credentials accepted.

        With --tls-verify=false a registry that does not speak TLS at all is
        tried again over plain http (as skopeo and podman do).
        """
        try:
            self.send("GET", f"{self.base}/v2/")
        except RegistryError as exc:
            if self.options.tls_verify or self.scheme != "https" or exc.status is not None:
                raise
            self.scheme = "http"
            log.info("%s: no TLS answer; using plain http", self.ref.api_host)
            self.send("GET", f"{self.base}/v2/")

    def list_tags(self) -> list[str]:
        """Every tag, following `Link` pagination."""
        tags: list[str] = []
        url: str | None = self.repo_url("tags/list?n=1000")
        seen = 0
        while url is not None and seen < 10_000:
            seen += 1
            response = self.send("GET", url)
            try:
                body = response.json()
            except ValueError:
                raise RegistryError(f"{url}: tag list is not JSON") from None
            page = body.get("tags") if isinstance(body, dict) else None
            if page is None:
                page = []
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise RegistryError(f"{url}: tag list has no list of names")
            tags.extend(page)
            url = self._next_link(response, url)
        return tags

    def _next_link(self, response: httpx.Response, url: str) -> str | None:
        nxt = response.links.get("next", {}).get("url")
        if not nxt:
            return None
        return str(httpx.URL(url).join(nxt))

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
