"""A small token endpoint following the distribution token spec, for a real registry.

The registry runs with `auth: token` (realm pointing here, `rootcertbundle`
holding this server's self-signed signing certificate). On `GET /token?
service=...&scope=repository:NAME:ACTIONS` with the right basic credentials it
answers `{"token": JWT, "access_token": JWT, "expires_in": 300}`: an RS256 JWT
signed with openssl, the certificate in the `x5c` header, granting the asked
actions on the repository. Wrong or missing credentials get 401.

`mode` makes it misbehave (hostile-registry tests): "html" (200 with an HTML
page), "huge" (200 with an endless JSON body), "error" (500 every time),
"expired" (a well-signed token that expired an hour ago: the registry answers
401 to it). `asked` counts the requests.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ISSUER = "ocifs-test-issuer"
SERVICE = "ocifs-test-registry"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    def __init__(self, workdir: Path, user: str, password: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = workdir / "token.key", workdir / "token.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=ocifs token signer", "-keyout", str(self.key), "-out", str(self.cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        self._x5c = base64.b64encode(der).decode()
        self._expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._user = user
        self.issued: list[str] = []  # scopes of the tokens handed out
        self.mode = "ok"
        self.asked = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def registry_config(self) -> dict[str, str]:
        return {
            "realm": self.realm,
            "service": SERVICE,
            "issuer": ISSUER,
            "rootcertbundle": str(self.cert),
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _sign(self, payload: bytes) -> bytes:
        return subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=payload, check=True, capture_output=True,
        ).stdout  # fmt: skip

    def _misbehave(self, h: BaseHTTPRequestHandler) -> bool:
        if self.mode == "html":
            body = b"<html><body>Service maintenance</body></html>"
            h.send_response(200)
            h.send_header("Content-Type", "text/html")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        elif self.mode == "huge":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.end_headers()  # no length: the body ends when the connection does
            h.close_connection = True
            try:
                h.wfile.write(b'{"token": "')
                while True:
                    h.wfile.write(b"A" * 65536)
            except OSError:
                pass
        elif self.mode == "error":
            h.send_response(500)
            h.send_header("Content-Length", "0")
            h.end_headers()
        else:
            return False
        return True

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        self.asked += 1
        if self._misbehave(h):
            return
        query = urllib.parse.parse_qs(urllib.parse.urlparse(h.path).query)
        if h.headers.get("Authorization") != self._expected:
            body = b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}'
            h.send_response(401)
        else:
            access = []
            for scope in query.get("scope", []):
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
                self.issued.append(scope)
            now = int(time.time()) - (7200 if self.mode == "expired" else 0)
            header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
            claims = {
                "iss": ISSUER,
                "sub": self._user,
                "aud": query.get("service", [SERVICE])[0],
                "exp": now + 300,
                "nbf": now - 10,
                "iat": now,
                "jti": os.urandom(8).hex(),
                "access": access,
            }
            signing = (
                f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
            )
            token = f"{signing}.{_b64url(self._sign(signing.encode()))}"
            body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
            h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
