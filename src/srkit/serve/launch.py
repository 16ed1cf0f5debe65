"""`srkit serve` as a child process on a free loopback port, for scripts, benchmarks and browser tests.

    with launched_server(["--models", "bicubic"], log=Path("server.log")) as server:
        urllib.request.urlopen(f"{server.url}/api/health")

The context returns once /api/health answers (the models are loaded by then), and stops the server on exit
(SIGTERM, then SIGKILL after 15 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


class ServerStartError(RuntimeError):
    """The server exited, or did not answer /api/health in time; the message holds its log."""


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class LaunchedServer:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path
    health: dict[str, Any]  # the first /api/health answer
    startup_s: float  # from the process start to that answer


def health(url: str, *, timeout_s: float = 2.0) -> dict[str, Any]:
    """The server's /api/health JSON."""
    with urllib.request.urlopen(f"{url}/api/health", timeout=timeout_s) as response:
        answer: dict[str, Any] = json.load(response)
        return answer


@contextlib.contextmanager
def launched_server(
    args: Sequence[str] = (),
    *,
    log: Path,
    threads: int | None = None,
    timeout_s: float = 60.0,
) -> Iterator[LaunchedServer]:
    """Run `srkit serve --port P ARGS...` (`threads`: its OMP_NUM_THREADS); yield once it is healthy."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "srkit.cli", "serve", "--host", HOST, "--port", str(port), *args]
    start = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise ServerStartError(f"srkit serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                first = health(url)
                if first.get("status") == "ok":
                    break
            except (OSError, ValueError):  # not listening yet, or an answer cut short
                pass
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"srkit serve did not answer /api/health within {timeout_s:g} s:\n{log.read_text()}"
                )
            time.sleep(0.1)
        yield LaunchedServer(process, url, port, log, first, time.perf_counter() - start)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
