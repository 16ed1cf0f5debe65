"""Score the peer SRGAN (leftthomas/SRGAN, netG_epoch_4_100.pth in the data folder) with srkit's evaluator,
so shipped models can be compared with it under one protocol.

    python benchmarks/peer_srgan.py [--sets Set5,Set14,BSD100] [--models srresnet,srgan]

The peer's network is rebuilt here from its published description (SOURCES.md of the data folder):
a 9x9 head, 5 residual blocks, conv + PReLU, two sub-pixel x2 blocks, a 9x9 tail, output (tanh + 1) / 2.
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console
from torch import nn

from srkit.evaluate import evaluate_sets, resolve_set, summary_table
from srkit.metrics import LPIPS
from srkit.models import load_model
from srkit.paths import data_file


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(64, 64, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))


class _Up(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(64, 256, 3, padding=1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.prelu = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.pixel_shuffle(self.conv(x)))


class PeerSRGAN(nn.Module):
    """leftthomas/SRGAN Generator(scale_factor=4) at commit b0323c6 (module names match its state dict)."""

    scale = 4

    def __init__(self) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 64, 9, padding=4), nn.PReLU())
        self.block2, self.block3, self.block4, self.block5, self.block6 = (_Residual() for _ in range(5))
        self.block7 = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.PReLU())
        self.block8 = nn.Sequential(_Up(), _Up(), nn.Conv2d(64, 3, 9, padding=4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.block1(x)
        b = b1
        for block in (self.block2, self.block3, self.block4, self.block5, self.block6):
            b = block(b)
        return (torch.tanh(self.block8(b1 + self.block7(b))) + 1) / 2


def load_peer() -> PeerSRGAN:
    path = data_file(
        "weights/srgan_leftthomas/netG_epoch_4_100.pth",
        what="peer SRGAN weights",
        how="It is part of the project's shared data folder (see SOURCES.md there).",
    )
    model = PeerSRGAN()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="Set5,Set14,BSD100")
    parser.add_argument("--models", default="", help="srkit models to score beside the peer, comma-separated")
    args = parser.parse_args()
    device = torch.device("cpu")
    lpips_model = LPIPS("alex")
    console = Console(highlight=False)
    models: dict[str, nn.Module] = {"peer SRGAN (leftthomas)": load_peer()}
    for name in (m for m in args.models.split(",") if m):
        models[name] = load_model(name)
    for label, model in models.items():
        sets = [resolve_set(s) for s in args.sets.split(",")]
        result = evaluate_sets(model, sets, scale=4, device=device, lpips_model=lpips_model)
        console.print(summary_table(result.summary, title=label))


if __name__ == "__main__":
    main()
