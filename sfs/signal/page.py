"""The browser page that `sfs serve` serves at ``/``.

Its sources are in ``sfs/web/src``; ``scripts/build-web`` bundles them with esbuild
into ``sfs/web/static``, which is committed, so installing sfs needs no node.  Every
asset comes from here: no CDN, and a Content-Security-Policy that lets the page run
only its own script, style and service worker, and talk only to this server (the
Socket.IO websocket).  The page's secrets (the code's words, after ``#`` in a link)
never reach the server: browsers do not send the fragment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"

#: Only the page's own files.  'self' in connect-src covers the same-origin
#: websocket (CSP level 3); blob: and data: images are the QR code; the service
#: worker and the hidden download frame are same-origin.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "worker-src 'self'",
        "frame-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # A new sfs serve may come with a new page: never run a stale one.
    "Cache-Control": "no-cache",
}
#: URL path -> (file in STATIC_DIR, content type).
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/sw.js": ("sw.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str


def _load() -> dict[str, _Asset]:
    assets: dict[str, _Asset] = {}
    for path, (name, content_type) in PAGE_FILES.items():
        try:
            assets[path] = _Asset((STATIC_DIR / name).read_bytes(), content_type)
        except FileNotFoundError:
            continue  # an install without the page (a source tree never built)
    return assets


def add_page_routes(app: web.Application) -> None:
    """Serve the page's files, read once now, with the security headers."""
    assets = _load()

    async def serve(request: web.Request) -> web.Response:
        asset = assets.get(request.path)
        if asset is None:
            raise web.HTTPNotFound(text="this sfs serve has no web page (not built)")
        headers = dict(_HEADERS)
        if request.path == "/sw.js":
            headers["Service-Worker-Allowed"] = "/"
        headers["Content-Type"] = asset.content_type
        return web.Response(body=asset.body, headers=headers)

    for path in PAGE_FILES:
        app.router.add_get(path, serve)
