"""Signing keys published by an identity provider at a JWKS URL (``auth.jwks_url``), cached and kept fresh.

The set is fetched once at start-up (``RemoteKeySet.load``, which blocks: it runs before the event
loop serves), then in a worker thread by ``RemoteKeySet.run``: every ``auth.jwks_refresh_interval_s``,
and soon after a token names a key id the set does not hold, but never sooner than
``MIN_REFRESH_INTERVAL_S`` after the previous fetch, whatever the tokens say. Verifying a token only
reads the keys held in memory: a request never waits on the network.

A fetch that fails (no connection, no answer within ``auth.jwks_timeout_s``, an HTTP error, a body
that is not a usable JWKS) changes nothing: the keys fetched last stay in use. The first failure of a
run of them is logged as a warning, the others at debug level; every one is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import jwt

from .errors import ConfigError, JwksUnavailableError
from .parsers import redact_uri

logger = logging.getLogger(__name__)

# Least time between two fetches that tokens with unknown key ids ask for: a flood of tokens with
# made-up kids costs the identity provider one request per this many seconds, from each process.
MIN_REFRESH_INTERVAL_S = 10.0
# Largest JWKS read; real ones are a few kilobytes.
MAX_JWKS_BYTES = 1024 * 1024
READ_CHUNK_BYTES = 16 * 1024
# Some endpoints behind web application firewalls refuse urllib's default agent.
USER_AGENT = "changesync"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: it could lead from https:// to plain http://, or to another host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def fetch_key_set(url: str, *, timeout_s: float) -> jwt.PyJWKSet:
    """GET ``url`` and read it as a JWKS; blocking, and given up after about ``timeout_s``.

    Every failure becomes ``JwksUnavailableError`` here, with a cause an operator can act on.
    """
    deadline = time.monotonic() + timeout_s
    try:
        request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": USER_AGENT})
        # The timeout bounds each blocking socket operation; the deadline, the whole body.
        with _OPENER.open(request, timeout=timeout_s) as response:
            body = bytearray()
            while chunk := response.read(READ_CHUNK_BYTES):
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksUnavailableError(f"the answer is larger than {MAX_JWKS_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError
    except urllib.error.HTTPError as exc:
        exc.close()
        target = exc.headers.get("Location") if 300 <= exc.code < 400 else None
        moved = f", to {target!r} (redirects are not followed)" if target else ""
        raise JwksUnavailableError(f"HTTP {exc.code}{moved}") from None
    except TimeoutError:
        raise JwksUnavailableError(f"no answer within {timeout_s:g} s") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise JwksUnavailableError(f"no answer within {timeout_s:g} s") from None
        raise JwksUnavailableError(f"cannot connect ({reason})") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise JwksUnavailableError(f"the connection failed ({exc!r})") from None
    try:
        document = json.loads(body)
    except ValueError:
        raise JwksUnavailableError("the answer is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksUnavailableError('the answer is not a JWKS (a JSON object with a "keys" list)')
    try:
        return jwt.PyJWKSet.from_dict(document)
    except (jwt.PyJWTError, ValueError, TypeError):  # older PyJWT lets a malformed key's own error through
        raise JwksUnavailableError("the JWKS holds no usable key (RSA or EC public keys)") from None


def key_for(keys: jwt.PyJWKSet, kid: object) -> Any:
    """The verification key a token's ``kid`` names (the first key when the token names none); ``KeyError``."""
    if not kid:
        return keys.keys[0].key
    if not isinstance(kid, str):
        raise KeyError(kid)
    return keys[kid].key


def key_ids(keys: jwt.PyJWKSet) -> list[str]:
    return sorted(str(key.key_id) for key in keys.keys)


