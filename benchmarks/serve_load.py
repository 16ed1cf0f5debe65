"""`srkit serve` under load: reply status counts, latency, throughput and server memory, with abandoned requests.

Starts a real `srkit serve` (a subprocess on a free 127.0.0.1 port), sends --requests uploads from --concurrency
client threads, and has --abandon of them hang up after sending the upload and before the reply (a user who
closes the tab). A server that cancels abandoned jobs keeps answering the others; one that does not fills its
worker and queue with work nobody reads and answers 503. A client that gets a 503 waits its Retry-After and tries
again, up to --retries times (--retries 0: measure refusals alone); latency counts those waits.

    python benchmarks/serve_load.py                                   # srresnet, 64x64, 300 requests, 16 clients
    python benchmarks/serve_load.py --requests 300 --concurrency 16 --abandon 30
    python benchmarks/serve_load.py --model bicubic --image-size 256 --max-jobs 2 --max-queue 4 --retries 3

Prints markdown tables. Not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import io
import math
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from srkit.device import cpu_description
from srkit.serve.launch import HOST, LaunchedServer, ServerStartError, launched_server

BOUNDARY = "srkitloadboundary"


@dataclass(frozen=True)
class Outcome:
    """One request's end: a status ('200', '503', 'abandoned', 'error', ...), its latency and server timings."""

    kind: str
    seconds: float
    run_s: float | None = None  # X-Elapsed-Seconds of a 200: the upscale itself
    queue_s: float | None = None  # X-Queue-Seconds of a 200: waiting for a worker
    attempts: int = 1
    refused: int = 0  # 503 replies this request got, retries included


def _test_png(size: int) -> bytes:
    """A size x size RGB PNG with gradients and noise (content does not change the speed of a conv model)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x / size, y / size, (x + y) / (2 * size)], -1) * 200
    arr = np.clip(base + rng.integers(0, 55, (size, size, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return buffer.getvalue()


def _rss_mib(pid: int, field: str = "VmRSS") -> float:
    """A memory line of /proc/PID/status (VmRSS now, VmHWM peak) in MiB; nan where /proc is missing."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return math.nan


