"""The chat page (``GET /``): plain HTML, JS and CSS shipped in this package.

No build step, no CDN: the three files are read once and served as they are.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "chat.js": "text/javascript; charset=utf-8",
    "chat.css": "text/css; charset=utf-8",
}


def asset(name: str) -> tuple[bytes, str] | None:
    """The file's bytes and content type; ``None`` for a name that is not ours."""
    content_type = _TYPES.get(name)
    return None if content_type is None else (_read(name), content_type)


@cache  # only ever called with the names above
def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()
