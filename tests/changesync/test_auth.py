import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from changesync.auth import ANONYMOUS, Authenticator, Authorizer, Principal
from changesync.errors import AuthenticationError, ConfigError
from changesync.queries import access_query
from changesync.settings import AuthSettings

SECRET = "s" * 32


def token(key=SECRET, algorithm="HS256", headers=None, **claims):
    now = int(time.time())
    body = {"sub": "alice", "exp": now + 60, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=algorithm, headers=headers)


def authenticate(authenticator, *, headers=None, cookies=None, query=None):
    return authenticator.authenticate(headers or {}, cookies or {}, query or {})


class TestAuthenticator:
    def test_sources_in_order(self):
        """The header wins over the cookie, which wins over the query parameter."""
        auth = Authenticator(AuthSettings(jwt_secret=SECRET))
        header, cookie, query = token(sub="h"), token(sub="c"), token(sub="q")
        both = authenticate(
            auth,
            headers={"authorization": f"Bearer {header}"},
            cookies={"changesync_token": cookie},
            query={"access_token": query},
        )
        assert both.subject == "h"
        assert authenticate(auth, cookies={"changesync_token": cookie}, query={"access_token": query}).subject == "c"
        assert authenticate(auth, query={"access_token": query}).subject == "q"

    @pytest.mark.parametrize("source", ["header", "cookie", "query"])
    def test_each_source_can_be_turned_off(self, source):
        """A disabled source is ignored, as if the token were absent."""
        auth = Authenticator(AuthSettings(jwt_secret=SECRET, **{source: False}))
        place = {
            "header": {"headers": {"authorization": f"Bearer {token()}"}},
            "cookie": {"cookies": {"changesync_token": token()}},
            "query": {"query": {"access_token": token()}},
        }[source]
        with pytest.raises(AuthenticationError, match="a bearer token is required"):
            authenticate(auth, **place)

    @pytest.mark.parametrize(
        ("claims", "message"),
        [
            ({"exp": int(time.time()) - 60}, "expired"),
            ({"nbf": int(time.time()) + 600}, "not valid yet"),
            ({"exp": None}, "invalid"),
            ({"sub": None}, "invalid"),
            ({"iss": "someone-else"}, "another issuer"),
            ({"aud": "other-app"}, "another audience"),
        ],
    )
    def test_claims_are_verified(self, claims, message):
        """exp, nbf, iss and aud are checked; exp and sub are required."""
        auth = Authenticator(AuthSettings(jwt_secret=SECRET, issuer="issuer", audience="changesync"))
        valid = {"iss": "issuer", "aud": "changesync"}
        with pytest.raises(AuthenticationError, match=message):
            authenticate(auth, query={"access_token": token(**{**valid, **claims})})

    @pytest.mark.parametrize(
        "bad",
        [
            token(key="x" * 32),
            jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, algorithm="none"),
            "not.a.token",
            "",
        ],
    )
    def test_forged_tokens_are_rejected(self, bad):
        """Wrong signatures, the "none" algorithm and garbage are all 401s."""
        auth = Authenticator(AuthSettings(jwt_secret=SECRET))
        with pytest.raises(AuthenticationError):
            authenticate(auth, headers={"authorization": f"Bearer {bad}"})

    def test_malformed_authorization_header(self):
        """An Authorization header that is not Bearer is refused with a clear message."""
        auth = Authenticator(AuthSettings(jwt_secret=SECRET))
        with pytest.raises(AuthenticationError, match="Bearer <token>"):
            authenticate(auth, headers={"authorization": "Basic dXNlcjpwYXNz"})

    def test_service_role(self):
        """A token whose roles claim holds the service role may read any flow."""
        auth = Authenticator(AuthSettings(jwt_secret=SECRET))
        assert authenticate(auth, query={"access_token": token(roles=["changesync-service"])}).is_service
        assert authenticate(auth, query={"access_token": token(roles="changesync-service")}).is_service
        assert not authenticate(auth, query={"access_token": token(roles=["editor"])}).is_service

    @pytest.mark.parametrize("curve", ["rsa", "ec"])
    def test_public_keys_and_jwks(self, tmp_path, curve):
        """RS256 and ES256 tokens verify with a PEM public key file and with a JWKS file."""
        private = rsa.generate_private_key(65537, 2048) if curve == "rsa" else ec.generate_private_key(ec.SECP256R1())
        algorithm = "RS256" if curve == "rsa" else "ES256"
        pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (tmp_path / "key.pem").write_bytes(pem)
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[algorithm].to_jwk(private.public_key()))
        (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": algorithm}]}))
        signed = token(key=private, algorithm=algorithm, headers={"kid": "k1"})
        by_pem = Authenticator(AuthSettings(jwt_public_key_file=str(tmp_path / "key.pem")))
        by_jwks = Authenticator(AuthSettings(jwks_file=str(tmp_path / "jwks.json")))
        assert authenticate(by_pem, query={"access_token": signed}).subject == "alice"
        assert authenticate(by_jwks, query={"access_token": signed}).subject == "alice"
        with pytest.raises(AuthenticationError, match="invalid"):
            authenticate(by_pem, query={"access_token": token()})  # HS256 must not pass a public-key setup

    def test_configuration_errors(self, tmp_path):
        """jwt mode without a key, or with unreadable key files, fails at start-up naming the setting."""
        with pytest.raises(ConfigError, match=r"auth\.jwt_secret"):
            Authenticator(AuthSettings())
        with pytest.raises(ConfigError, match=r"auth\.jwks_file"):
            Authenticator(AuthSettings(jwks_file=str(tmp_path / "missing.json")))
        with pytest.raises(ConfigError, match=r"auth\.jwt_public_key_file"):
            Authenticator(AuthSettings(jwt_public_key_file=str(tmp_path / "missing.pem")))

    def test_mode_none_is_anonymous_service(self):
        """Without authentication every request is the anonymous principal."""
        assert authenticate(Authenticator(AuthSettings(mode="none"))) is ANONYMOUS


class TestAuthorizer:
    async def test_decisions_are_cached_for_the_ttl(self):
        """A decision is asked once per TTL; fresh=True asks again; services are never asked."""
        calls = []
        now = [0.0]

        async def check(subject, flow_id):
            calls.append((subject, flow_id))
            return flow_id == "mine"

        authorizer = Authorizer(check, ttl_s=30, clock=lambda: now[0])
        alice = Principal("alice")
        assert await authorizer.allowed(alice, "mine")
        assert not await authorizer.allowed(alice, "theirs")
        assert await authorizer.allowed(alice, "mine")
        assert len(calls) == 2
        now[0] = 31
        assert await authorizer.allowed(alice, "mine")
        assert await authorizer.allowed(alice, "mine", fresh=True)
        assert await authorizer.allowed(Principal("svc", is_service=True), "anything")
        assert len(calls) == 4

    def test_access_query_template(self):
        """The placeholders are filled wherever they appear; other values are kept."""
        template = '{"_id": "{flowId}", "$or": [{"ownerId": "{sub}"}, {"members": "{sub}"}], "archived": false}'
        assert access_query(template, "12", "alice") == {
            "_id": {"$in": ["12", 12]},
            "$or": [{"ownerId": "alice"}, {"members": "alice"}],
            "archived": False,
        }
