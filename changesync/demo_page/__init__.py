"""The live demo page, ``GET /demo/``: one flow's canvas, run and LLM output, drawn in the browser.

Served when ``demo_page`` is on (``changesync demo`` turns it on). The page is static: its script
follows the flow with the project's own browser client, whose compiled modules ``client/`` holds
(copied from ``clients/typescript`` by ``npm run build:demo-page``; a test checks that the copy is
current), so the page needs no npm on the machine that serves it. It reads its token from the URL
fragment (``/demo/#token=…``), which browsers never send to a server.

Only the files found here when the app is built are served, looked up by name: a request path is a
key of that table, never joined to a file-system path.
"""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

PAGE_DIR = Path(__file__).parent
PAGE_PREFIX = "/demo/"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Instead of the service's `default-src 'none'`: scripts, styles and the icon from here only (no
# inline code), and connections to this service only (its event stream). The other security
# headers (web.SECURITY_HEADERS) still apply.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def page_assets(directory: Path = PAGE_DIR) -> dict[str, tuple[Path, str]]:
    """The files the page is made of, by URL path below ``/demo/`` (``""`` is the page itself): path and media type."""
    assets = {
        path.relative_to(directory).as_posix(): (path, MEDIA_TYPES[path.suffix])
        for path in sorted(directory.rglob("*"))
        if path.suffix in MEDIA_TYPES and path.is_file()
    }
    assets[""] = assets["index.html"]
    return assets


def page_routes() -> list[BaseRoute]:
    """``GET /demo/`` and the page's scripts, styles and icon; no token needed (the page holds no data)."""
    assets = page_assets()

    async def page_asset(request: Request) -> Response:
        found = assets.get(request.path_params["path"])
        if found is None:
            raise HTTPException(status_code=404)
        path, media_type = found
        headers = {"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_CSP}
        return FileResponse(path, media_type=media_type, headers=headers)

    return [Route(PAGE_PREFIX + "{path:path}", page_asset, methods=["GET"])]