class RemoteKeySet:
    """The JWKS at ``url``: the keys fetched last, and the task that fetches them again (``run``).

    ``on_failure`` is called once per failed fetch (a metric). ``min_refresh_interval_s`` spaces the
    fetches that unknown key ids ask for; it is never longer than ``refresh_interval_s``.
    """

    def __init__(
        self,
        url: str,
        *,
        refresh_interval_s: float,
        timeout_s: float,
        min_refresh_interval_s: float = MIN_REFRESH_INTERVAL_S,
        on_failure: Callable[[], object] | None = None,
    ) -> None:
        if refresh_interval_s <= 0 or timeout_s <= 0 or min_refresh_interval_s < 0:
            raise ValueError(
                "refresh_interval_s and timeout_s must be > 0 and min_refresh_interval_s >= 0, got "
                f"{refresh_interval_s}, {timeout_s} and {min_refresh_interval_s}"
            )
        self.url = url
        self.refresh_interval_s = refresh_interval_s
        self.timeout_s = timeout_s
        self.min_refresh_interval_s = min(min_refresh_interval_s, refresh_interval_s)
        self.failed_fetches = 0
        """Fetches that failed since the last one that succeeded."""
        self._on_failure = on_failure
        self._keys: jwt.PyJWKSet | None = None
        self._last_fetch_at = time.monotonic()
        self._unknown_kid_seen = asyncio.Event()

    @property
    def shown_url(self) -> str:
        return redact_uri(self.url)

    @property
    def key_ids(self) -> list[str]:
        """The key ids held now (empty before ``load``)."""
        return [] if self._keys is None else key_ids(self._keys)

    def load(self) -> None:
        """Fetch the set now, blocking; ``ConfigError`` naming ``auth.jwks_url`` and the cause when it fails.

        For start-up, before the event loop serves: without keys the service could accept no token.
        """
        self._last_fetch_at = time.monotonic()
        try:
            keys = fetch_key_set(self.url, timeout_s=self.timeout_s)
        except JwksUnavailableError as exc:
            raise ConfigError(
                "auth.jwks_url", self.shown_url, f"a JWKS URL that answers at start-up ({exc.cause})"
            ) from None
        self._keys = keys
        logger.info("JWKS from %s: keys %s", self.shown_url, ", ".join(key_ids(keys)))

    def key_for(self, kid: object) -> Any:
        """The key a token's ``kid`` names; ``KeyError`` when the set holds none, after asking ``run``
        for a fetch (which it makes once ``min_refresh_interval_s`` has passed since the last one).
        Call it on the event loop's thread (``run`` waits there for the request)."""
        if self._keys is None:
            raise RuntimeError("RemoteKeySet.load() was not called")
        try:
            return key_for(self._keys, kid)
        except KeyError:
            self._unknown_kid_seen.set()
            raise

    async def run(self) -> None:
        """Fetch the set again whenever it is due (see the module's docstring), until cancelled."""
        while True:
            await self._until_due()
            await self.refresh()

    async def refresh(self) -> bool:
        """Fetch the set now, in a worker thread; keep the keys held when that fails. Whether it worked."""
        self._last_fetch_at = time.monotonic()
        try:
            keys = await asyncio.to_thread(fetch_key_set, self.url, timeout_s=self.timeout_s)
        except JwksUnavailableError as exc:
            self._failed(exc.cause)
            return False
        finally:
            # Unknown kids seen while the fetch ran are answered by it.
            self._unknown_kid_seen.clear()
        self._replace(keys)
        return True

    async def _until_due(self) -> None:
        """Until the next fetch: the refresh interval after the last one or, once a token named an
        unknown key id, the minimum interval after it (whichever comes first)."""
        periodic_at = self._last_fetch_at + self.refresh_interval_s
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, periodic_at - time.monotonic())):
                await self._unknown_kid_seen.wait()
                logger.debug("a token names a key id the JWKS from %s does not hold: fetching it again", self.shown_url)
                delay_s = self._last_fetch_at + self.min_refresh_interval_s - time.monotonic()
                if delay_s > 0:
                    await asyncio.sleep(delay_s)

    def _failed(self, cause: str) -> None:
        self.failed_fetches += 1
        if self._on_failure is not None:
            self._on_failure()
        held = len(self._keys.keys) if self._keys is not None else 0
        if self.failed_fetches == 1:
            logger.warning(
                "cannot fetch the JWKS from %s: %s; the %d keys fetched before stay in use, trying again in %g s",
                self.shown_url,
                cause,
                held,
                self.refresh_interval_s,
            )
        else:
            logger.debug("JWKS from %s: fetch %d in a row failed: %s", self.shown_url, self.failed_fetches, cause)

    def _replace(self, keys: jwt.PyJWKSet) -> None:
        if self.failed_fetches:
            logger.info("the JWKS at %s answers again, after %d failed fetches", self.shown_url, self.failed_fetches)
            self.failed_fetches = 0
        before = set(self.key_ids)
        self._keys = keys
        after = set(key_ids(keys))
        if before != after:
            logger.info(
                "JWKS from %s changed: added %s, removed %s",
                self.shown_url,
                ", ".join(sorted(after - before)) or "none",
                ", ".join(sorted(before - after)) or "none",
            )
