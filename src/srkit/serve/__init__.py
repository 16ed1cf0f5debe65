"""HTTP API and web page for upscaling: `create_app` builds the FastAPI app, `serve` runs it (srkit serve)."""

from __future__ import annotations

from srkit.serve.app import create_app
from srkit.serve.server import serve

__all__ = ["create_app", "serve"]
