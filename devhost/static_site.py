"""The local host's static files: the analysts' dashboard (dashboard/) at http://127.0.0.1:7071/.

Only GET/HEAD outside the route prefix come here, so /api/... is never shadowed. A path is served
only when it names a regular file inside the root after decoding and resolving symlinks: `..`
segments, encoded slashes or backslashes, NUL and anything that resolves outside the root are not
found (the caller answers its usual JSON 404). Only known file types are served, each with its
content type; in Azure, Static Web Apps serves the same folder (docs/deploy.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from devhost.stack import ROOT

DASHBOARD = ROOT / "dashboard"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
# What the page may load and where it may connect; the same policy is in staticwebapp.config.json.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time: a changed file shows on the next reload (the local host sets no ETag).
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str

    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type, **SECURITY_HEADERS}


def find(root: Path | None, url_path: str) -> StaticFile | None:
    """The file `url_path` (still percent-encoded, no query) names under `root`, or None."""
    if root is None:
        return None
    raw = url_path or "/"
    if "\\" in raw or "%2f" in raw.lower() or "%5c" in raw.lower():
        return None
    try:
        path = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        return None
    if "\x00" in path or not path.startswith("/"):
        return None
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") or p.startswith(".") for p in parts):
        return None  # no traversal, no dot-files
    if not parts or path.endswith("/"):
        parts.append("index.html")
    try:
        base = root.resolve(strict=True)
        target = base.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    if not target.is_relative_to(base) or not target.is_file():
        return None
    content_type = CONTENT_TYPES.get(target.suffix.lower())
    if content_type is None:
        return None
    return StaticFile(target.read_bytes(), content_type)
