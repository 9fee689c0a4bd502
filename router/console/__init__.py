"""The web console: static files served by ``crossroute api`` at ``/console/``.

The page is plain HTML, CSS and one ES module shipped in this package (no CDN, no build step). It
calls the same API with the same key (``Authorization: Bearer``, kept in the tab's sessionStorage);
the files themselves hold no data and are served without a key. Every response carries a strict
Content-Security-Policy: scripts and styles from this origin only, no inline script, no frames,
images from this origin or the user's own files (``blob:``), so hostile text that reached the page
could not run even if the page inserted it as HTML (it does not: it sets ``textContent``).
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response

__all__ = ["CSP", "add_console"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "console.js": ("console.js", "text/javascript; charset=utf-8"),
    "console.css": ("console.css", "text/css; charset=utf-8"),
}
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def add_console(app: FastAPI) -> None:
    """Serve the console's files at ``/console/`` (``/console`` redirects there)."""
    static = resources.files("router.console").joinpath("static")
    payloads = {path: (static.joinpath(name).read_bytes(), kind)
                for path, (name, kind) in _FILES.items()}  # fmt: skip

    @app.get("/console", include_in_schema=False)
    def console_root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=308)

    @app.get("/console/", include_in_schema=False)
    def console_page() -> Response:
        return console_file("")

    @app.get("/console/{name}", include_in_schema=False)
    def console_file(name: str) -> Response:
        found = payloads.get(name)
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(found[0], media_type=found[1], headers=_HEADERS)
