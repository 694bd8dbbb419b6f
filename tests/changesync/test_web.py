import httpx

from changesync.app import create_app
from changesync.settings import load_settings


class TestErrors:
    async def test_an_unexpected_error_is_a_json_500_with_the_security_headers(self):
        """A handler that fails answers a JSON 500 that reveals nothing and still carries the security headers."""
        # Without its lifespan the app has no state, so /readyz fails with a KeyError: an unexpected error.
        app = create_app(load_settings(environ={"CHANGESYNC_AUTH_MODE": "none"}))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/readyz")
        assert response.status_code == 500
        assert response.json() == {"error": "internal error"}
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert "KeyError" not in response.text
