"""Upscaling images and folders with any generator: tiled and blended, alpha, grayscale and 16-bit carried through.

Tiling: the LR image is cut into `tile` x `tile` pieces that overlap by `overlap` pixels (the last tile of a row or
column is shifted back inside the image, so every tile is full-size), the model runs on batches of tiles, and the
upscaled tiles are blended with a raised-cosine window into a float accumulator. The blend weights of a tile grid
are separable, so the weight "buffer" is two 1-D vectors; memory is the output plus one batch of tiles.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from srkit import image_io
from srkit.descriptor import ModelDescriptor, Upscaler, describe
from srkit.ops import imresize

# Default LR tile side. It costs (256 / 224)^2 = 1.31x the work of the whole image at the default overlap. Memory:
# a 2000x2000 -> 8000x8000 upscale is the 768 MB float32 output plus one batch of tiles; `srkit upscale` on such a
# PNG peaked at 2.1 GB RSS with a tiny SRResNet. One paper-size SRResNet tile of 256 adds ~0.65 GB of activations
# on the CPU (NHWC; measured at 128x128 and scaled), 4 of them ~2.6 GB.
TILE = 256
# Default overlap (LR pixels). Paper-size SRResNet (64 wide, 16 blocks, x4) has a receptive-field radius of
#   4 (9x9 head) + 32 (16 blocks x 2 convs 3x3) + 1 (body-tail 3x3) + 1 (first x2 conv, at LR)
#   + 0.5 (second x2 conv, at 2x) + 1 (9x9 tail, at 4x) = 39.5 -> 40 LR pixels,
# so only outputs 40 px from a cut edge are exact in theory, which would need an overlap of 4 * 40 = 160 (the blend
# ignores the outer quarter of the overlap, see blend_window). The influence of far pixels decays fast, though
# (the effective receptive field, Luo et al. 2016): measured on baboon (Set14) at tile 64, the max error of a
# trained SRGAN generator (leftthomas, 5 blocks) and a random paper-size SRResNet is ~4/255 with a margin of
# 2 px (overlap 8), ~0.5/255 at 4 px (16), ~0.06/255 at 6 px (24) and ~0.005/255 at 8 px (32). Overlap 32 keeps
# 1/255 with a factor of ~100 to spare for deeper or better-trained models (tests/test_inference.py checks it).
OVERLAP = 32
# `srkit upscale`'s default tile is sized per model (default_tile): the largest square whose biggest conv input
# plus output (float32, estimated from a shapes-only pass) fits TILE_MEMORY, within DEFAULT_TILE_RANGE. 512 MiB
# gives paper-size RRDBNet 256 (its x4 convs hold 8 KiB per LR pixel), SRResNet 320 (5 KiB) and Compact 1024
# (384 B: every conv at LR size), so a 512 px image is one Compact tile: tiles of a model that cheap run slower
# than the whole image (measured 4.9 vs 7.6 output MP/s at 512 px, bf16, tile 256).
TILE_MEMORY = 512 << 20
DEFAULT_TILE_RANGE = (128, 1024)
# Tiles per forward pass: 1 on the CPU, where a 256 tile already keeps every core busy and batching only adds
# memory (4 paper-size SRResNet tiles would push a 2000x2000 upscale past 3 GB); 4 on GPUs, which need the work.
TILES_PER_BATCH = {"cpu": 1, "other": 4}
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Keep the blend accumulator on a CUDA device only while it takes at most this share of the free memory.
_DEVICE_ACCUMULATOR_SHARE = 0.25

# (tiles done, tiles in all): called after each batch of tiles.
TileProgress = Callable[[int, int], None]


class NonFiniteOutputError(ValueError):
    """A model returned NaN or infinity; nothing is written from it."""


class OutputTooLargeError(ValueError):
    """An upscale whose output would pass the pixel limit; refused before decoding the input."""


# Largest output, width x height, of an untiled upscale by default: whole-image activations grow with it
# (SRResNet's last layers hold ~256 bytes per output pixel), so 64 MP already needs ~16 GB at most.
MAX_OUTPUT_PIXELS_WHOLE = 64_000_000
# Bytes per output pixel a tiled upscale holds at once: float32 accumulator (12), the float32 result (12) and the
# encoded 8/16-bit copy (3-6); the model's own memory is bounded by the tile.
_TILED_BYTES_PER_OUTPUT_PIXEL = 28
_WHOLE_BYTES_PER_OUTPUT_PIXEL = 256


def available_memory() -> int:
    """Bytes of memory free for new allocations now (RAM, or the free memory of the CUDA device in use)."""
    import psutil

    return int(psutil.virtual_memory().available)


def max_output_pixels(*, tiled: bool, explicit: int | None = None, memory: int | None = None) -> int:
    """The largest output (pixels) an upscale may make: `explicit`, else what fits in half the free memory.

    Untiled runs are also capped at MAX_OUTPUT_PIXELS_WHOLE; tiling raises what fits, since only the output
    buffers grow with the image.
    """
    if explicit is not None:
        if explicit < 1:
            raise ValueError(f"--max-output-pixels must be >= 1, got {explicit}")
        return explicit
    budget = (available_memory() if memory is None else memory) // 2
    if tiled:
        return max(1, budget // _TILED_BYTES_PER_OUTPUT_PIXEL)
    return max(1, min(MAX_OUTPUT_PIXELS_WHOLE, budget // _WHOLE_BYTES_PER_OUTPUT_PIXEL))


def check_output_size(width: int, height: int, scale: int, *, limit: int) -> None:
    """Refuse (OutputTooLargeError) an input whose x`scale` output would pass `limit` pixels, saying what to change."""
    out_w, out_h = width * scale, height * scale
    if out_w * out_h > limit:
        raise OutputTooLargeError(
            f"{width}x{height} at x{scale} would be {out_w}x{out_h} = {out_w * out_h / 1e6:.1f} MP, over the "
            f"limit of {limit / 1e6:.1f} MP; raise it with --max-output-pixels N (memory permitting), or tile "
            "(--tile 256) if you turned tiling off"
        )


def tile_layout(length: int, tile: int, overlap: int) -> tuple[int, list[int]]:
    """(tile size, start offsets) of the fewest tiles of at most `tile` px that cover [0, length) with neighbours
    overlapping by at least `overlap`, spread evenly and all the same size.

    The same number of tiles as stepping by `tile - overlap`, but each only as large as that count needs: 512 px
    at tile 256, overlap 32 is 3 tiles of 192 (576 px of work, 1.27x the whole image over both axes) instead of
    3 of 256 with the last shifted back (768 px, 2.25x).
    """
    if tile >= length:
        return length, [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    # The smallest size at which n tiles reach across with the overlap; never below the blend's 2 * overlap.
    size = min(tile, max(math.ceil((length + (n - 1) * overlap) / n), 2 * overlap))
    # Floor of an even spacing: gaps differ by at most 1 px and never exceed size - overlap.
    return size, [i * (length - size) // (n - 1) for i in range(n)]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tile_layout's tiles."""
    return tile_layout(length, tile, overlap)[1]


