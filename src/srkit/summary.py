"""`srkit summary`: a layer table (output shape, parameters, FLOPs) and a block diagram of a network.

FLOPs come from torch's own counter (torch.utils.flop_counter.FlopCounterMode): convolutions and matrix
products, 2 FLOPs per multiply-add; element-wise work (activations, BatchNorm, additions, resizing) is not
counted, as in published FLOP/MAC tables. The network runs on the meta device: shapes and counts only, no
arithmetic, so any input size is instant.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from srkit import fs
from srkit.archs import DISCRIMINATORS, GENERATORS
from srkit.models import build_generator, load_source, resolve_model, shipped_models

GENERATOR_INPUT = (24, 24)  # SRGAN's 96x96 HR crops at x4
DISCRIMINATOR_INPUT = (96, 96)
DIAGRAM_COLUMN = 10  # boxes per column of the diagram
_CONTAINERS = (nn.Sequential, nn.ModuleList)
_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


@dataclass(frozen=True)
class LayerRow:
    """One module: its dotted name, type, last output shape, and parameters / FLOPs including sub-modules."""

    name: str
    type: str
    depth: int
    output_shape: tuple[int, ...] | None
    params: int
    flops: int


@dataclass(frozen=True)
class Block:
    """One box of the diagram: a top-level module call with what it holds and what it returns."""

    name: str
    type: str
    contents: str
    output_shape: tuple[int, ...] | None
    params: int
    flops: int


@dataclass(frozen=True)
class ModelSummary:
    """Everything `srkit summary` prints and writes."""

    model: str
    arch: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    rows: list[LayerRow]
    blocks: list[Block]
    total_params: int
    trainable_params: int
    total_flops: int

    @property
    def total_macs(self) -> int:
        return self.total_flops // 2


def parse_size(text: str) -> tuple[int, int]:
    """'24x24', '32X48' or '64' -> (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not match or int(match.group(1)) < 1 or (match.group(2) and int(match.group(2)) < 1):
        raise ValueError(f"--input must be HxW with positive integers (e.g. 24x24) or one size, got {text!r}")
    h = int(match.group(1))
    return h, int(match.group(2) or h)


def build_network(name: str, *, scale: int | None = None) -> tuple[nn.Module, tuple[int, int]]:
    """A network and its default input size: a weights file or shipped model, or an arch with default args.

    Arch names are the keys of archs.GENERATORS and archs.DISCRIMINATORS; a discriminator can also be
    named with a `_discriminator` suffix (srgan_discriminator).
    """
    if name in GENERATORS:
        return build_generator(name, **({"scale": scale or 4} if name == "bicubic" else {})), GENERATOR_INPUT
    disc = name.removesuffix("_discriminator")
    if disc in DISCRIMINATORS:
        net = DISCRIMINATORS[disc]()
        size = getattr(net, "input_size", DISCRIMINATOR_INPUT[0])  # VGG128 takes 128x128 only
        return net, (size, size)
    try:
        source = resolve_model(name, scale=scale)
    except FileNotFoundError:
        known = [*GENERATORS, *(f"{d}_discriminator" for d in DISCRIMINATORS), *shipped_models()]
        raise ValueError(f"unknown model {name!r}: expected a .safetensors file or one of {', '.join(known)}") from None
    if source.kind == "onnx":
        raise ValueError(f"{name}: srkit summary describes PyTorch models, not ONNX graphs")
    return load_source(source), GENERATOR_INPUT


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def _contents(module: nn.Module) -> str:
    """What a module holds, compactly: '16 x ResidualBlock', 'Conv2d 9x9 3->64, PReLU'."""
    children = list(module.children())
    if not children:
        return _leaf_text(module)
    kinds = [type(c).__name__ for c in children]
    if len(set(kinds)) == 1 and len(kinds) > 2:
        return f"{len(kinds)} x {kinds[0]}"
    parts = [_leaf_text(c) if not list(c.children()) else type(c).__name__ for c in children]
    text = ", ".join(parts)
    return text if len(text) <= 60 else text[:57] + "..."


def _leaf_text(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        k, s = module.kernel_size, module.stride
        stride = f" s{s[0]}" if s != (1, 1) else ""
        return f"Conv2d {k[0]}x{k[1]}{stride} {module.in_channels}->{module.out_channels}"
    if isinstance(module, nn.Linear):
        return f"Linear {module.in_features}->{module.out_features}"
    return type(module).__name__


def _diagram_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The modules drawn: top-level ones, with flat containers (a Sequential of plain layers) opened up."""
    drawn: dict[str, nn.Module] = {}
    for name, module in model.named_children():
        children = dict(module.named_children())
        if isinstance(module, _CONTAINERS) and children and not any(list(c.children()) for c in children.values()):
            drawn.update({f"{name}.{n}": m for n, m in children.items()})
        else:
            drawn[name] = module
    return drawn


def _starts_block(module: nn.Module) -> bool:
    """Weight layers and composite modules open a box; activations, norms, pools and resizes join the last one."""
    return bool(list(module.children())) or isinstance(module, _WEIGHT_LAYERS)


def _span(names: list[str]) -> str:
    """['features.26', 'features.27', 'head.0'] -> 'features.26-27 + head.0' (runs of siblings shortened)."""
    runs: list[list[str]] = []
    for n in dict.fromkeys(names):
        if runs and runs[-1][0].rpartition(".")[0] == n.rpartition(".")[0] and n.rpartition(".")[2].isdigit():
            runs[-1].append(n)
        else:
            runs.append([n])
    return " + ".join(r[0] if len(r) == 1 else f"{r[0]}-{r[-1].rpartition('.')[2]}" for r in runs)


def _blocks(
    calls: list[tuple[str, tuple[int, ...] | None]],
    drawn: dict[str, nn.Module],
    params: dict[str, int],
    flops: dict[str, int],
) -> list[Block]:
    """Group the drawn modules' calls, in execution order, into boxes: a weight layer and what follows it."""
    n_calls = {n: sum(1 for c, _ in calls if c == n) for n in drawn}
    groups: list[list[tuple[str, tuple[int, ...] | None]]] = []
    for call in calls:
        if not groups or _starts_block(drawn[call[0]]):
            groups.append([])
        groups[-1].append(call)
    blocks = []
    for group in groups:
        names = [n for n, _ in group]
        first = drawn[names[0]]
        kind = type(first).__name__
        contents = _contents(first) if list(first.children()) else " > ".join(_leaf_text(drawn[n]) for n in names)
        blocks.append(
            Block(
                name=_span(names),
                type=kind,
                contents=contents,
                output_shape=group[-1][1],
                params=sum(params[n] for n in dict.fromkeys(names)),
                flops=sum(flops.get(n, 0) // n_calls[n] for n in names),  # a reused module's FLOPs split by calls
            )
        )
    return blocks


def summarize_model(model: nn.Module, *, name: str, input_size: tuple[int, int], depth: int = 2) -> ModelSummary:
    """Run one (1, 3, H, W) input through the network on the meta device and tabulate its modules."""
    if depth < 1:
        raise ValueError(f"--depth must be >= 1, got {depth}")
    total_params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in model.named_modules()}
    model = model.eval().to("meta")  # shapes and counts only: no memory for activations, no arithmetic
    shapes: dict[str, tuple[int, ...] | None] = {}
    order: list[str] = []  # first call of each module, in execution order
    calls: list[tuple[str, tuple[int, ...] | None]] = []  # every call of a diagram module, in order
    drawn = _diagram_modules(model)
    drawn_names = {id(m): n for n, m in drawn.items()}
    handles = []
    for mod_name, module in model.named_modules():
        if not mod_name:
            continue

        def pre_hook(_mod: nn.Module, _inputs: Any, mod_name: str = mod_name) -> None:
            if mod_name not in order:  # on entry, so a container is listed before its children
                order.append(mod_name)

        def hook(mod: nn.Module, _inputs: Any, out: Any, mod_name: str = mod_name) -> None:
            t = _first_tensor(out)
            shapes[mod_name] = tuple(t.shape) if t is not None else None
            if drawn_names.get(id(mod)) == mod_name:
                calls.append((mod_name, shapes[mod_name]))

        handles += [module.register_forward_pre_hook(pre_hook), module.register_forward_hook(hook)]
    x = torch.zeros(1, 3, *input_size, device="meta")
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = _first_tensor(model(x))
    except RuntimeError as err:
        raise ValueError(f"{name} does not accept a 1x3x{input_size[0]}x{input_size[1]} input: {err}") from err
    finally:
        for h in handles:
            h.remove()
    if out is None:
        raise ValueError(f"{name} returned no tensor")
    root = type(model).__name__
    flops = {
        key.removeprefix(f"{root}."): sum(counts.values())
        for key, counts in counter.get_flop_counts().items()
        if key.startswith(f"{root}.")
    }
    modules = dict(model.named_modules())
    unused = [n for n in modules if n and n not in order]
    rows = [
        LayerRow(
            name=n,
            type=type(modules[n]).__name__,
            depth=n.count(".") + 1,
            output_shape=shapes.get(n),
            params=params[n],
            flops=flops.get(n, 0),
        )
        for n in order + unused
        if n.count(".") + 1 <= depth
    ]
    if drawn:
        blocks = _blocks(calls, drawn, params, flops)
    else:  # a network without sub-modules (bicubic): one box
        blocks = [Block(root, root, root, tuple(out.shape), total_params, counter.get_total_flops())]
    return ModelSummary(
        model=name,
        arch=root,
        input_shape=tuple(x.shape),
        output_shape=tuple(out.shape),
        rows=rows,
        blocks=blocks,
        total_params=total_params,
        trainable_params=trainable,
        total_flops=counter.get_total_flops(),
    )


def _shape(shape: tuple[int, ...] | None) -> str:
    return "-" if shape is None else "x".join(str(d) for d in shape)


def human(n: float) -> str:
    """1549462 -> '1.55M', 1.37e9 -> '1.37G'."""
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:g}"


def totals(summary: ModelSummary) -> list[tuple[str, str]]:
    """The totals printed under the table."""
    return [
        ("input", _shape(summary.input_shape)),
        ("output", _shape(summary.output_shape)),
        ("parameters", f"{summary.total_params:,}"),
        ("trainable parameters", f"{summary.trainable_params:,}"),
        ("FLOPs", f"{summary.total_flops:,} ({human(summary.total_flops)})"),
        ("MACs", f"{summary.total_macs:,} ({human(summary.total_macs)})"),
    ]


def markdown(summary: ModelSummary) -> str:
    """The layer table and totals as markdown."""
    lines = [
        f"# {summary.model} ({summary.arch}), input {_shape(summary.input_shape)}",
        "",
        "| layer | type | output shape | parameters | FLOPs |",
        "|---|---|---|---:|---:|",
    ]
    for r in summary.rows:
        indent = "&nbsp;&nbsp;" * (r.depth - 1)
        lines.append(f"| {indent}{r.name} | {r.type} | {_shape(r.output_shape)} | {r.params:,} | {r.flops:,} |")
    lines += ["", "| total | |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in totals(summary)]
    lines += [
        "",
        "Parameters and FLOPs of a row include its sub-modules. FLOPs: torch.utils.flop_counter "
        "(convolutions and matrix products, 2 per multiply-add; element-wise operations not counted).",
    ]
    return "\n".join(lines) + "\n"


def model_table(summary: ModelSummary) -> Any:
    """The layer table and, under it, the totals: rich renderables for the terminal."""
    from rich.console import Group
    from rich.table import Table

    table = Table(title=f"{summary.model} ({summary.arch})")
    for col in ("layer", "type", "output shape", "parameters", "FLOPs"):
        table.add_column(col, justify="right" if col in ("parameters", "FLOPs") else "left")
    for r in summary.rows:
        table.add_row("  " * (r.depth - 1) + r.name, r.type, _shape(r.output_shape), f"{r.params:,}", human(r.flops))
    footer = Table.grid(padding=(0, 2))
    footer.add_column()
    footer.add_column(justify="right")
    for k, v in totals(summary):
        footer.add_row(k, v)
    return Group(table, footer)


def _colour(kind: str) -> str:
    if "Conv" in kind:
        return "#cfe2f3"
    if any(k in kind for k in ("ReLU", "PReLU", "LeakyReLU", "Tanh", "Sigmoid")):
        return "#fff2cc"
    if any(k in kind for k in ("Shuffle", "Up", "Bicubic", "Pool")):
        return "#f4cccc"
    if any(k in kind for k in ("Linear", "Flatten")):
        return "#ead1dc"
    return "#d9ead3"


def diagram(summary: ModelSummary) -> bytes:
    """A PNG block diagram: input, each top-level module call in order (contents, output shape, params), output."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    boxes = [("input", _shape(summary.input_shape), "#eeeeee")]
    for b in summary.blocks:
        detail = f"{b.contents}\nout {_shape(b.output_shape)}   {human(b.params)} params   {human(b.flops)} FLOPs"
        boxes.append((f"{b.name}: {b.type}", detail, _colour(b.type + " " + b.contents)))
    boxes.append(("output", _shape(summary.output_shape), "#eeeeee"))
    n_cols = -(-len(boxes) // DIAGRAM_COLUMN)
    n_rows = min(len(boxes), DIAGRAM_COLUMN)
    box_w, box_h, gap_x, gap_y = 4.2, 0.62, 0.6, 0.3
    width, height = n_cols * (box_w + gap_x) + gap_x, n_rows * (box_h + gap_y) + gap_y + 0.8
    fig = plt.figure(figsize=(width, height), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    title = f"{summary.model} ({summary.arch}): {summary.total_params:,} params, {human(summary.total_flops)} FLOPs"
    ax.text(width / 2, 0.3, title, ha="center", va="center", fontsize=10, weight="bold")
    centres = []
    for i, (head, detail, colour) in enumerate(boxes):
        col, row = divmod(i, DIAGRAM_COLUMN)
        x, y = gap_x + col * (box_w + gap_x), 0.5 + gap_y + row * (box_h + gap_y)
        ax.add_patch(FancyBboxPatch((x, y), box_w, box_h, boxstyle="round,pad=0.02", fc=colour, ec="#555555"))
        ax.text(x + 0.1, y + 0.2, head, fontsize=8.5, weight="bold", va="center")
        ax.text(x + 0.1, y + 0.45, detail, fontsize=7, va="center", linespacing=1.3)
        centres.append((x, y))
    for (x0, y0), (x1, y1) in itertools.pairwise(centres):
        if x0 == x1:  # same column: straight down
            start = (x0 + box_w / 2, y0 + box_h)
        else:  # next column: out of the right side, up the gap, into the top box's left side
            mid = x0 + box_w + gap_x / 2
            ax.plot([x0 + box_w, mid, mid], [y0 + box_h / 2, y0 + box_h / 2, y1 + box_h / 2], color="#555555", lw=1)
            start = (mid, y1 + box_h / 2)
        end = (x1 + box_w / 2, y1) if x0 == x1 else (x1, y1 + box_h / 2)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, color="#555555"))
    note = "Module calls in execution order.\nFunctional steps (skip additions, F.interpolate, imresize) not drawn."
    ax.text(gap_x, height - 0.25, note, fontsize=7, color="#555555", va="center")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def run_summary(
    name: str, *, input_size: tuple[int, int] | None, out_dir: Path, depth: int = 2, scale: int | None = None
) -> tuple[ModelSummary, list[Path]]:
    """Summarise a model and write OUT/<model>_summary.md and OUT/<model>_diagram.png (atomically)."""
    model, default_size = build_network(name, scale=scale)
    stem = Path(name).stem if Path(name).is_file() else name
    summary = summarize_model(model, name=stem, input_size=input_size or default_size, depth=depth)
    md, png = out_dir / f"{stem}_summary.md", out_dir / f"{stem}_diagram.png"
    fs.atomic_write(md, markdown(summary).encode("utf-8"))
    fs.atomic_write(png, diagram(summary))
    return summary, [md, png]
