"""HTTP API and web page for upscaling: `create_app` builds the FastAPI app, `serve` runs it (srkit serve).

Both are imported on first use, so `srkit.serve.limits` (the defaults the CLI shows) loads without the web stack.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from srkit.serve.app import create_app

        return create_app
    if name == "serve":
        from srkit.serve.server import serve

        return serve
    raise AttributeError(f"module 'srkit.serve' has no attribute {name!r}")
