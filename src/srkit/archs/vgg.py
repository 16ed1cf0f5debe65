"""A frozen, truncated VGG feature extractor for perceptual losses (SRGAN, ESRGAN before-ReLU)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from srkit.paths import MissingDataError, data_file

# Convolutions per stage; each conv is followed by a ReLU, each stage by a max-pool (torchvision's layout).
_STAGES = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_OFFLINE_WEIGHTS = {
    "vgg16": "weights/imagenet_backbones/vgg16_features_imagenet.safetensors",
    "vgg19": "weights/imagenet_backbones/vgg19_features_imagenet.safetensors",
}


def layer_names(arch: str) -> list[str]:
    """Names of torchvision's `features` modules in order: conv1_1, relu1_1, conv1_2, ..., pool5."""
    if arch not in _STAGES:
        raise ValueError(f"VGG arch must be one of {sorted(_STAGES)}, got {arch!r}")
    names: list[str] = []
    for stage, n_convs in enumerate(_STAGES[arch], start=1):
        for i in range(1, n_convs + 1):
            names += [f"conv{stage}_{i}", f"relu{stage}_{i}"]
        names.append(f"pool{stage}")
    return names


def offline_weights_file(arch: str, data_dir: str | Path | None = None) -> Path:
    """The data folder's ImageNet `features.*` safetensors for `arch`; MissingDataError naming it when absent."""
    how = (
        f"Put torchvision's ImageNet {arch} `features.*` weights there as safetensors, or run once "
        f"online so torchvision can download them."
    )
    return data_file(_OFFLINE_WEIGHTS[arch], what=f"ImageNet {arch} weights", how=how, explicit=data_dir)


def has_offline_weights(arch: str, data_dir: str | Path | None = None) -> bool:
    """Whether the data folder holds `arch`'s ImageNet weights (benchmarks fall back to VGG16 when not)."""
    try:
        offline_weights_file(arch, data_dir)
    except MissingDataError:
        return False
    return True


def _imagenet_state_dict(arch: str, data_dir: str | Path | None) -> dict[str, torch.Tensor]:
    """ImageNet `features.*` weights: from the data folder when there, else torchvision's download."""
    try:
        return load_file(str(offline_weights_file(arch, data_dir)))
    except MissingDataError as missing:
        from torchvision import models

        weights = models.VGG16_Weights.IMAGENET1K_V1 if arch == "vgg16" else models.VGG19_Weights.IMAGENET1K_V1
        try:
            full = weights.get_state_dict(progress=False)
        except Exception as err:  # no network, proxy, disk full: the offline route is what the user can fix
            raise MissingDataError(f"{missing} (torchvision download also failed: {err})") from err
        return {k: v for k, v in full.items() if k.startswith("features.")}


class VGGFeatures(nn.Module):
    """VGG `features` cut after `layer`; input images in [0, 1], ImageNet normalisation applied inside.

    `layer` names a module as in `layer_names`: "conv5_4" is the conv output before its ReLU (ESRGAN),
    "relu5_4" the same features after the ReLU (SRGAN's phi_5,4); the default is the last ReLU. The
    network is frozen: no gradients to its weights and always in eval mode (gradients still flow to
    the input).

    Args:
        weights: "imagenet" (offline file, else torchvision's download), None for random init (tests),
            or a path to a safetensors file with `features.N.weight/bias` keys.
    """

    def __init__(
        self,
        *,
        arch: str = "vgg19",
        layer: str | None = None,
        weights: str | Path | None = "imagenet",
        data_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        names = layer_names(arch)
        if layer is None:
            layer = [n for n in names if n.startswith("relu")][-1]  # relu5_4 (vgg19) / relu5_3 (vgg16)
        if layer not in names:
            raise ValueError(f"VGG layer for {arch} must be one of {names}, got {layer!r}")
        self.arch, self.layer = arch, layer
        cut = names.index(layer) + 1
        # Only the conv trunk, built directly: torchvision's full VGG would also build a 120M-parameter
        # classifier just to be thrown away. Same module indices, so `features.N` keys load as they are.
        # torchvision imported here, not at module level: it costs ~1-2 s of start-up that upscaling never needs.
        from torchvision.models.vgg import cfgs, make_layers

        self.features = make_layers(cfgs["D" if arch == "vgg16" else "E"])[:cut]
        if weights is not None:
            if weights == "imagenet":
                state = _imagenet_state_dict(arch, data_dir)
            else:
                path = Path(weights)
                if not path.is_file():
                    raise MissingDataError(f"VGG weights file not found: {path}")
                state = load_file(str(path))
            kept = {k.removeprefix("features."): v for k, v in state.items() if int(k.split(".")[1]) < cut}
            self.features.load_state_dict(kept, strict=True)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        """Stay in eval mode: the extractor is a fixed measuring instrument, never trained."""
        return super().train(False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        # (N, 3, H, W) in [0, 1] -> (N, C_layer, H / 2^pools, W / 2^pools)
        return self.features((img - self.mean) / self.std)

    def taps(self, img: torch.Tensor, layers: list[str]) -> list[torch.Tensor]:
        """The features at each of `layers` (names as in `layer_names`, none deeper than the cut), in that order.

        One pass through the trunk: each tap is the output of its module, so "conv3_3" is before its ReLU.
        """
        names = layer_names(self.arch)
        where = {names.index(name): name for name in layers}
        if max(where) >= len(self.features):
            raise ValueError(f"VGG taps {layers} go deeper than this extractor's cut at {self.layer}")
        found: dict[str, torch.Tensor] = {}
        x = (img - self.mean) / self.std
        for index, module in enumerate(self.features[: max(where) + 1]):
            # torchvision's ReLUs are in-place: they would overwrite a conv tap taken just before them
            x = torch.relu(x) if isinstance(module, nn.ReLU) else module(x)
            if index in where:
                found[where[index]] = x
        return [found[name] for name in layers]