def _percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _multipart(png: bytes, fields: dict[str, str]) -> bytes:
    """A multipart/form-data body: the text fields, then the file."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="load.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + png
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return b"".join(parts)


def _abandon(port: int, body: bytes, after_s: float, *, retries: int, deadline: float) -> Outcome:
    """Send the whole upload on a raw socket, wait after_s for a reply, then close without reading one.

    A 503 that comes back within after_s is retried like any other client's (the user tries again), so with
    retries the abandoned upload is usually one the server accepted: a job that nobody will collect.
    """
    start = time.perf_counter()
    head = (
        f"POST /api/upscale HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: multipart/form-data; "
        f"boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    refused = 0
    status = "?"
    for attempt in range(1, retries + 2):
        if time.monotonic() > deadline:
            return Outcome("not finished (--max-seconds)", time.perf_counter() - start, attempts=attempt)
        try:
            with socket.create_connection((HOST, port), timeout=10) as sock:
                sock.sendall(head + body)
                sock.settimeout(after_s)
                try:
                    reply = sock.recv(4096)  # a quick reply (a 503 from a full server) arrives before the hang-up
                except TimeoutError:
                    return Outcome("abandoned", time.perf_counter() - start, attempts=attempt, refused=refused)
        except OSError as err:
            return Outcome(f"error ({type(err).__name__})", time.perf_counter() - start, attempts=attempt)
        status, retry_after = _status_and_retry_after(reply)
        refused += status == "503"
        if status != "503" or attempt > retries:
            break
        time.sleep(min(retry_after, max(0.0, deadline - time.monotonic())))
    return Outcome(
        f"abandoned, but answered {status} first", time.perf_counter() - start, attempts=attempt, refused=refused
    )


def _status_and_retry_after(reply: bytes) -> tuple[str, float]:
    """The status code of a raw HTTP reply and its Retry-After in seconds (1 when absent)."""
    lines = reply.split(b"\r\n")
    parts = lines[0].split(b" ")
    status = parts[1].decode() if lines[0].startswith(b"HTTP/") and len(parts) > 1 else "?"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"retry-after" and value.strip().isdigit():
            return status, float(value.strip())
    return status, 1.0


def _upload(
    client: httpx.Client, url: str, png: bytes, fields: dict[str, str], *, retries: int, deadline: float
) -> Outcome:
    """POST the image; on 503 wait Retry-After and try again up to `retries` times (while time is left)."""
    start = time.perf_counter()
    refused = 0
    for attempt in range(1, retries + 2):
        left = deadline - time.monotonic()
        if left <= 0:
            return Outcome(
                "not finished (--max-seconds)", time.perf_counter() - start, attempts=attempt, refused=refused
            )
        try:
            response = client.post(
                f"{url}/api/upscale", files={"file": ("load.png", png, "image/png")}, data=fields, timeout=left
            )
        except httpx.TimeoutException:
            return Outcome(
                "not finished (--max-seconds)", time.perf_counter() - start, attempts=attempt, refused=refused
            )
        except httpx.HTTPError as err:
            return Outcome(
                f"error ({type(err).__name__})", time.perf_counter() - start, attempts=attempt, refused=refused
            )
        refused += response.status_code == 503
        if response.status_code == 503 and attempt <= retries:
            time.sleep(min(float(response.headers.get("retry-after", "1")), max(0.0, deadline - time.monotonic())))
            continue
        if response.status_code == 200:
            return Outcome(
                "200",
                time.perf_counter() - start,
                run_s=float(response.headers["x-elapsed-seconds"]),
                queue_s=float(response.headers["x-queue-seconds"]),
                attempts=attempt,
                refused=refused,
            )
        return Outcome(str(response.status_code), time.perf_counter() - start, attempts=attempt, refused=refused)
    raise AssertionError("unreachable: the last attempt always returns")


def _server_args(args: argparse.Namespace) -> list[str]:
    return [
        "--models",
        args.model,
        "--max-jobs",
        str(args.max_jobs),
        "--max-queue",
        str(args.max_queue),
        "--timeout",
        str(args.timeout),
        "--device",
        args.device,
    ]


def _drained(url: str, timeout_s: float) -> tuple[float, dict[str, object]]:
    """Seconds until the server reports no job running or waiting (at most timeout_s), and that health."""
    start = time.monotonic()
    health: dict[str, object] = {}
    while time.monotonic() - start < timeout_s:
        health = httpx.get(f"{url}/api/health", timeout=5).json()
        if health["jobs_running"] == 0 and health["jobs_waiting"] == 0:
            break
        time.sleep(0.05)
    return time.monotonic() - start, health


@dataclass
class _LoadRun:
    outcomes: list[Outcome]
    wall_s: float
    drain_s: float
    after: dict[str, object]
    rss_before: float
    rss_after: float
    rss_peak: float


def _run_load(
    server: LaunchedServer,
    args: argparse.Namespace,
    png: bytes,
    fields: dict[str, str],
    body: bytes,
    abandoned: set[int],
) -> _LoadRun:
    """Send the requests from --concurrency clients, then wait for the server to drain; RSS before and after."""
    pid, url = server.process.pid, server.url
    rss_before = _rss_mib(pid)
    deadline = time.monotonic() + args.max_seconds
    done_lock = threading.Lock()
    outcomes: list[Outcome] = []

    def one(i: int, client: httpx.Client) -> None:
        if time.monotonic() > deadline:
            result = Outcome("not sent (--max-seconds)", 0.0, attempts=0)
        elif i in abandoned:
            result = _abandon(server.port, body, args.abandon_after, retries=args.retries, deadline=deadline)
        else:
            result = _upload(client, url, png, fields, retries=args.retries, deadline=deadline)
        with done_lock:
            outcomes.append(result)

    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    with httpx.Client(limits=limits) as client, ThreadPoolExecutor(args.concurrency) as pool:
        start = time.perf_counter()
        for future in [pool.submit(one, i, client) for i in range(args.requests)]:
            future.result()
        wall_s = time.perf_counter() - start
    drain_s, after = _drained(url, timeout_s=min(30.0, args.timeout))
    return _LoadRun(outcomes, wall_s, drain_s, after, rss_before, _rss_mib(pid), _rss_mib(pid, "VmHWM"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="srresnet", help="model the server offers (default: shipped srresnet)")
    parser.add_argument("--image-size", type=int, default=64, help="side of the square test image (default 64)")
    parser.add_argument("--tile", type=int, default=None, help="tile field sent with each request (default: none)")
    parser.add_argument("--requests", type=int, default=300, help="requests in all, abandoned ones included")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads sending at once")
    parser.add_argument("--abandon", type=int, default=30, help="requests that hang up before the reply")
    parser.add_argument("--abandon-after", type=float, default=0.2, help="seconds an abandoning client waits")
    parser.add_argument(
        "--retries", type=int, default=10, help="times a client retries a 503 after its Retry-After (default 10)"
    )
    parser.add_argument("--max-seconds", type=float, default=300, help="stop sending after this long (default 300)")
    parser.add_argument("--max-jobs", type=int, default=1, help="server --max-jobs (default 1, as srkit serve)")
    parser.add_argument("--max-queue", type=int, default=2, help="server --max-queue (default 2, as srkit serve)")
    parser.add_argument("--timeout", type=float, default=120, help="server --timeout in seconds (default 120)")
    parser.add_argument("--device", default="cpu", help="server --device (default cpu)")
    parser.add_argument("--server-threads", type=int, default=None, help="OMP_NUM_THREADS for the server")
    args = parser.parse_args()
    if not 0 <= args.abandon <= args.requests or args.requests < 1 or args.concurrency < 1:
        parser.error("need requests >= 1, concurrency >= 1 and 0 <= abandon <= requests")

    png = _test_png(args.image_size)
    fields = {"model": args.model} | ({} if args.tile is None else {"tile": str(args.tile)})
    body = _multipart(png, fields)
    # Spread evenly through the run, so abandoned jobs meet busy and idle moments alike.
    abandoned = {k * args.requests // args.abandon for k in range(args.abandon)} if args.abandon else set()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        try:
            with launched_server(_server_args(args), log=log, threads=args.server_threads, timeout_s=120) as server:
                run = _run_load(server, args, png, fields, body, abandoned)
        except ServerStartError as err:
            raise SystemExit(str(err)) from None
    health, startup_s, outcomes, wall_s = server.health, server.startup_s, run.outcomes, run.wall_s
    drain_s, after = run.drain_s, run.after
    rss_before, rss_after, rss_peak = run.rss_before, run.rss_after, run.rss_peak

    ok = [o for o in outcomes if o.kind == "200"]
    latency = [o.seconds for o in ok]
    counts = Counter(o.kind for o in outcomes)
    print(f"# srkit serve under load: {cpu_description()}\n")
    print(
        f"Server: model {args.model}, device {health['device']}, max_jobs {args.max_jobs}, max_queue "
        f"{args.max_queue}, timeout {args.timeout:g} s, started (models loaded) in {startup_s:.1f} s."
    )
    print(
        f"Load: {args.requests} requests of a {args.image_size}x{args.image_size} PNG"
        f"{'' if args.tile is None else f' (tile {args.tile})'}, {args.concurrency} clients, {args.abandon} hang "
        f"up after {args.abandon_after:g} s, 503 retried {args.retries}x; wall time {wall_s:.1f} s "
        f"(limit {args.max_seconds:g} s).\n"
    )
    print("| outcome | requests |")
    print("|---|---:|")
    order = ["200", "503", "504", "abandoned"]
    for kind in order + sorted(k for k in counts if k not in order):
        print(f"| {kind} | {counts.get(kind, 0)} |")
    print(f"| 503 replies in all (retries and early answers included) | {sum(o.refused for o in outcomes)} |")
    print()
    print("| completed (200), seconds | p50 | p95 | max |")
    print("|---|---:|---:|---:|")
    for name, values in (
        ("latency (client)", latency),
        ("upscale (X-Elapsed-Seconds)", [o.run_s for o in ok if o.run_s is not None]),
        ("queue (X-Queue-Seconds)", [o.queue_s for o in ok if o.queue_s is not None]),
    ):
        p50, p95, top = _percentile(values, 50), _percentile(values, 95), max(values, default=math.nan)
        print(f"| {name} | {p50:.2f} | {p95:.2f} | {top:.2f} |")
    print()
    print(f"Throughput: {len(ok) / wall_s:.2f} images/s ({len(ok)} upscaled in {wall_s:.1f} s).")
    print(
        f"Server RSS: {rss_before:.0f} MiB before the load, {rss_after:.0f} MiB after (peak {rss_peak:.0f} MiB). "
        f"Idle again {drain_s:.2f} s after the last reply (jobs_running {after.get('jobs_running')}, "
        f"jobs_waiting {after.get('jobs_waiting')}); the server counted {after.get('jobs_abandoned', '?')} "
        "abandoned jobs (stopped at their next tile, or dropped from the queue)."
    )


if __name__ == "__main__":
    main()
