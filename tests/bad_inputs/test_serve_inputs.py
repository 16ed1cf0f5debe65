"""srkit serve refusing bad input: model files that stop it at start-up, and requests it answers with 4xx + detail.

tests/test_serve.py already covers a non-image, an empty and a truncated PNG upload, pixel bombs, --max-pixels,
an unknown model name, a tile of 8 and a missing file; this file holds the kinds it does not.
"""

from __future__ import annotations

import io as pyio
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from srkit.cli import main
from srkit.models import SHIPPED_DIR, build_generator, save_weights
from srkit.serve import create_app, server

with warnings.catch_warnings():
    # Starlette warns at import that its TestClient will move from httpx to httpx2; not ours to act on.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def _encode(arr: np.ndarray, fmt: str) -> bytes:
    buffer = pyio.BytesIO()
    Image.fromarray(arr).save(buffer, format=fmt)
    return buffer.getvalue()


def _photo(height: int = 24, width: int = 32) -> np.ndarray:
    """A random RGB uint8 image."""
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bmp_header(width: int, height: int) -> bytes:
    """The 54-byte header of a 24-bit BMP declaring width x height, and no pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(device="cpu", models=["bicubic"])) as c:
        yield c


def _upscale(client: TestClient, data: bytes, *, name: str = "photo.png", **fields: str) -> Any:
    return client.post("/api/upscale", files={"file": (name, data, "image/png")}, data={"model": "bicubic", **fields})


# --- models that must stop `srkit serve` before it listens -------------------------------------------------------


def _pickle(path: Path) -> None:
    torch.save({"weight": torch.zeros(3)}, path)  # a .pth: tensors only, but of no architecture spandrel knows


def _cut_safetensors(path: Path) -> None:
    path.write_bytes((SHIPPED_DIR / "srresnet.safetensors").read_bytes()[:100])


def _png_named_safetensors(path: Path) -> None:
    path.write_bytes(_encode(_photo(), "PNG"))


def _foreign_safetensors(path: Path) -> None:
    safetensors.torch.save_file({"weight": torch.zeros(3)}, str(path))  # valid safetensors, no srkit metadata


def _unknown_arch(path: Path) -> None:
    save_weights(build_generator("srresnet", width=8, num_blocks=1), path, arch="warp_drive", arch_kwargs={})


def _weights_of_another_size(path: Path) -> None:
    net = build_generator("srresnet", width=8, num_blocks=1)
    save_weights(net, path, arch="srresnet", arch_kwargs={"width": 16, "num_blocks": 1})


@pytest.mark.parametrize(
    ("filename", "make", "words"),
    [
        ("odd.pth", _pickle, "no known architecture matches these weights"),
        ("cut.safetensors", _cut_safetensors, "not a readable safetensors file"),
        ("photo.safetensors", _png_named_safetensors, "not a readable safetensors file"),
        ("foreign.safetensors", _foreign_safetensors, "no known architecture matches these weights"),
        ("warp.safetensors", _unknown_arch, "warp_drive"),
        ("resized.safetensors", _weights_of_another_size, "do not fit"),
        ("missing.safetensors", None, "unknown model"),
    ],
)
def test_bad_model_stops_serve_before_it_listens(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    filename: str,
    make: Callable[[Path], None] | None,
    words: str,
) -> None:
    listened: list[int] = []
    monkeypatch.setattr(server, "_run_uvicorn", lambda app, *, host, port: listened.append(port))
    path = tmp_path / filename
    if make is not None:
        make(path)
    assert main(["serve", "--models", f"bicubic,{path}", "--port", "0", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert not listened, "uvicorn was started with a model that cannot be loaded"
    assert err.startswith("srkit serve: error: ") and "Traceback" not in err, err
    assert f"model {str(path)!r}" in err and words in err, err
    assert "http://" not in err  # the listening banner was never printed


def test_good_models_are_loaded_at_start_up(tmp_path: Path) -> None:
    """Loading at start-up also means the first request does not pay for it."""
    weights = save_weights(
        build_generator("srresnet", width=8, num_blocks=1),
        tmp_path / "tiny.safetensors",
        arch="srresnet",
        arch_kwargs={"width": 8, "num_blocks": 1},
    )
    with TestClient(create_app(device="cpu", models=["bicubic", str(weights)])) as c:
        assert [m["name"] for m in c.get("/api/models").json()] == ["bicubic", str(weights)]
        response = _upscale(c, _encode(_photo(), "PNG"), model=str(weights))
        assert response.status_code == 200, response.text
        assert response.headers["x-output-width"] == "128"


# --- requests refused with a 4xx that names the problem ----------------------------------------------------------


@pytest.mark.parametrize(
    ("tile", "words"),
    [
        ("abc", "valid integer"),
        ("64.5", "valid integer"),
        ("2000", "got 2000"),
        ("0", "got 0"),
        ("-64", "got -64"),
    ],
)
def test_bad_tile_is_422_naming_tile(client: TestClient, tile: str, words: str) -> None:
    response = _upscale(client, _encode(_photo(), "PNG"), tile=tile)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "tile" in detail and words in detail


@pytest.mark.parametrize("model", [str(SHIPPED_DIR / "srgan.safetensors"), "/etc/passwd", "BICUBIC", " bicubic"])
def test_model_must_be_one_the_server_offers(client: TestClient, model: str) -> None:
    """A path on the server is not a model name: clients pick from the list, never load files by path."""
    response = _upscale(client, _encode(_photo(), "PNG"), model=model)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert f"unknown model {model!r}" in detail and "this server offers: bicubic" in detail


def test_truncated_jpeg_is_400(client: TestClient) -> None:
    data = _encode(_photo(), "JPEG")
    for cut in (data[: len(data) // 2], data[:-2]):  # pixel data cut; only the end-of-image marker missing
        response = _upscale(client, cut, name="cut.jpg")
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert "cut.jpg" in detail and "truncated" in detail.lower()


def test_png_with_a_header_and_no_pixels_is_400(client: TestClient) -> None:
    """Within max_pixels by its header, so it passes the size check and fails in the decoder."""
    header_only = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100, 100, 8, 2, 0, 0, 0))
    response = _upscale(client, header_only + _png_chunk(b"IEND", b""), name="hollow.png")
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert "hollow.png" in detail and "truncated" in detail


def test_svg_is_400_listing_what_is_read(client: TestClient) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    response = _upscale(client, svg, name="logo.svg")
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert "logo.svg" in detail and "not an image in a format srkit reads" in detail and "PNG" in detail


def test_non_png_over_max_pixels_is_413_from_its_header(client: TestClient) -> None:
    """The pixel limit is read from any format's header: a 54-byte BMP declaring 5000 x 5000."""
    response = _upscale(client, _bmp_header(5000, 5000), name="huge.bmp")
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert "huge.bmp" in detail and "5000x5000" in detail and "max_pixels = 4000000" in detail


def test_file_sent_as_a_text_field_is_422(client: TestClient) -> None:
    response = client.post("/api/upscale", data={"file": "photo.png", "model": "bicubic"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "body.file" in detail and "UploadFile" in detail


def test_json_body_is_422_asking_for_the_file(client: TestClient) -> None:
    response = client.post("/api/upscale", json={"file": "aGVsbG8=", "model": "bicubic"})
    assert response.status_code == 422, response.text
    assert "body.file: Field required" in response.json()["detail"]


def test_multipart_without_boundary_is_400(client: TestClient) -> None:
    response = client.post("/api/upscale", content=b"abc", headers={"Content-Type": "multipart/form-data"})
    assert response.status_code == 400, response.text
    assert "boundary" in response.json()["detail"].lower()