def blend_window(size: int, overlap: int, *, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1-D weights of one tile: per cut edge 0 over the outer quarter of the overlap, sin^2 up over the middle half."""
    # The outer quarter is dropped because a tile's output is wrong near a cut edge (the model sees zero padding
    # there instead of the neighbouring pixels). The neighbour has weight 1 there, so the summed weight of a tile
    # grid is >= 1 everywhere in the image when tiles are at least 2 * overlap; two ramps facing each other sum
    # to 1 (sin^2 a + sin^2 (pi/2 - a) = 1), so there is no seam. Image edges (no cut) get no ramp.
    w = torch.ones(size, dtype=torch.float64)
    margin = overlap // 4
    ramp = overlap - 2 * margin
    if ramp > 0:
        d = torch.arange(min(overlap, size), dtype=torch.float64)
        # Sampled at pixel centres (d + 0.5): the ramp covers samples margin .. margin + ramp - 1.
        up = torch.sin(math.pi / 2 * ((d - margin + 0.5) / ramp).clamp(0, 1)) ** 2
        if ramp_start:
            w[: len(up)] *= up
        if ramp_end:
            w[size - len(up) :] *= up.flip(0)
    return w


def _axis_weights(
    length: int, tile: int, overlap: int, scale: int
) -> tuple[int, list[int], list[torch.Tensor], torch.Tensor]:
    """Tile size and starts (LR) along one axis, each tile's HR window, and the summed HR weight along it."""
    size, starts = tile_layout(length, tile, overlap)
    windows = [
        blend_window(size * scale, overlap * scale, ramp_start=s > 0, ramp_end=s + size < length) for s in starts
    ]
    total = torch.zeros(length * scale, dtype=torch.float64)
    for s, w in zip(starts, windows, strict=True):
        total[s * scale : (s + size) * scale] += w
    return size, starts, windows, total


def check_precision(device: torch.device, dtype: torch.dtype) -> None:
    """Raise unless dtype is float32, bfloat16 (CPU or CUDA) or float16 (CUDA)."""
    if dtype not in PRECISIONS.values():
        raise ValueError(f"precision must be float32, bfloat16 or float16, got {dtype}")
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("precision fp16 is for CUDA (CPU float16 convolutions are slow); on the CPU use bf16 or fp32")


def _precision_context(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[object]:
    """Autocast for bf16/fp16 (the model keeps its float32 weights); nothing for fp32."""
    check_precision(device, dtype)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _check_eval_mode(model: nn.Module) -> None:
    """Tiles only agree with the whole image when BatchNorm uses its running statistics."""
    if model.training and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError(
            f"{type(model).__name__} is in training mode and has BatchNorm: call model.eval() first "
            "(in training mode each tile would be normalised with its own statistics)"
        )


def use_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Whether NHWC inputs pay: yes for conv models on the CPU, where oneDNN's NHWC kernels are faster."""
    # Measured on a 2-core AVX2 EPYC, one thread, fp32: paper SRResNet 1.8x faster (128x128 LR), a tiny
    # SRResNet 2.7x, RRDBNet 1.1x; bf16 (emulated without AVX512-BF16) 18x faster than NCHW bf16. Not measured
    # on CUDA, so left off there.
    return device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules())


@dataclass(frozen=True)
class ConvProfile:
    """A model's convolutions per LR input pixel: FLOPs (2 x multiply-adds) and the largest conv input + output
    in float32 bytes (what one tile's activations scale with)."""

    flop_per_pixel: float
    peak_bytes_per_pixel: float


def conv_profile(model: Upscaler) -> ConvProfile | None:
    """The model's ConvProfile from a shapes-only pass on PyTorch's meta device (nothing computed or allocated);
    None where that cannot be known (no conv, or a network that does not run on meta tensors)."""
    import copy

    from srkit.archs import GENERATORS

    desc = describe(model)
    source = desc.source
    flops, peak = 0, 0

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal flops, peak
        assert isinstance(m, nn.Conv2d)
        flops += 2 * output.numel() * m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
        peak = max(peak, inputs[0].numel() + output.numel())

    try:
        if source is not None and source.arch in GENERATORS:
            with torch.device("meta"):
                net = GENERATORS[source.arch](**source.arch_kwargs)
        elif desc.backend == "torch":
            net = copy.deepcopy(desc.model).to("meta")
        else:
            return None
        hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
        with torch.inference_mode():
            net.eval()(torch.empty(1, 3, 8, 8, device="meta"))
        for h in hooks:
            h.remove()
    except Exception:  # a network that cannot run on meta tensors: callers keep their fixed defaults
        return None
    return ConvProfile(flops / 64, peak * 4 / 64) if peak else None


def default_tile(model: Upscaler) -> int:
    """The LR tile side `srkit upscale` uses when --tile is not given: see TILE_MEMORY; TILE when unknown."""
    profile = conv_profile(model)
    if profile is None:
        return TILE
    low, high = DEFAULT_TILE_RANGE
    return max(low, min(high, int(math.sqrt(TILE_MEMORY / profile.peak_bytes_per_pixel)) // 8 * 8))


def default_batch_tiles(device: torch.device) -> int:
    """Tiles per forward pass when the caller does not say: see TILES_PER_BATCH."""
    return TILES_PER_BATCH["cpu" if device.type == "cpu" else "other"]


# How tables and summaries name a self-ensembled row (evaluate --self-ensemble, compare MODEL+).
SELF_ENSEMBLE_TEXT = "geometric self-ensemble x8 (flips and 90-degree turns, outputs averaged)"


class SelfEnsemble(nn.Module):
    """Geometric self-ensemble (Lim et al. 2017, EDSR+; Timofte et al. 2016): the model on the 8 flips and 90-degree
    turns of its input, each output turned back, and the 8 averaged. 8x the work, for about +0.1 dB PSNR on
    PSNR-trained models; the output is equivariant to those transforms by construction."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.scale = getattr(model, "scale", None)
        self.train(model.training)  # a new Module starts in training mode; keep the generator's own mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nhwc = x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)
        total: torch.Tensor | None = None
        for flip in (False, True):
            for turns in range(4):
                t = torch.rot90(x.flip(-1) if flip else x, turns, dims=(-2, -1))
                t = t.contiguous(memory_format=torch.channels_last) if nhwc else t.contiguous()
                y = self.model(t)
                y = torch.rot90(y if y.dtype == torch.float64 else y.float(), -turns, dims=(-2, -1))
                y = y.flip(-1) if flip else y
                total = y if total is None else total.add_(y)
        assert total is not None
        return total.div_(8)


def with_self_ensemble(model: Upscaler) -> ModelDescriptor:
    """The model run as a geometric self-ensemble (SelfEnsemble); its label gains EDSR's "+" (srresnet+)."""
    desc = describe(model)
    if isinstance(desc.model, SelfEnsemble):
        return desc
    return dataclasses.replace(desc, model=SelfEnsemble(desc.model), self_ensemble=True)


def run_model(
    model: Upscaler,
    x: torch.Tensor,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """(B, 3, h, w) in [0, 1] -> the model's (B, 3, sh, sw) output clamped to [0, 1], on `device`.

    The one way srkit runs a model on a tensor (upscaling, evaluation, validation): inference mode, the input
    in the descriptor's input_dtype, bf16/fp16 through autocast (the weights stay as they are), and NaN/inf
    refused. The output is float32, or float64 for parameter-free models.
    """
    desc = describe(model)
    desc.check_precision(dtype)
    x = x.to(device=device, dtype=desc.input_dtype)
    if channels_last:
        # Only the input is converted: a conv picks the NHWC kernels when its input is NHWC, and the model is
        # left as the caller gave it (no hidden state change).
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), _precision_context(device, dtype):
        sr = desc.model(x)
        sr = sr if sr.dtype == torch.float64 else sr.float()
        if not bool(torch.isfinite(sr).all()):
            # NaN would be written as black (or arbitrary) pixels with exit 0; broken weights must be an error.
            raise NonFiniteOutputError(
                f"the model ({desc.label}) produced NaN or infinite values: its weights are broken "
                "(a diverged training?) or the precision is too low for it (try --precision fp32)"
            )
        return sr.clamp_(0, 1)


def upscale_tiled(
    model: Upscaler,
    lq: torch.Tensor,
    *,
    tile: int | None = TILE,
    overlap: int = OVERLAP,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    batch_tiles: int | None = None,
    channels_last: bool | None = None,
    progress: TileProgress | None = None,
) -> torch.Tensor:
    """(3, h, w) or (N, 3, h, w) in [0, 1] -> the model's (.., 3, sh, sw) output in [0, 1], float32 on the CPU.

    tile=None, or a tile at least as large as the image, runs whole images (still `batch_tiles` at a time).
    batch_tiles=None: 1 on the CPU, 4 elsewhere; channels_last=None: NHWC for conv models on the CPU.
    """
    if lq.dim() not in (3, 4) or lq.shape[-3] != 3 or not lq.is_floating_point():
        raise ValueError(f"expected a float RGB tensor (3, H, W) or (N, 3, H, W), got {lq.dtype} {tuple(lq.shape)}")
    if tile is not None and tile < 1:
        raise ValueError(f"tile must be a positive number of LR pixels or None (whole image), got {tile}")
    batch_tiles = default_batch_tiles(device) if batch_tiles is None else batch_tiles
    if batch_tiles < 1:
        raise ValueError(f"batch_tiles must be >= 1, got {batch_tiles}")
    desc = describe(model)
    _check_eval_mode(desc.model)
    channels_last = use_channels_last(desc.model, device) if channels_last is None else channels_last
    scale = desc.scale
    batched = lq.dim() == 4
    x = lq if batched else lq[None]
    n, _, h, w = x.shape
    whole = tile is None or (tile >= h and tile >= w)
    if tile is not None and not whole and not 0 <= overlap <= tile // 2:
        # Wider overlaps would let a tile's two ramps meet, and stride = tile - overlap would fall below overlap.
        raise ValueError(f"tile overlap must be in [0, tile / 2] = [0, {tile // 2}] for tile {tile}, got {overlap}")

    if whole:
        if not desc.pads_input:
            desc.size_requirements.check(h, w)
        out = torch.empty(n, 3, h * scale, w * scale)
        for i in range(0, n, batch_tiles):
            sr = run_model(desc, x[i : i + batch_tiles], device=device, dtype=dtype, channels_last=channels_last)
            _check_output(sr, x[i : i + batch_tiles], scale)
            out[i : i + batch_tiles] = sr
            if progress is not None:
                progress(min(i + batch_tiles, n), n)
        return out if batched else out[0]

    assert tile is not None
    th, ys, wins_y, total_y = _axis_weights(h, tile, overlap, scale)
    tw, xs, wins_x, total_x = _axis_weights(w, tile, overlap, scale)
    if not desc.pads_input:
        desc.size_requirements.check(th, tw)
    acc_device = _accumulator_device(device, n * 3 * h * w * scale * scale * 4)
    # (N, 3, sH, sW) float32: blended tile outputs, divided by the summed weights at the end.
    acc = torch.zeros(n, 3, h * scale, w * scale, device=acc_device)
    jobs = [(b, i, j) for b in range(n) for i in range(len(ys)) for j in range(len(xs))]
    for k in range(0, len(jobs), batch_tiles):
        chunk = jobs[k : k + batch_tiles]
        # (B, 3, th, tw) cut from the LR images
        tiles = torch.stack([x[b, :, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] for b, i, j in chunk])
        sr = run_model(desc, tiles, device=device, dtype=dtype, channels_last=channels_last)
        _check_output(sr, tiles, scale)
        sr = sr.to(acc_device)
        for t, (b, i, j) in enumerate(chunk):
            win = (wins_y[i][:, None] * wins_x[j][None, :]).to(device=acc_device, dtype=torch.float32)
            y0, x0 = ys[i] * scale, xs[j] * scale
            acc[b, :, y0 : y0 + th * scale, x0 : x0 + tw * scale].addcmul_(sr[t], win)
        if progress is not None:
            progress(min(k + batch_tiles, len(jobs)), len(jobs))
    # The summed weight is total_y (x) total_x; dividing by each factor in place avoids an (sH, sW) temporary.
    acc.div_(total_y.to(device=acc_device, dtype=torch.float32)[:, None])
    acc.div_(total_x.to(device=acc_device, dtype=torch.float32)[None, :])
    out = acc.cpu().clamp_(0, 1)  # the blend of values in [0, 1] is in [0, 1] up to float rounding
    return out if batched else out[0]


def _check_output(sr: torch.Tensor, lq: torch.Tensor, scale: int) -> None:
    """A model must return (B, 3, s*h, s*w) for (B, 3, h, w); say which shape it gave instead."""
    b, _, h, w = lq.shape
    if tuple(sr.shape) != (b, 3, h * scale, w * scale):
        raise ValueError(
            f"model output {tuple(sr.shape)} for input {tuple(lq.shape)}: expected {(b, 3, h * scale, w * scale)} "
            f"(its .scale says x{scale})"
        )


def _accumulator_device(device: torch.device, nbytes: int) -> torch.device:
    """The compute device when the float32 output fits comfortably in its free memory, else the CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        if nbytes <= _DEVICE_ACCUMULATOR_SHARE * free:
            return device
    return torch.device("cpu")


@dataclass(frozen=True)
class TileOptions:
    """How images are cut and run: LR tile side (None = whole image), overlap, precision, tiles per batch."""

    tile: int | None = TILE
    overlap: int = OVERLAP
    dtype: torch.dtype = torch.float32
    batch_tiles: int | None = None  # None: default_batch_tiles(device)
    channels_last: bool | None = None  # None: where it pays (use_channels_last)

    def __post_init__(self) -> None:
        # Checked here so a bad option fails once, before any file is read, not once per file.
        if self.tile is not None and self.tile < 1:
            raise ValueError(f"tile must be a positive number of LR pixels or None (whole image), got {self.tile}")
        if self.overlap < 0 or (self.tile is not None and self.overlap > self.tile // 2):
            limit = "" if self.tile is None else f" and at most tile / 2 = {self.tile // 2}"
            raise ValueError(f"tile overlap must be >= 0{limit}, got {self.overlap}")
        if self.batch_tiles is not None and self.batch_tiles < 1:
            raise ValueError(f"tiles per batch must be >= 1, got {self.batch_tiles}")
        if self.dtype not in PRECISIONS.values():
            raise ValueError(f"precision must be float32, bfloat16 or float16, got {self.dtype}")


def upscale_image(
    model: Upscaler,
    image: image_io.LoadedImage,
    *,
    device: torch.device,
    options: TileOptions | None = None,
    progress: TileProgress | None = None,
) -> image_io.LoadedImage:
    """Super-resolve the colour with the model; upscale alpha separately with bicubic (no model sees it)."""
    opts = options or TileOptions()
    rgb = upscale_tiled(
        model,
        image.rgb,
        tile=opts.tile,
        overlap=opts.overlap,
        device=device,
        dtype=opts.dtype,
        batch_tiles=opts.batch_tiles,
        channels_last=opts.channels_last,
        progress=progress,
    )
    return image_io.LoadedImage(
        rgb, upscale_alpha(image.alpha, describe(model).scale), image.bit_depth, image.grayscale, None
    )


def upscale_alpha(alpha: torch.Tensor | None, scale: int) -> torch.Tensor | None:
    """(1, h, w) -> (1, sh, sw) by bicubic: alpha is a mask, not a photo, so no model sees it (no invented texture)."""
    if alpha is None:
        return None
    return imresize(alpha.to(torch.float64), float(scale)).clamp(0, 1).float()
