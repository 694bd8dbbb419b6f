"""Who is asking (JWT authentication) and what they may read (per-flow authorization).

Tokens come from the ``Authorization: Bearer`` header, a cookie, or the ``access_token`` query
parameter (browsers' ``EventSource`` cannot set headers); each source can be turned off. They are
verified for signature, ``exp``, ``nbf`` and, when configured, ``iss`` and ``aud``, against one key
source: an HS256 secret, a PEM public key, a JWKS file, or a JWKS URL (``changesync.jwks``, which
keeps its keys fresh in the background). A token never appears in logs or metrics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

from .errors import AuthenticationError, ConfigError
from .jwks import RemoteKeySet, key_for
from .parsers import redact_uri
from .settings import AuthSettings

if TYPE_CHECKING:
    from .metrics import Metrics

# Clock skew tolerated on exp/nbf between the token issuer and this service, in seconds.
LEEWAY_S = 10
HMAC_ALGORITHMS = ["HS256"]
PUBLIC_KEY_ALGORITHMS = ["RS256", "ES256"]
# Cached authorization answers kept at most, whatever the TTL (one entry per subject and flow).
MAX_CACHED_DECISIONS = 100_000


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    is_service: bool = False
    expires_at: float | None = None
    roles: frozenset[str] = frozenset()
    """The token's roles (``auth.roles_claim``)."""
    anonymous: bool = False
    """Authentication is off: the principal may read and publish to any flow."""


ANONYMOUS = Principal("anonymous", is_service=True, anonymous=True)
"""The principal of every request when ``auth.mode = "none"``: it may read any flow."""


@dataclass(frozen=True, slots=True)
class VerificationKeys:
    """What tokens are checked against: one key (HS256 secret or PEM), a JWKS, or a JWKS URL's keys."""

    algorithms: tuple[str, ...]
    key: Any = None
    jwks: jwt.PyJWKSet | None = None
    remote: RemoteKeySet | None = None


def load_keys(settings: AuthSettings, *, metrics: Metrics | None = None) -> VerificationKeys | None:
    """Read and check the configured key source (``None`` when authentication is off); a JWKS URL is
    fetched once, blocking (failed fetches later on are counted in ``metrics``).

    Raises ``ConfigError`` naming the setting when no key is configured in ``jwt`` mode, the
    configured one cannot be read, or a JWKS URL is configured beside another key source.
    """
    if settings.mode == "none":
        return None
    if settings.jwks_url:
        others = {
            "auth.jwks_file": settings.jwks_file,
            "auth.jwt_public_key_file": settings.jwt_public_key_file,
            "auth.jwt_secret": settings.jwt_secret,
        }
        if set_too := [key for key, value in others.items() if value]:
            raise ConfigError(
                "auth.jwks_url",
                redact_uri(settings.jwks_url),
                f"the only key source ({', '.join(set_too)} is set too)",
            )
        remote = RemoteKeySet(
            settings.jwks_url,
            refresh_interval_s=settings.jwks_refresh_interval_s,
            timeout_s=settings.jwks_timeout_s,
            on_failure=None if metrics is None else metrics.jwks_fetch_failures.inc,
        )
        remote.load()
        return VerificationKeys(tuple(PUBLIC_KEY_ALGORITHMS), remote=remote)
    if settings.jwks_file:
        try:
            jwks = jwt.PyJWKSet.from_dict(json.loads(Path(settings.jwks_file).read_text()))
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise ConfigError("auth.jwks_file", settings.jwks_file, f"a readable JWKS file ({exc})") from exc
        return VerificationKeys(tuple(PUBLIC_KEY_ALGORITHMS), jwks=jwks)
    if settings.jwt_public_key_file:
        try:
            key = Path(settings.jwt_public_key_file).read_text()
            jwt.algorithms.RSAAlgorithm  # noqa: B018 - fails early when the crypto extra is missing
        except (OSError, AttributeError) as exc:
            raise ConfigError(
                "auth.jwt_public_key_file", settings.jwt_public_key_file, f"a readable PEM public key ({exc})"
            ) from exc
        return VerificationKeys(tuple(PUBLIC_KEY_ALGORITHMS), key=key)
    if settings.jwt_secret:
        return VerificationKeys(tuple(HMAC_ALGORITHMS), key=settings.jwt_secret)
    raise ConfigError(
        "auth.jwt_secret",
        "<unset>",
        "a secret (CHANGESYNC_AUTH_JWT_SECRET), a public key file or a JWKS file or URL (CHANGESYNC_AUTH_JWKS_URL); "
        'or auth.mode = "none" (CHANGESYNC_AUTH_MODE=none) to run without authentication',
    )


