"""`srkit serve`: build the app for a device and run it under uvicorn."""

from __future__ import annotations

import ipaddress
import sys
from typing import Any

from srkit.serve.app import create_app
from srkit.serve.limits import HOST, MAX_JOBS, MAX_PIXELS, MAX_QUEUE, MAX_UPLOAD_BYTES, PORT, TIMEOUT_S


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything: treat it as public


def serve(
    *,
    host: str = HOST,
    port: int = PORT,
    models: list[str] | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_jobs: int = MAX_JOBS,
    max_queue: int = MAX_QUEUE,
    timeout_s: float = TIMEOUT_S,
    device: str = "auto",
) -> None:
    """Serve the API and page on host:port until interrupted (Ctrl+C)."""
    from srkit.device import pick_device

    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535, got {port}")
    app = create_app(
        models=models,
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
        max_jobs=max_jobs,
        max_queue=max_queue,
        timeout_s=timeout_s,
        device=pick_device(device),
    )
    if not is_loopback(host):
        print(
            f"warning: listening on {host}, reachable from other machines; srkit serve has no authentication "
            "and no TLS, so anyone who can reach this port can use it (use the default 127.0.0.1 to keep it local)",
            file=sys.stderr,
        )
    shown = f"[{host}]" if ":" in host else host
    print(f"srkit serve: http://{shown}:{port}/  (API docs: http://{shown}:{port}/docs)", file=sys.stderr)
    _run_uvicorn(app, host=host, port=port)


def _run_uvicorn(app: Any, *, host: str, port: int) -> None:
    """uvicorn.run, kept apart so the CLI tests can stand in for it."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")
