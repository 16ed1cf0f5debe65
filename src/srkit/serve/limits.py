"""The server's defaults, in one place for `create_app`, `serve` and `srkit serve`'s options (no imports, so the
CLI reads them without loading the web stack)."""

from __future__ import annotations

HOST = "127.0.0.1"  # this machine only, unless --host says otherwise
PORT = 8000
MB = 1024 * 1024
MAX_UPLOAD_BYTES = 20 * MB
# 2000 x 2000 in -> 8000 x 8000 out: the float32 output alone is 768 MB (see inference.TILE for measured peaks).
MAX_PIXELS = 4_000_000
# One upscale at a time by default: a tiled upscale already keeps every CPU core busy.
MAX_JOBS = 1
MAX_QUEUE = 2
TIMEOUT_S = 120.0
