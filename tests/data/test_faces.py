"""Face boxes and face crops: the margin rule, bounds, the no-face fallback, and the Haar detector on LFW."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
import torch

from srkit import image_io
from srkit.data import faces
from srkit.data.faces import (
    Box,
    Detector,
    FaceDetectorUnavailable,
    centre_window,
    crop_window,
    face_box,
    face_crop,
    find_haar_cascade,
    haar_detector,
)


def _fixed(*boxes: Box) -> Detector:
    """A stand-in detector that always reports `boxes`."""
    return lambda img: list(boxes)


def _contains(window: Box, box: Box) -> bool:
    x, y, s, _ = window
    bx, by, bw, bh = box
    return x <= bx and y <= by and bx + bw <= x + s and by + bh <= y + s


def _inside(window: Box, height: int, width: int) -> bool:
    x, y, s, s2 = window
    return s == s2 and s >= 1 and x >= 0 and y >= 0 and x + s <= width and y + s <= height


def _haar_or_skip() -> Detector:
    try:
        return haar_detector()
    except FaceDetectorUnavailable as err:
        pytest.skip(f"Haar face detector unavailable in this OpenCV build: {err}")


@pytest.fixture(autouse=True)
def _fresh_cascade_cache() -> Iterator[None]:
    # Tests below swap cv2.CascadeClassifier; a classifier cached by another test must not leak in.
    faces._load_cascade.cache_clear()
    faces._default_detector.cache_clear()
    yield
    faces._load_cascade.cache_clear()
    faces._default_detector.cache_clear()


# --- the crop rule, with a stand-in detector ---


def test_largest_face_wins_and_boxes_are_clipped() -> None:
    img = torch.rand(3, 100, 120)
    assert face_box(img, detector=_fixed((5, 5, 20, 20), (50, 30, 40, 40), (0, 0, 30, 30))) == (50, 30, 40, 40)
    assert face_box(img, detector=_fixed((100, 80, 40, 40))) == (100, 80, 20, 20)  # clipped to the image
    assert face_box(img, detector=_fixed()) is None
    assert face_box(img, detector=_fixed((200, 200, 10, 10))) is None  # entirely outside


def test_crop_is_centred_on_the_face_and_contains_it() -> None:
    img = torch.rand(3, 150, 150, generator=torch.Generator().manual_seed(0))
    box = (50, 40, 50, 50)
    result = face_crop(img, detector=_fixed(box), margin=0.3)
    assert result.found and result.face == box and result.reason == "face"
    # side = 50 * (1 + 2 * 0.3) = 80, centred on the face centre (75, 65)
    assert result.window == (35, 25, 80, 80)
    assert torch.equal(result.image, img[:, 25:105, 35:115])


def test_margin_grows_with_the_face_box() -> None:
    sides = []
    for face_side in (20, 30, 44, 60):
        s = crop_window((100 - face_side // 2, 90, face_side, face_side), (200, 200), margin=0.3)[2]
        assert s == round(face_side * 1.6)
        sides.append(s)
    assert sides == sorted(sides) and len(set(sides)) == len(sides)
    assert crop_window((50, 50, 40, 40), (200, 200), margin=0.0)[2] == 40
    assert crop_window((50, 50, 40, 40), (200, 200), margin=0.5)[2] == 80


def test_margin_is_clamped_by_the_image() -> None:
    # A face filling most of a small image: the window takes the whole short side, no more.
    window = crop_window((10, 5, 80, 80), (90, 100), margin=0.3)
    assert window[2] == 90 and _inside(window, 90, 100) and _contains(window, (10, 5, 80, 80))
    # A face at the corner: the window slides inside the image instead of shrinking.
    window = crop_window((0, 0, 30, 30), (100, 100), margin=0.5)
    assert window == (0, 0, 60, 60)


def test_windows_are_valid_for_odd_sizes() -> None:
    g = torch.Generator().manual_seed(0)
    for height, width in ((97, 151), (151, 97), (33, 33), (1, 5)):
        for _ in range(300):
            bw = int(torch.randint(1, width + 1, (1,), generator=g))
            bh = int(torch.randint(1, height + 1, (1,), generator=g))
            bx = int(torch.randint(0, width - bw + 1, (1,), generator=g))
            by = int(torch.randint(0, height - bh + 1, (1,), generator=g))
            margin = float(torch.rand(1, generator=g)) * 1.5
            shift = ((float(torch.rand(1, generator=g)) - 0.5) * 60, (float(torch.rand(1, generator=g)) - 0.5) * 60)
            window = crop_window((bx, by, bw, bh), (height, width), margin=margin, shift=shift)
            assert _inside(window, height, width), (height, width, (bx, by, bw, bh), window)
            if max(bw, bh) <= min(height, width):  # the face fits in a square of the image
                assert _contains(window, (bx, by, bw, bh)), (height, width, (bx, by, bw, bh), window)
        assert _inside(centre_window((height, width)), height, width)


def test_crop_of_odd_sized_image() -> None:
    img = torch.rand(3, 97, 151, generator=torch.Generator().manual_seed(1))
    result = face_crop(img, detector=_fixed((120, 60, 31, 31)), margin=0.4)
    x, y, s, _ = result.window
    assert _inside(result.window, 97, 151) and _contains(result.window, (120, 60, 31, 31))
    assert result.image.shape == (3, s, s)
    assert torch.equal(result.image, img[:, y : y + s, x : x + s])


def test_no_face_falls_back_to_the_centre_square() -> None:
    img = torch.rand(3, 97, 151, generator=torch.Generator().manual_seed(2))
    result = face_crop(img, detector=_fixed())
    assert not result.found and result.face is None and "no face" in result.reason
    assert result.window == (27, 0, 97, 97)
    assert torch.equal(result.image, img[:, :, 27:124])
    tall = face_crop(torch.rand(3, 151, 97), detector=_fixed(), size=48)
    assert tall.window == (0, 27, 97, 97) and tall.image.shape == (3, 48, 48)


def test_resize_and_jitter() -> None:
    img = torch.rand(3, 120, 130, generator=torch.Generator().manual_seed(3))
    box = (40, 30, 50, 50)
    out = face_crop(img, detector=_fixed(box), size=64)
    assert out.image.shape == (3, 64, 64) and out.image.min() >= 0 and out.image.max() <= 1
    same = face_crop(img, detector=_fixed(box), size=out.window[2])
    assert torch.equal(same.image, face_crop(img, detector=_fixed(box)).image)  # no resize at the same size
    windows = set()
    for seed in range(8):
        a = face_crop(img, detector=_fixed(box), jitter=0.2, generator=torch.Generator().manual_seed(seed))
        b = face_crop(img, detector=_fixed(box), jitter=0.2, generator=torch.Generator().manual_seed(seed))
        assert a.window == b.window and torch.equal(a.image, b.image)
        assert _inside(a.window, 120, 130) and _contains(a.window, box)
        windows.add(a.window)
    assert len(windows) > 1


def test_face_crop_errors() -> None:
    img = torch.rand(3, 40, 40)
    with pytest.raises(ValueError, match="margin must be >= 0"):
        face_crop(img, detector=_fixed((5, 5, 10, 10)), margin=-0.1)
    with pytest.raises(ValueError, match="needs a generator"):
        face_crop(img, detector=_fixed((5, 5, 10, 10)), jitter=0.1)
    with pytest.raises(ValueError, match="size must be a positive int"):
        face_crop(img, detector=_fixed(), size=0)
    with pytest.raises(ValueError, match=r"shape \(3, H, W\)"):
        face_crop(torch.rand(1, 3, 40, 40), detector=_fixed())


# --- the OpenCV Haar detector ---


class _FakeCascade:
    """Stands in for cv2.CascadeClassifier: records its input, answers with preset boxes."""

    answer: ClassVar[object] = ()
    seen: ClassVar[list[np.ndarray]] = []

    def __init__(self, path: str) -> None:
        self.path = path

    def empty(self) -> bool:
        return False

    def detectMultiScale(self, gray: np.ndarray, **kwargs: object) -> object:
        _FakeCascade.seen.append(gray)
        return _FakeCascade.answer


def test_haar_plumbing_with_a_stand_in_classifier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xml = tmp_path / "cascade.xml"
    xml.write_text("<opencv_storage/>")
    monkeypatch.setattr(cv2, "CascadeClassifier", _FakeCascade, raising=False)
    detect = haar_detector(cascade=xml)
    img = torch.rand(3, 30, 40)
    _FakeCascade.answer = np.array([[1, 2, 10, 10], [5, 5, 20, 20]], dtype=np.int32)
    assert face_box(img, detector=detect) == (5, 5, 20, 20)
    assert _FakeCascade.seen[-1].shape == (30, 40) and _FakeCascade.seen[-1].dtype == np.uint8  # gray 8-bit
    _FakeCascade.answer = ()  # what OpenCV returns when it finds nothing
    assert face_box(img, detector=detect) is None


def test_haar_unavailable_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xml = tmp_path / "cascade.xml"
    xml.write_text("<opencv_storage/>")
    monkeypatch.delattr(cv2, "CascadeClassifier", raising=False)
    with pytest.raises(FaceDetectorUnavailable, match=r"has no CascadeClassifier.*opencv-python-headless<5"):
        haar_detector(cascade=xml)
    with pytest.raises(FaceDetectorUnavailable, match="file not found"):
        haar_detector(cascade=tmp_path / "missing.xml")


def test_find_haar_cascade_looks_in_cv2_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_cascade.xml").write_text("<opencv_storage/>")
    monkeypatch.setattr("cv2.data.haarcascades", str(tmp_path) + "/")
    assert find_haar_cascade("my_cascade.xml") == tmp_path / "my_cascade.xml"
    with pytest.raises(FaceDetectorUnavailable, match=r"ships no not_a_cascade\.xml"):
        find_haar_cascade("not_a_cascade.xml")


def test_haar_finds_faces_on_lfw(data_dir: Path) -> None:
    detect = _haar_or_skip()
    files = sorted((data_dir / "faces" / "LFW").glob("*.jpg"))
    assert len(files) >= 20, f"expected LFW JPEGs in {data_dir / 'faces' / 'LFW'}"
    picked = files[:: len(files) // 20][:20]  # spread over the alphabet, not 20 photos of one person
    found = 0
    for path in picked:
        result = face_crop(image_io.read_rgb(path), detector=detect)
        h, w = image_io.read_rgb(path).shape[-2:]
        assert _inside(result.window, h, w)
        if result.found:
            found += 1
            assert result.face is not None and _contains(result.window, result.face)
    assert found >= 16, f"faces found in only {found} of 20 LFW images"


def test_haar_finds_no_face_in_a_synthetic_image() -> None:
    detect = _haar_or_skip()
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 97), torch.linspace(0, 1, 151), indexing="ij")
    img = torch.stack([xx, yy, (xx + yy) / 2])  # smooth colour ramps: nothing face-like
    result = face_crop(img, detector=detect)
    assert not result.found and result.window == (27, 0, 97, 97)
