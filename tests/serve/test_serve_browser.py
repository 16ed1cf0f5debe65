"""End to end: `srkit serve` in a subprocess, driven by headless Chromium through Playwright.

Needs the system Chromium at /usr/bin/chromium (Debian/Ubuntu: `apt-get install -y chromium`; CI's .ci/run
installs it) and the `playwright` Python package from the dev extras. Playwright's own browser download
(`playwright install`) is not used. A missing piece fails the tests rather than skipping them, so CI cannot
pass without having run them.
"""

from __future__ import annotations

import io as pyio
import os
import re
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from srkit.serve.launch import ServerStartError, launched_server

CHROMIUM = Path(os.environ.get("SRKIT_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOT_FOR_REVIEW = Path("/tmp/serve_screenshot.png")
INSTALL_HINT = "install it with `apt-get install -y chromium` (as root, or with sudo) or set SRKIT_CHROMIUM"


def _test_image() -> bytes:
    """A 32x24 PNG with colour bands and shapes, so the comparison on the screenshot shows something."""
    y, x = np.mgrid[0:24, 0:32]
    rgb = np.stack([x * 8, y * 10, 255 - x * 6], -1).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    draw.ellipse((4, 4, 15, 15), fill=(250, 220, 40))
    draw.rectangle((19, 6, 28, 19), outline=(255, 255, 255))
    draw.line((0, 23, 31, 0), fill=(20, 20, 20))
    buffer = pyio.BytesIO()
    im.save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR declaring width x height RGB, and IEND: tiny, but claims a huge image."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need the `playwright` package: pip install -e '.[dev]'")
    if not CHROMIUM.exists() or not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM}, which is missing; {INSTALL_HINT}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`srkit serve` on a free loopback port, the way a user starts it."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    try:
        with launched_server(["--device", "cpu"], log=log, threads=1, timeout_s=60) as server:
            yield server.url
    except ServerStartError as err:
        pytest.fail(str(err))


@pytest.fixture
def page(browser: Any, server_url: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 820})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server_url)
    page.wait_for_selector("#model option[value='bicubic']", state="attached")
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_upload_upscale_compare_download(page: Any, tmp_path: Path) -> None:
    page.set_input_files("#file", files=[{"name": "pattern.png", "mimeType": "image/png", "buffer": _test_image()}])
    page.select_option("#model", "bicubic")
    page.click("#upscale")
    page.wait_for_selector("#app[data-state='done']", timeout=30_000)

    size = page.eval_on_selector("#result", "img => [img.naturalWidth, img.naturalHeight]")
    assert size == [128, 96]
    assert page.is_visible("#output") and page.is_hidden("#error")
    download = page.locator("#download")
    assert download.get_attribute("href").startswith("blob:")
    assert download.get_attribute("download") == "pattern_x4_bicubic.png"
    assert "32×24 → 128×96" in page.inner_text("#result-info")

    # Drag the divider to about a third of the way across the comparison.
    box = page.locator("#compare").bounding_box()
    assert box["width"] > 128  # "fit" magnifies the small result to the page width
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 3, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    assert abs(int(page.get_attribute("#divider", "aria-valuenow")) - 33) <= 2
    # The input layer is clipped to the left of the divider: inset(0 <right>% 0 0).
    clip = page.eval_on_selector("#before", "img => getComputedStyle(img).clipPath")
    right = re.fullmatch(r"inset\(0px ([\d.]+)% 0px 0px\)", clip)
    assert right is not None and abs(float(right.group(1)) - 67) <= 2, clip

    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    with Image.open(saved) as im:
        assert im.size == (128, 96)

    page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
    shutil.copyfile(tmp_path / "serve.png", SCREENSHOT_FOR_REVIEW)  # for a person to look at


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("broken.png", b"this is not an image", ["400", "broken.png", "not an image"]),
        # A 45-byte PNG whose header claims 3000 x 2000 pixels: over the default 4 MP limit.
        ("claims.png", _png_header_only(3000, 2000), ["413", "claims.png", "3000x2000", "max_pixels"]),
    ],
)
def test_bad_upload_shows_the_server_message(page: Any, name: str, data: bytes, expected: list[str]) -> None:
    page.set_input_files("#file", files=[{"name": name, "mimeType": "image/png", "buffer": data}])
    page.click("#upscale")
    page.wait_for_selector("#app[data-state='error']", timeout=30_000)
    message = page.inner_text("#error")
    for text in expected:
        assert text in message
    assert page.is_hidden("#output")
    assert page.is_enabled("#upscale")  # ready for another try


def test_faces_mode_upscales_the_face_with_the_chosen_model(page: Any) -> None:
    import skimage.data
    import torch

    from srkit import image_io
    from srkit.data.degradations import bicubic_degrade

    hr = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).to(torch.float64) / 255
    buffer = image_io.encode_image(bicubic_degrade(hr, 4).float(), suffix=".png")  # 128x128, one face
    options = page.eval_on_selector_all("#face-model option", "os => os.map(o => o.value)")
    assert options[0] == "" and "srresnet" in options  # "off" first, then every offered model
    page.set_input_files("#file", files=[{"name": "astronaut.png", "mimeType": "image/png", "buffer": buffer}])
    page.select_option("#model", "bicubic")
    page.select_option("#face-model", "srresnet")
    page.click("#upscale")
    page.wait_for_selector("#app[data-state='done']", timeout=60_000)
    info = page.inner_text("#result-info")
    assert "faces: 1 found, 1 by the face model" in info and "bicubic + faces: srresnet" in info
    assert page.eval_on_selector("#result", "img => [img.naturalWidth, img.naturalHeight]") == [512, 512]
