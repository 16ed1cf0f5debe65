"""Face crops for face SR: find the largest face with OpenCV's Haar cascade, cut a square around it.

The crop margin is dynamic: it is a fraction of the detected face box, so a small face gets a small
window and a large face a large one, and the window is clamped to the image (and, where it fits, to
contain the whole face). Without a face the crop falls back to the largest centred square, and the
result says so (`FaceCrop.found`, `FaceCrop.reason`) instead of failing or guessing silently.

Face training augments with flips only, never rotations: faces in the data are upright (LFW is
centred on an OpenCV face detection) and so are the faces the model is asked to restore.

The detector is a plain function (image -> boxes) so a caller can bring another one; the default
needs OpenCV's CascadeClassifier and its haarcascade_frontalface_default.xml. Both ship with
opencv-python(-headless) 4.x; OpenCV 5 moved the cascades out of the main package, and there
`haar_detector()` raises FaceDetectorUnavailable saying so.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import torch

from srkit import image_io
from srkit.ops import imresize

Box = tuple[int, int, int, int]  # (x, y, w, h) in pixels: left, top, width, height (OpenCV's order)
Detector = Callable[[torch.Tensor], Sequence[Box]]  # (3, H, W) float RGB in [0, 1] -> face boxes

HAAR_FRONTAL_FACE = "haarcascade_frontalface_default.xml"


class FaceDetectorUnavailable(RuntimeError):
    """The Haar face detector cannot run in this OpenCV build; the message says what is missing and the fix."""


def find_haar_cascade(name: str = HAAR_FRONTAL_FACE) -> Path:
    """The cascade XML shipped with cv2: cv2.data.haarcascades, else searched for in the cv2 package folder."""
    searched: list[Path] = []
    data = getattr(cv2, "data", None)
    if data is not None and getattr(data, "haarcascades", None):
        searched.append(Path(data.haarcascades))
    package = Path(cv2.__file__).parent
    searched.append(package)
    for folder in searched:
        if (folder / name).is_file():
            return folder / name
    found = sorted(package.rglob(name))
    if found:
        return found[0]
    looked = ", ".join(str(p) for p in searched)
    raise FaceDetectorUnavailable(
        f"OpenCV {cv2.__version__} ships no {name} (looked in {looked} and below). opencv-python-headless 4.x "
        "has it in cv2/data/; OpenCV 5 moved the Haar cascades out. Install opencv-python-headless<5, or pass "
        "detector=haar_detector(cascade=<path to the XML>) or a detector of your own."
    )


@functools.lru_cache(maxsize=4)
def _load_cascade(path: str) -> Any:
    """Load a CascadeClassifier once per path rather than parsing the XML on every call."""
    classifier_type = getattr(cv2, "CascadeClassifier", None)  # absent from OpenCV 5's main module
    if classifier_type is None:
        raise FaceDetectorUnavailable(
            f"OpenCV {cv2.__version__} has no CascadeClassifier (OpenCV 5 moved Haar cascades out of the main "
            "package). Install opencv-python-headless<5 or pass your own detector."
        )
    classifier = classifier_type(path)
    if classifier.empty():
        raise FaceDetectorUnavailable(f"OpenCV could not load the Haar cascade {path}")
    return classifier


def haar_detector(
    *, cascade: str | Path | None = None, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 30
) -> Detector:
    """OpenCV's frontal-face Haar cascade as a Detector; loads now, so a missing cascade fails here.

    The defaults are the values OpenCV's cascade tutorials use (scaleFactor 1.1, minNeighbors 5, 30 px
    smallest face); they are not tuned on our data.
    """
    path = Path(cascade) if cascade is not None else find_haar_cascade()
    if not path.is_file():
        raise FaceDetectorUnavailable(f"Haar cascade file not found: {path}")
    classifier = _load_cascade(str(path))

    def detect(img: torch.Tensor) -> list[Box]:
        gray = cv2.cvtColor(image_io.to_uint8(img), cv2.COLOR_RGB2GRAY)
        found = classifier.detectMultiScale(
            gray, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_size, min_size)
        )
        return [(int(x), int(y), int(w), int(h)) for x, y, w, h in found]  # () or an (n, 4) int array

    return detect


@functools.lru_cache(maxsize=1)
def _default_detector() -> Detector:
    """The Haar detector with default settings, built on first use."""
    return haar_detector()


def _require_float_rgb(img: torch.Tensor, where: str) -> None:
    """Raise unless img is a float (3, H, W) tensor."""
    if img.ndim != 3 or img.shape[0] != 3 or not img.is_floating_point():
        raise ValueError(f"{where}: expected a float RGB image of shape (3, H, W), got {img.dtype} {tuple(img.shape)}")


def face_box(img: torch.Tensor, *, detector: Detector | None = None) -> Box | None:
    """The largest detected face as (x, y, w, h) clipped to the image, or None when there is none."""
    _require_float_rgb(img, "face_box")
    h, w = img.shape[-2:]
    boxes = []
    for x, y, bw, bh in (detector or _default_detector())(img):
        # Clip: a detector may report a box reaching past the border.
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(w, x + bw), min(h, y + bh)
        if x1 > x0 and y1 > y0:
            boxes.append((x0, y0, x1 - x0, y1 - y0))
    if not boxes:
        return None
    return max(boxes, key=lambda b: b[2] * b[3])  # first of equals: detectors list the stronger one first


def crop_window(
    box: Box, image_size: tuple[int, int], *, margin: float, shift: tuple[float, float] = (0.0, 0.0)
) -> Box:
    """The square (x, y, side, side) around `box`: side = face side * (1 + 2 * margin), inside the image.

    image_size is (H, W). The side is clamped to [face side, min(H, W)]; the window is moved (not shrunk)
    to stay inside the image and, where it can, to keep the whole face. `shift` (dx, dy) in pixels moves
    the centre first (jitter), within the same limits.
    """
    if not margin >= 0:
        raise ValueError(f"crop margin must be >= 0 (a fraction of the face box side), got {margin}")
    height, width = image_size
    bx, by, bw, bh = box
    face_side = max(bw, bh)
    side = min(min(height, width), max(face_side, round(face_side * (1 + 2 * margin))))
    left = math.floor(bx + bw / 2 + shift[0] - side / 2)
    top = math.floor(by + bh / 2 + shift[1] - side / 2)
    # Keep the face inside the window (possible when it fits), then the window inside the image.
    if side >= bw:
        left = min(max(left, bx + bw - side), bx)
    if side >= bh:
        top = min(max(top, by + bh - side), by)
    left = min(max(left, 0), width - side)
    top = min(max(top, 0), height - side)
    return (left, top, side, side)


def centre_window(image_size: tuple[int, int]) -> Box:
    """The largest centred square (x, y, side, side) of an image of size (H, W)."""
    height, width = image_size
    side = min(height, width)
    return ((width - side) // 2, (height - side) // 2, side, side)


@dataclass(frozen=True)
class FaceCrop:
    """A square crop, where it came from, and the face it is centred on (None: no face, centre crop)."""

    image: torch.Tensor  # (3, S, S), or (3, size, size) when resized
    window: Box  # the square cut from the input, (x, y, side, side)
    face: Box | None
    reason: str

    @property
    def found(self) -> bool:
        """Whether a face was detected (False: the crop is the centre fallback)."""
        return self.face is not None


def face_crop(
    img: torch.Tensor,
    *,
    size: int | None = None,
    margin: float = 0.3,
    jitter: float = 0.0,
    generator: torch.Generator | None = None,
    detector: Detector | None = None,
) -> FaceCrop:
    """A square crop centred on the largest face, with a margin proportional to the face; optionally resized.

    Args:
        margin: added on each side, as a fraction of the face box side (0.3 -> a window 1.6x the face).
            The report gives no number; 0.3 is our choice, to leave room for the hair and chin that a
            tight frontal-face box cuts off. Tune it per dataset.
        jitter: random shift of the window centre, up to this fraction of the face side, drawn with
            `generator` (needed when jitter > 0); the face stays inside the window.
        size: resize the square to size x size with MATLAB bicubic (antialiased), clamped to [0, 1].
    """
    _require_float_rgb(img, "face_crop")
    if not 0 <= jitter <= 1:
        raise ValueError(f"face_crop: jitter must be in [0, 1] (a fraction of the face side), got {jitter}")
    if jitter > 0 and generator is None:
        raise ValueError("face_crop: jitter > 0 draws a random shift and needs a generator")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"face_crop: size must be a positive int or None, got {size!r}")
    image_size = (int(img.shape[-2]), int(img.shape[-1]))
    face = face_box(img, detector=detector)
    if face is None:
        window, reason = centre_window(image_size), "no face detected: largest centred square"
    else:
        shift = (0.0, 0.0)
        if jitter > 0:
            assert generator is not None
            u = torch.rand(2, generator=generator, dtype=torch.float64) * 2 - 1  # uniform in [-1, 1)
            amount = jitter * max(face[2], face[3])
            shift = (float(u[0]) * amount, float(u[1]) * amount)
        window, reason = crop_window(face, image_size, margin=margin, shift=shift), "face"
    x, y, side, _ = window
    crop = img[:, y : y + side, x : x + side]
    if size is not None and size != side:
        # Clamped: bicubic overshoots at edges and the image contract is [0, 1].
        crop = imresize(crop, size=(size, size)).clamp(0, 1)
    return FaceCrop(image=crop, window=window, face=face, reason=reason)
