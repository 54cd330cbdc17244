"""``hypercorn jarvis_trio.asgi:app -k trio``: the app, configured from the environment."""

from __future__ import annotations

from jarvis_trio import collector, logs
from jarvis_trio.api import create_app
from jarvis_trio.config import Settings

settings = Settings()
logs.configure(settings.log_level, settings.log_format)
app = create_app(settings)
collector.settle_after_startup()  # as `jarvis-trio serve` does (cli.py)