class Authenticator:
    """Checks requests' tokens against the configured keys (read, or fetched, once: here).

    With ``auth.jwks_url``, run ``remote_keys.run()`` while serving to keep the keys fresh.
    """

    def __init__(self, settings: AuthSettings, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.keys = load_keys(settings, metrics=metrics)
        self.enabled = self.keys is not None

    @property
    def remote_keys(self) -> RemoteKeySet | None:
        """The JWKS URL's keys, to refresh in the background; ``None`` for any other key source."""
        return None if self.keys is None else self.keys.remote

    def token_from(self, headers: Mapping[str, str], cookies: Mapping[str, str], query: Mapping[str, str]) -> str:
        settings = self.settings
        if settings.header and "authorization" in headers:
            scheme, _, token = headers["authorization"].partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthenticationError("the Authorization header must be 'Bearer <token>'")
            return token.strip()
        if settings.cookie and cookies.get(settings.cookie_name):
            return cookies[settings.cookie_name]
        if settings.query and query.get("access_token"):
            return query["access_token"]
        raise AuthenticationError("a bearer token is required")

    def authenticate(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], query: Mapping[str, str]
    ) -> Principal:
        keys = self.keys
        if keys is None:
            return ANONYMOUS
        token = self.token_from(headers, cookies, query)
        try:
            key = keys.key
            if keys.remote is not None:
                key = keys.remote.key_for(jwt.get_unverified_header(token).get("kid"))
            elif keys.jwks is not None:
                key = key_for(keys.jwks, jwt.get_unverified_header(token).get("kid"))
            claims = jwt.decode(
                token,
                key,
                algorithms=list(keys.algorithms),
                audience=self.settings.audience or None,
                issuer=self.settings.issuer or None,
                leeway=LEEWAY_S,
                options={"require": ["exp", "sub"], "verify_aud": bool(self.settings.audience)},
            )
        except KeyError:
            raise AuthenticationError("the token's key id is unknown") from None
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationError("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError("the token is from another issuer") from None
        except jwt.PyJWTError:
            raise AuthenticationError("the token is invalid") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError("the token has no subject")
        claimed = claims.get(self.settings.roles_claim, [])
        listed = [claimed] if isinstance(claimed, str) else claimed if isinstance(claimed, list) else []
        roles = frozenset(role for role in listed if isinstance(role, str))
        return Principal(subject, self.settings.service_role in roles, float(claims["exp"]), roles)


AccessCheck = Callable[[str, str], Awaitable[bool]]
"""``check(subject, flow_id)``: does the configured query find a document?"""


class Authorizer:
    """Per-flow decisions, cached for ``cache_ttl_s``; service principals may read any flow."""

    def __init__(self, check: AccessCheck, *, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.check = check
        self.ttl_s = ttl_s
        self._clock = clock
        self._decisions: dict[tuple[str, str], tuple[bool, float]] = {}

    async def allowed(self, principal: Principal, flow_id: str, *, fresh: bool = False) -> bool:
        if principal.is_service:
            return True
        key = (principal.subject, flow_id)
        now = self._clock()
        cached = self._decisions.get(key)
        if cached is not None and cached[1] > now and not fresh:
            return cached[0]
        decision = await self.check(principal.subject, flow_id)
        if len(self._decisions) >= MAX_CACHED_DECISIONS:
            self._decisions = {k: v for k, v in self._decisions.items() if v[1] > now}
            if len(self._decisions) >= MAX_CACHED_DECISIONS:
                self._decisions.clear()
        self._decisions[key] = (decision, now + self.ttl_s)
        return decision
