"""The HTTP edge (quart-trio): the app, its middleware, and its routes as blueprints."""

from jarvis_trio.api.app import create_app
from jarvis_trio.api.state import JarvisState, state

__all__ = ["JarvisState", "create_app", "state"]
