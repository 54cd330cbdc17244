"""The chat page (``GET /``): plain HTML, JS modules and CSS shipped in this package.

No build step, no CDN: the files are read once and served as they are. Third-party code
(Markdown, sanitising, highlighting) is vendored under ``vendor/``, with its licences
(``vendor/README.md``).

What is served is an allow-list: the package's own ``.js``, ``.mjs`` and ``.css`` files,
found once by walking the package, so a new module is served as soon as it ships, and
nothing else (no Python, no licence text, no name with ``..``) ever is.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
_PAGE = "index.html"


def asset(name: str) -> tuple[bytes, str] | None:
    """The file's bytes and content type; ``None`` for a name that is not ours.

    ``name`` is a path relative to this package, such as ``chat.js`` or
    ``vendor/marked.esm.js``.
    """
    content_type = assets().get(name)
    return None if content_type is None else (_read(name), content_type)


@cache
def assets() -> dict[str, str]:
    """Every servable file: its relative path and its content type."""
    found: dict[str, str] = {_PAGE: _TYPES[".html"]}

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
                continue
            suffix = entry.name[entry.name.rfind(".") :] if "." in entry.name else ""
            if suffix in (".js", ".mjs", ".css"):
                found[prefix + entry.name] = _TYPES[suffix]

    walk(resources.files(__package__), "")
    return found


@cache  # only ever called with the names of assets()
def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath(*name.split("/")).read_bytes()
