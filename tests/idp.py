"""A stand-in identity provider: signing keys, tokens signed with them, and their JWKS served over
real HTTP on loopback.

The server runs in a thread of its own (``http.server``): the service fetches the JWKS with blocking
calls, at start-up even on the event loop's thread, so it must not share a loop with the test.
Imported by tests as ``idp`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

JWKS_PATH = "/.well-known/jwks.json"
# How long a hung answer waits at most, should a test forget to release it.
HANG_LIMIT_S = 30.0
# How soon the server notices that it should stop (http.server's default: 0.5 s).
POLL_INTERVAL_S = 0.02


@dataclass
class IdentityProvider:
    """Keys by kid; ``serve()`` publishes the public halves. Set ``status`` to answer with an HTTP
    error instead, ``body`` to answer with other bytes, ``redirect_to`` to redirect, or ``hang()`` to
    answer nothing for a while."""

    keys: dict[str, tuple[Any, str]] = field(default_factory=dict)
    """kid -> (private key, algorithm)."""
    status: int = 200
    body: bytes | None = None
    redirect_to: str = ""
    fetched_at: list[float] = field(default_factory=list)
    """``time.monotonic()`` of every JWKS request received."""
    port: int = 0
    _release: threading.Event = field(default_factory=threading.Event)
    _running: tuple[ThreadingHTTPServer, threading.Thread] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{JWKS_PATH}"

    def add_key(self, kid: str, algorithm: str = "ES256") -> None:
        if algorithm == "ES256":
            private: Any = ec.generate_private_key(ec.SECP256R1())
        else:
            private = rsa.generate_private_key(65537, 2048)
        self.keys[kid] = (private, algorithm)

    def remove_key(self, kid: str) -> None:
        del self.keys[kid]

    def jwks(self) -> dict[str, Any]:
        published = []
        for kid, (private, algorithm) in list(self.keys.items()):  # the test thread may change them
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[algorithm].to_jwk(private.public_key()))
            published.append({**jwk, "kid": kid, "alg": algorithm, "use": "sig"})
        return {"keys": published}

    def token(self, kid: str, subject: str = "alice", *, lifetime_s: int = 300, **claims: Any) -> str:
        """A token signed with the key ``kid``; with a fresh key of no JWKS when ``kid`` is not one of ``keys``."""
        private, algorithm = self.keys.get(kid) or (ec.generate_private_key(ec.SECP256R1()), "ES256")
        body = {"sub": subject, "exp": int(time.time()) + lifetime_s, **claims}
        return jwt.encode(body, private, algorithm=algorithm, headers={"kid": kid})

    def hang(self) -> None:
        """Answer no request until ``release()``."""
        self._release.clear()

    def release(self) -> None:
        self._release.set()

    def start(self) -> None:
        """Serve the JWKS at ``url`` (on the same port again when it was served before)."""
        provider = self
        self._release.set()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetched_at.append(time.monotonic())
                provider._release.wait(HANG_LIMIT_S)
                # The client may have given up waiting for a hung answer.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._answer()

            def _answer(self) -> None:
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                if provider.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", provider.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if provider.status != 200:
                    self.send_error(provider.status)
                    return
                body = provider.body if provider.body is not None else json.dumps(provider.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, args=(POLL_INTERVAL_S,), name="test-idp", daemon=True)
        thread.start()
        self._running = (server, thread)

    def stop(self) -> None:
        """Stop serving: connections to ``url`` are refused until ``start()``."""
        if self._running is None:
            return
        server, thread = self._running
        self._running = None
        self._release.set()
        server.shutdown()
        server.server_close()
        thread.join()

    @contextlib.contextmanager
    def serve(self) -> Iterator[IdentityProvider]:
        """Serve the JWKS until the block ends."""
        self.start()
        try:
            yield self
        finally:
            self.stop()
