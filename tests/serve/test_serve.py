"""srkit serve: the HTTP API (health, models, upscale), each limit, the page, and the CLI wiring."""

from __future__ import annotations

import io as pyio
import socket
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastapi import FastAPI
from PIL import Image
from torch import nn

from srkit import image_io
from srkit.cli import build_parser, main
from srkit.inference import upscale_image
from srkit.models import load_model
from srkit.serve import app as serve_app
from srkit.serve import create_app, server

with warnings.catch_warnings():
    # Starlette warns at import that its TestClient will move from httpx to httpx2; not ours to act on.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def _png(arr: np.ndarray) -> bytes:
    """An 8-bit PNG of an (H, W), (H, W, 3) or (H, W, 4) uint8 array."""
    buffer = pyio.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return buffer.getvalue()


def _photo(height: int = 24, width: int = 32, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth random test image: gradients plus noise, so bicubic has something to do."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height), np.full_like(x, 0.5, dtype=float)], -1)
    arr = np.clip(base[..., :channels] * 200 + rng.integers(0, 55, (height, width, channels)), 0, 255)
    return arr.astype(np.uint8)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR declaring width x height RGB, and IEND: tiny, but claims a huge image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


class GatedNearest(nn.Module):
    """Nearest-neighbour x4 that first waits for its gate to open: a heavy model whose end the test decides."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = 4
        self.gate = threading.Event()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        assert self.gate.wait(timeout=30), "the test never opened the gate"
        return F.interpolate(x, scale_factor=4, mode="nearest")


class SleepyNearest(nn.Module):
    """Nearest-neighbour x4 that sleeps in each forward pass (one tile): a long upscale that leaves the CPU idle."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.scale = 4
        self.seconds = seconds
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        time.sleep(self.seconds)
        return F.interpolate(x, scale_factor=4, mode="nearest")


def _client(**kwargs: Any) -> TestClient:
    """A TestClient on a CPU app; use it as a context manager so all requests share one event loop."""
    return TestClient(create_app(device="cpu", **kwargs))


def _upscale(client: TestClient, data: bytes, *, name: str = "photo.png", model: str | None = "bicubic") -> Any:
    fields = {} if model is None else {"model": model}
    return client.post("/api/upscale", files={"file": (name, data, "image/png")}, data=fields)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with _client() as c:
        yield c


def _wait_for(client: TestClient, condition: Callable[[dict[str, object]], bool], timeout_s: float = 5.0) -> None:
    """Poll /api/health until condition(health) holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition(client.get("/api/health").json()):
            return
        time.sleep(0.02)
    raise AssertionError(f"health never satisfied the condition; last: {client.get('/api/health').json()}")


# --- the endpoints -----------------------------------------------------------------------------------------------


def test_health(client: TestClient) -> None:
    body = client.get("/api/health").json()
    assert body["status"] == "ok"
    assert body["device"] == "cpu"
    assert body["jobs_running"] == 0 and body["jobs_waiting"] == 0 and body["jobs_abandoned"] == 0
    assert body["max_upload_bytes"] == serve_app.MAX_UPLOAD_BYTES and body["max_pixels"] == serve_app.MAX_PIXELS
    assert body["version"]


def test_models_list(client: TestClient) -> None:
    models = client.get("/api/models").json()
    bicubic = next(m for m in models if m["name"] == "bicubic")
    assert bicubic["scale"] == 4 and bicubic["params"] == 0
    assert "bicubic" in bicubic["description"].lower()


def test_upscale_png_matches_the_cli_path(client: TestClient) -> None:
    arr = _photo()
    data = _png(arr)
    response = _upscale(client, data, name="holiday photo.png")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert 'filename="holiday_photo_x4_bicubic.png"' in response.headers["content-disposition"]
    assert response.headers["x-output-width"] == "128" and response.headers["x-output-height"] == "96"
    assert response.headers["x-input-width"] == "32" and response.headers["x-input-height"] == "24"
    assert float(response.headers["x-elapsed-seconds"]) >= 0
    with Image.open(pyio.BytesIO(response.content)) as im:
        assert im.size == (128, 96) and im.mode == "RGB"
        got = np.asarray(im)
    # The same pixels `srkit upscale` writes: decode, upscale_image, quantise.
    expected = upscale_image(load_model("bicubic"), image_io.decode_image(data, name="x"), device=torch.device("cpu"))
    np.testing.assert_array_equal(got, image_io.to_uint8(expected.rgb))


def test_upscale_keeps_alpha(client: TestClient) -> None:
    arr = _photo(channels=4)
    arr[..., 3] = 100
    arr[:, :8, 3] = 0  # a transparent strip on the left
    response = _upscale(client, _png(arr), name="logo.png")
    assert response.status_code == 200, response.text
    with Image.open(pyio.BytesIO(response.content)) as im:
        assert im.mode == "RGBA" and im.size == (128, 96)
        alpha = np.asarray(im)[..., 3]
    assert (alpha[:, :24] == 0).all()  # bicubic of a constant strip stays constant away from the edge
    assert (alpha[:, 40:] == 100).all()


def test_upscale_keeps_16_bit_and_grayscale(client: TestClient) -> None:
    rgb = torch.from_numpy(_photo()).permute(2, 0, 1).float() / 255
    data16 = image_io.encode_image(rgb, suffix=".png", bit_depth=16)
    response = _upscale(client, data16, name="scan16.png")
    assert response.status_code == 200, response.text
    assert response.content[24] == 16  # the PNG IHDR bit-depth byte
    out = image_io.decode_image(response.content, name="result")
    assert out.bit_depth == 16 and out.size == (128, 96)

    gray = _png(_photo()[..., 0])
    response = _upscale(client, gray, name="gray.png")
    assert response.status_code == 200, response.text
    with Image.open(pyio.BytesIO(response.content)) as im:
        assert im.mode == "L" and im.size == (128, 96)


def test_upscale_jpeg_gives_png(client: TestClient) -> None:
    buffer = pyio.BytesIO()
    Image.fromarray(_photo()).save(buffer, format="JPEG")
    response = _upscale(client, buffer.getvalue(), name="cat.jpg")
    assert response.status_code == 200, response.text
    assert response.content.startswith(b"\x89PNG")
    assert 'filename="cat_x4_bicubic.png"' in response.headers["content-disposition"]


def test_default_model_and_safe_download_name(client: TestClient) -> None:
    response = _upscale(client, _png(_photo()), name="../../etc/my photo.png", model=None)
    assert response.status_code == 200, response.text
    disposition = response.headers["content-disposition"]
    assert 'filename="my_photo_x4_bicubic.png"' in disposition
    assert "etc" not in disposition


# --- limits and bad input ----------------------------------------------------------------------------------------


def test_upload_over_the_byte_limit_is_413() -> None:
    with _client(max_upload_bytes=1000) as c:
        # Over the file limit but within the multipart allowance: refused by the endpoint's bounded read.
        response = _upscale(c, b"\x89PNG" + bytes(2000), name="big.png")
        assert response.status_code == 413
        detail = response.json()["detail"]
        assert "big.png" in detail and "max_upload_bytes" in detail and "1000 bytes" in detail
        # Far over: refused by the body limit from Content-Length, before the multipart parser spools it.
        response = _upscale(c, bytes(300_000), name="huge.png")
        assert response.status_code == 413
        assert "request body is" in response.json()["detail"] and "max_upload_bytes" in response.json()["detail"]


def test_streamed_body_over_the_limit_is_413() -> None:
    """Without Content-Length (chunked upload) the body is counted as it arrives."""
    boundary = "srkitboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(10):
            yield bytes(20_000)
        yield f"\r\n--{boundary}--\r\n".encode()

    with _client(max_upload_bytes=1000) as c:
        response = c.post(
            "/api/upscale",
            content=chunks(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    assert response.status_code == 413, response.text
    assert "max_upload_bytes" in response.json()["detail"]


def test_too_many_pixels_is_413_before_decoding() -> None:
    with _client(max_pixels=100) as c:
        response = _upscale(c, _png(_photo()), name="small.png")
        assert response.status_code == 413
        detail = response.json()["detail"]
        assert "small.png" in detail and "32x24 = 768 pixels" in detail and "max_pixels = 100" in detail


def test_pixel_bombs_are_413(client: TestClient) -> None:
    # A header claiming 3000 x 2000 (6 MP > the 4 MP default) in 45 bytes: refused from the header alone.
    response = _upscale(client, _png_header_only(3000, 2000), name="claims.png")
    assert response.status_code == 413
    assert "3000x2000" in response.json()["detail"] and "max_pixels" in response.json()["detail"]
    # Past Pillow's own decompression-bomb guard: Image.open refuses it, still a 413.
    response = _upscale(client, _png_header_only(100_000, 100_000), name="bomb.png")
    assert response.status_code == 413
    assert "bomb.png" in response.json()["detail"]
    # A real all-black 2100 x 2000 PNG compresses to a few KB.
    data = _png(np.zeros((2000, 2100), dtype=np.uint8))
    assert len(data) < 50_000
    response = _upscale(client, data, name="black.png")
    assert response.status_code == 413
    assert "2100x2000" in response.json()["detail"]


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("notes.png", b"this is not an image at all", "not an image"),
        ("empty.png", b"", "empty"),
        ("cut.png", _png(_photo())[:300], "truncated"),  # header fine, pixel data cut: fails in the decoder
    ],
)
def test_unreadable_upload_is_400_naming_the_file(client: TestClient, name: str, data: bytes, words: str) -> None:
    response = _upscale(client, data, name=name)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert name in detail and words in detail


def test_unknown_model_lists_the_known_ones(client: TestClient) -> None:
    response = _upscale(client, _png(_photo()), model="esrgan_x9")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "esrgan_x9" in detail and "bicubic" in detail


def test_bad_tile_and_missing_file_are_422(client: TestClient) -> None:
    response = client.post("/api/upscale", files={"file": ("a.png", _png(_photo()), "image/png")}, data={"tile": "8"})
    assert response.status_code == 422 and "tile" in response.json()["detail"]
    response = client.post("/api/upscale", data={"model": "bicubic"})
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str) and "file" in response.json()["detail"]


def test_busy_server_says_503_with_retry_after() -> None:
    gated = GatedNearest()
    data = _png(_photo())
    results: dict[str, Any] = {}
    with _client(models=["slow"], model_loader=lambda _name: gated, max_jobs=1, max_queue=1) as c:

        def post(key: str) -> None:
            results[key] = _upscale(c, data, model="slow")

        first = threading.Thread(target=post, args=("first",))
        first.start()
        _wait_for(c, lambda h: h["jobs_running"] == 1)
        second = threading.Thread(target=post, args=("second",))
        second.start()
        _wait_for(c, lambda h: h["jobs_waiting"] == 1)
        third = _upscale(c, data, model="slow")  # one running, one waiting: full
        assert third.status_code == 503
        assert int(third.headers["retry-after"]) >= 1
        detail = third.json()["detail"]
        assert "busy" in detail and "max_jobs = 1" in detail and "max_queue = 1" in detail
        gated.gate.set()
        first.join()
        second.join()
        assert results["first"].status_code == 200 and results["second"].status_code == 200
        assert float(results["second"].headers["x-queue-seconds"]) > 0  # it waited for the first
        _wait_for(c, lambda h: h["jobs_running"] == 0 and h["jobs_waiting"] == 0)
        assert _upscale(c, data, model="slow").status_code == 200


def test_timeout_is_504_and_frees_the_worker() -> None:
    gated = GatedNearest()
    data = _png(_photo())
    results: dict[str, Any] = {}
    with _client(models=["slow"], model_loader=lambda _name: gated, timeout_s=0.2, max_jobs=1, max_queue=1) as c:

        def post(key: str) -> None:
            results[key] = _upscale(c, data, model="slow")

        threads = [threading.Thread(target=post, args=(k,)) for k in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for key in ("a", "b"):  # one timed out while running, the other while it waited for the worker
            assert results[key].status_code == 504, results[key].text
            assert "timeout_s = 0.2 s" in results[key].json()["detail"]
        assert c.get("/api/health").json()["jobs_running"] == 1  # the running job still holds its worker...
        gated.gate.set()
        # ...until its next checkpoint, where it stops; the waiting one never started.
        _wait_for(c, lambda h: h["jobs_running"] == 0 and h["jobs_waiting"] == 0)
        assert gated.calls == 1
        assert _upscale(c, data, model="slow").status_code == 200  # the worker is free again


def test_models_are_loaded_once() -> None:
    loads: list[str] = []

    def loader(name: str) -> nn.Module:
        loads.append(name)
        return load_model("bicubic")

    with _client(models=["bicubic", "other"], model_loader=loader) as c:
        assert [m["name"] for m in c.get("/api/models").json()] == ["bicubic", "other"]
        for _ in range(2):
            assert _upscale(c, _png(_photo()), model="other").status_code == 200
    assert sorted(loads) == ["bicubic", "other"]


def test_model_that_fails_to_load_is_a_clear_500() -> None:
    def loader(name: str) -> nn.Module:
        raise ValueError(f"{name}.safetensors: weights do not fit arch 'srresnet'")

    with _client(models=["broken"], model_loader=loader) as c:
        response = c.get("/api/models")
        assert response.status_code == 500
        assert "model 'broken' could not be loaded" in response.json()["detail"]
        response = _upscale(c, _png(_photo()), model="broken")
        assert response.status_code == 500
        assert "'broken' failed" in response.json()["detail"] and "do not fit" in response.json()["detail"]


# --- clients that hang up (a real uvicorn on a loopback socket) --------------------------------------------------


@contextmanager
def _live_server(app: FastAPI) -> Iterator[str]:
    """The app under a real uvicorn on a free 127.0.0.1 port, in a thread: a real socket, so a client can close it."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # log_config=None: leave pytest's logging alone; a short graceful shutdown bounds the teardown of a failed test.
    config = uvicorn.Config(app, log_config=None, log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _open_upload(url: str, data: bytes, *, tile: int | None = None) -> socket.socket:
    """Send a whole upscale request on a raw socket and return the socket without reading the reply."""
    boundary = "srkitboundary"
    fields = {"model": "slow"} if tile is None else {"model": "slow", "tile": str(tile)}
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    )
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    host_port = url.removeprefix("http://")
    head = (
        f"POST /api/upscale HTTP/1.1\r\nHost: {host_port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    host, port = host_port.split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(head.encode() + body)
    return sock


def _wait_for_live(
    url: str, condition: Callable[[dict[str, Any]], bool], timeout_s: float = 5.0
) -> tuple[float, dict[str, Any]]:
    """Poll the live server's /api/health until condition(health) holds; (seconds it took, that health)."""
    start = time.monotonic()
    health: dict[str, Any] = {}
    while time.monotonic() - start < timeout_s:
        health = httpx.get(f"{url}/api/health", timeout=5).json()
        if condition(health):
            return time.monotonic() - start, health
        time.sleep(0.02)
    raise AssertionError(f"health never satisfied the condition within {timeout_s} s; last: {health}")


def test_disconnected_client_cancels_its_job_at_the_next_tile() -> None:
    # 320 x 320 in tiles of 64 (stride 32): 9 x 9 = 81 tiles of 0.1 s, ~8 s if nobody stopped it.
    slow = SleepyNearest(seconds=0.1)
    app = create_app(device="cpu", models=["slow"], model_loader=lambda _name: slow, max_jobs=1, max_queue=0)
    with _live_server(app) as url:
        sock = _open_upload(url, _png(_photo(320, 320)), tile=64)
        _wait_for_live(url, lambda h: h["jobs_running"] == 1 and slow.calls >= 2)
        sock.close()  # the client gives up mid-upscale
        calls_at_close = slow.calls
        took, health = _wait_for_live(url, lambda h: h["jobs_running"] == 0 and h["jobs_waiting"] == 0, timeout_s=3)
        assert took < 2, f"the worker was freed only {took:.1f} s after the client left"
        assert health["jobs_abandoned"] == 1
        time.sleep(0.3)  # three more tiles' time: none may start
        # The tile in flight may finish, and one more start if the event loop heard late (a busy CPU); not 81.
        assert slow.calls <= calls_at_close + 2, (calls_at_close, slow.calls)
        # The only worker is free again (max_queue = 0, so a still-busy one would answer 503).
        response = httpx.post(
            f"{url}/api/upscale", files={"file": ("next.png", _png(_photo()), "image/png")}, data={"model": "slow"}
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-output-width"] == "128"


def test_disconnect_while_waiting_frees_the_queue_slot() -> None:
    gated = GatedNearest()
    app = create_app(device="cpu", models=["slow"], model_loader=lambda _name: gated, max_jobs=1, max_queue=1)
    data = _png(_photo())
    results: dict[str, httpx.Response] = {}

    def post(key: str, url: str) -> None:
        results[key] = httpx.post(
            f"{url}/api/upscale", files={"file": (f"{key}.png", data, "image/png")}, data={"model": "slow"}, timeout=30
        )

    with _live_server(app) as url:
        try:
            first = threading.Thread(target=post, args=("first", url))
            first.start()
            _wait_for_live(url, lambda h: h["jobs_running"] == 1)
            sock = _open_upload(url, data)
            _wait_for_live(url, lambda h: h["jobs_waiting"] == 1)
            sock.close()  # gives up while queued behind the running job
            took, health = _wait_for_live(url, lambda h: h["jobs_waiting"] == 0, timeout_s=3)
            assert took < 2 and health["jobs_running"] == 1 and health["jobs_abandoned"] == 1
            third = threading.Thread(target=post, args=("third", url))  # takes the freed place, no 503
            third.start()
            _wait_for_live(url, lambda h: h["jobs_waiting"] == 1)
        finally:
            gated.gate.set()  # a failed check must not leave the worker waiting for the gate
        first.join()
        third.join()
    assert results["first"].status_code == 200 and results["third"].status_code == 200, results
    assert gated.calls == 2  # the abandoned one never ran


# --- schema, docs and the page -----------------------------------------------------------------------------------


def test_openapi_and_docs(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/api/health", "/api/models", "/api/upscale"} <= set(schema["paths"])
    assert "post" in schema["paths"]["/api/upscale"]
    assert client.get("/docs").status_code == 200


def test_page_is_served_with_its_ids(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    for element_id in ("file", "model", "upscale", "result", "download", "error", "status", "before", "divider"):
        assert f'id="{element_id}"' in response.text
    assert "http://" not in response.text and "https://" not in response.text  # nothing from other sites
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


# --- settings and the CLI ----------------------------------------------------------------------------------------


def test_create_app_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        create_app(models=["nope"])
    with pytest.raises(ValueError, match="max_jobs must be >= 1, got 0"):
        create_app(max_jobs=0)
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        create_app(timeout_s=0)


def test_cli_serve_defaults_match_the_app() -> None:
    args = build_parser().parse_args(["serve"])
    assert args.host == server.HOST and args.port == server.PORT
    assert round(args.max_upload_mb * 1024 * 1024) == serve_app.MAX_UPLOAD_BYTES
    assert args.max_pixels == serve_app.MAX_PIXELS
    assert (args.max_jobs, args.max_queue, args.timeout) == (
        serve_app.MAX_JOBS,
        serve_app.MAX_QUEUE,
        serve_app.TIMEOUT_S,
    )


def test_cli_serve_warns_on_public_address(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(server, "_run_uvicorn", lambda app, *, host, port: calls.append((host, port)))
    assert main(["serve", "--port", "8123", "--models", "bicubic", "--device", "cpu"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["serve", "--host", "0.0.0.0", "--port", "8124", "--device", "cpu", "--max-upload-mb", "1"]) == 0
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().err
    assert calls == [("127.0.0.1", 8123), ("0.0.0.0", 8124)]
    assert main(["serve", "--models", "nope", "--device", "cpu"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_is_loopback() -> None:
    assert server.is_loopback("127.0.0.1") and server.is_loopback("::1") and server.is_loopback("localhost")
    assert not server.is_loopback("0.0.0.0") and not server.is_loopback("example.org")


# --- face-aware upscaling ------------------------------------------------------------------------------------------


def test_face_model_upscales_the_faces_of_a_photo(client: TestClient) -> None:
    import skimage.data

    from srkit.data.degradations import bicubic_degrade

    hr = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).to(torch.float64) / 255
    lq = image_io.to_uint8(bicubic_degrade(hr, 4).float())  # 128x128, her face ~40 LR px: in the face model's range
    plain = _upscale(client, _png(lq))
    response = client.post(
        "/api/upscale",
        files={"file": ("astronaut.png", _png(lq), "image/png")},
        data={"model": "bicubic", "face_model": "srresnet"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Faces"] == "1 found, 1 by the face model"
    assert response.headers["X-Face-Model"] == "srresnet"
    with_faces = np.asarray(Image.open(pyio.BytesIO(response.content)), dtype=np.int16)
    without = np.asarray(Image.open(pyio.BytesIO(plain.content)), dtype=np.int16)
    changed = np.abs(with_faces - without).max(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert 100 < xs.mean() < 400 and ys.mean() < 200  # only around her face (upper middle)
    assert changed.mean() < 0.2
    bad = client.post("/api/upscale", files={"file": ("a.png", _png(lq), "image/png")}, data={"face_model": "nope"})
    assert bad.status_code == 422 and "face_model" in bad.json()["detail"]


def test_models_say_their_domain(client: TestClient) -> None:
    domains = {m["name"]: m["domain"] for m in client.get("/api/models").json()}
    assert domains["bicubic"] == "any" and domains["srresnet"] == "natural"
