"""The operator console's files (serve_app/console/), served by the router at /ui.

No separate web server and no build step: plain HTML, CSS and JavaScript modules shipped as
package data. The files are read once, at import, into a fixed table; a request can only
name one of them, so no path (`..`, encoded slashes, absolute paths) reaches the disk.
Every answer says what it is (content type, `nosniff`), is revalidated by its ETag
(`no-cache`: a new release is seen at once, an unchanged file costs a 304), and the page
may load nothing from anywhere else (Content-Security-Policy).
"""

from __future__ import annotations

import hashlib
from importlib import resources

from serve_app.protocol.errors import NotFound
from serve_app.serving.asgi import HttpRequest, Reply

INDEX = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
}


class Asset:
    __slots__ = ("body", "content_type", "etag")

    def __init__(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type
        self.etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def load_assets() -> dict[str, Asset]:
    """Every file of the console's folder with a known type, by file name."""
    found = {}
    for entry in (resources.files("serve_app") / "console").iterdir():
        suffix = entry.name[entry.name.rfind(".") :] if "." in entry.name else ""
        if entry.is_file() and suffix in CONTENT_TYPES:
            found[entry.name] = Asset(entry.read_bytes(), CONTENT_TYPES[suffix])
    return found


ASSETS = load_assets()


def answer(request: HttpRequest, name: str | None) -> Reply:
    """The asset `name` (the page itself for `/ui` and `/ui/`), or a 304 when unchanged."""
    asset = ASSETS.get(name or INDEX)
    if asset is None:
        raise NotFound(f"the console has no file '{(name or '')[:64]}'")
    headers = {**SECURITY_HEADERS, "etag": asset.etag, "cache-control": "no-cache"}
    if request.headers.get("if-none-match") == asset.etag:
        return Reply(b"", 304, headers, asset.content_type)
    return Reply(asset.body, 200, headers, asset.content_type)
