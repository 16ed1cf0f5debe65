"""Ship a trained generator: copy its weights into src/srkit/weights/NAME.safetensors and write a model card.

    python scripts/release_model.py --name srresnet --weights RUN/checkpoints/best_psnr.safetensors \
        --run RUN [--compare bicubic,srresnet] [--note "..."] [--domain faces --sets Set5,Set14,BSD100,DIR]
        [--fp16]

The card holds the data, the recipe (the run's resolved config), steps, wall time, hardware and a
metrics table on Set5 / Set14 / BSD100 (and any folder given in --sets, e.g. the face test split)
measured here with srkit's evaluation protocol; NAME.json is the model-database style record (name,
license, architecture, scale, channels, sha256, iterations, dataset, pretrained-from, domain, chosen by).
--fp16 stores float16 tensors (half the size) after checking that outputs stay within 1/255 of float32.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import shlex
import subprocess
from pathlib import Path

import safetensors.torch
import torch
import yaml

from srkit.compare import compare_models, markdown, parse_models
from srkit.device import pick_device
from srkit.evaluate import BENCHMARK_SETS, resolve_set
from srkit.metrics import LPIPS
from srkit.models import SHIPPED_DIR, load_model, read_metadata, save_weights

TRAINING_DATA = (
    "../shared/data/train: T91 (91 files, 90 distinct), BSD200 (BSDS300 train split), General100 (50 of 100); "
    "images smaller than the HR crop skipped; never the benchmark sets"
)


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def _portable_config(path: Path, *, init_from: str | None) -> str:
    """The run's resolved config without paths of the training machine: they would mean nothing in the repo."""
    config = yaml.safe_load(path.read_text())
    config["out_dir"] = "runs"
    model = config.get("model", {})
    if init_from is not None:
        model["init_from"] = init_from
    text = yaml.safe_dump(config, sort_keys=False)
    absolute = [v for v in _strings(config) if Path(v).is_absolute()]
    if absolute:
        raise ValueError(f"{path} holds absolute paths {absolute}; pass --init-from NAME or fix the config")
    return text


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _fp16_within_one_level(model: torch.nn.Module, sets: list[tuple[str, Path]]) -> float:
    """Largest |fp16-weights output - fp32 output| over the first image of each set, in 8-bit levels."""
    from srkit.evaluate import benchmark_images, load_pair, super_resolve

    state = {k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    rounded = load_model_like(model, state)
    worst = 0.0
    for _, folder in sets:
        _, lq = load_pair(benchmark_images(folder)[0], scale=4)
        a = super_resolve(model, lq, device=torch.device("cpu"))
        b = super_resolve(rounded, lq, device=torch.device("cpu"))
        worst = max(worst, float((a - b).abs().max()) * 255)
    return worst


def load_model_like(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    import copy

    twin = copy.deepcopy(model)
    twin.load_state_dict(state)
    return twin.eval()


def _source_step(meta: dict[str, str]) -> str:
    """The training step the weights come from; for `srkit average` of milestones, their steps' range and count."""
    if "averaged" not in meta:
        return str(meta.get("step", "?"))
    steps = [int(m.group(1)) for f in json.loads(meta["averaged"]) if (m := re.search(r"generator_step(\d+)", f))]
    if not steps:
        return "? (mean of weights that are not run milestones)"
    return f"{min(steps)}-{max(steps)} (mean of {len(steps)} EMA milestones)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--weights", required=True, type=Path)
    parser.add_argument("--run", required=True, type=Path, help="the training run folder (config, summary)")
    parser.add_argument("--extra-runs", default="", help="earlier stages' run folders, comma-separated")
    parser.add_argument("--compare", default="bicubic", help="models to list beside it in the table")
    parser.add_argument("--note", default="", help="a paragraph for the card (e.g. perceptual-loss caveats)")
    parser.add_argument(
        "--init-from",
        default=None,
        help="model.init_from as a shipped name (the run keeps a path of the training machine)",
    )
    parser.add_argument("--domain", default="natural", choices=["natural", "faces"], help="what it was trained on")
    parser.add_argument("--chosen-by", default=None, help="how these weights were picked (default: from their kind)")
    parser.add_argument(
        "--sets", default=",".join(BENCHMARK_SETS), help="sets for the card's table: names or folders (NAME=DIR)"
    )
    parser.add_argument("--data-text", default=None, help="the training data line of the card (default: natural)")
    parser.add_argument("--pretrained-from", default=None, help="the shipped model it was fine-tuned from")
    parser.add_argument(
        "--command", default=None, help="the training command, for a run whose train.log predates recording it"
    )
    parser.add_argument("--fp16", action="store_true", help="store float16 tensors (checked within 1/255)")
    parser.add_argument(
        "--hardware",
        default=None,
        help="where the weights were trained, when not on this machine (default: this machine's CPU)",
    )
    parser.add_argument(
        "--then",
        action="append",
        default=[],
        help="a command run after training to make these weights (e.g. the srkit interpolate that blended them); "
        "repeat for several",
    )
    args = parser.parse_args()

    device = pick_device("auto")
    meta = read_metadata(args.weights)
    model = load_model(str(args.weights))
    out = SHIPPED_DIR / f"{args.name}.safetensors"
    SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
    summary = json.loads((args.run / "summary.json").read_text())
    sets = []
    for item in args.sets.split(","):
        label, _, target = item.rpartition("=")
        name, folder = resolve_set(target)
        sets.append((label or name, folder))
    kind = meta.get("kind", "")
    chosen_by = args.chosen_by or {
        "best_psnr": "best validation PSNR",
        "best_ssim": "best validation SSIM",
        "best_lpips": "best validation LPIPS",
    }.get(kind, "last step")
    if kind == "interpolated" and not args.chosen_by:
        chosen_by = f"network interpolation, alpha {meta.get('alpha', '?')} of the GAN model"
    if kind == "fused" and not args.chosen_by:
        chosen_by = f"frequency fusion (srkit fuse), sigma {meta.get('sigma', '?')} HR px"
    source_step = _source_step(meta)
    # An interpolation or a fusion has no step of its own: the card names its alpha or sigma instead.
    step_text = {
        "interpolated": f"alpha {meta.get('alpha', '?')}",
        "fused": f"fusion, sigma {meta.get('sigma', '?')}",
    }.get(kind, f"step {source_step}")
    # A --chosen-by for an interpolation or fusion names its alpha / sigma itself: say it once.
    step_cell = "" if args.chosen_by and kind in ("interpolated", "fused") else f" ({step_text})"
    extra = {
        "name": args.name,
        "source_run": args.run.name,
        "source_step": source_step,
        "domain": args.domain,
        "chosen_by": chosen_by,
    }
    save_weights(model, out, arch=meta["arch"], arch_kwargs=json.loads(meta["arch_kwargs"]), meta=extra)
    precision_note = ""
    if args.fp16:
        worst = _fp16_within_one_level(model, sets)
        if worst >= 1.0:
            raise SystemExit(f"fp16 weights move outputs by {worst:.2f} levels (>= 1/255): ship float32")
        tensors = safetensors.torch.load_file(str(out))
        half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        with safetensors.safe_open(str(out), framework="pt") as f:
            stored_meta = f.metadata()
        out.write_bytes(safetensors.torch.save(half, metadata=stored_meta))
        precision_note = f"float16 tensors (outputs within {worst:.2f}/255 of float32 on the first image of each set)"

    precision_cell = f" / {precision_note}" if precision_note else ""
    # The card's table is one `srkit compare` run, printed with the command that redoes it
    rows = [m for m in args.compare.split(",") if m] + [args.name]
    # A model trained for another degradation is scored on LR made that way (and says so).
    run_config = yaml.safe_load((args.run / "config.yaml").read_text())
    degradation = run_config.get("data", {}).get("degradation", "bicubic")
    spelled = degradation if isinstance(degradation, str) else json.dumps(degradation, separators=(",", ":"))
    deg_flag = "" if degradation == "bicubic" else f" --degradation {shlex.quote(spelled)}"
    compare_cmd = f"srkit compare {' '.join(rows)} --sets {args.sets} --figure-images 0{deg_flag}"
    degradation_text = (
        "HR modcropped to x4, LR by MATLAB-compatible bicubic (antialiased), rounded to 8 bits"
        if degradation == "bicubic"
        else f"`{degradation}` (data.degradation) before the MATLAB-compatible bicubic x4, rounded to 8 bits; "
        "the table below is scored on LR made the same way"
    )
    result = compare_models(
        parse_models(rows),
        sets,
        device=device,
        lpips_model=LPIPS("alex").to(device),
        lpips_net="alex",
        figure_images=0,
        degradation=degradation,  # "bicubic" is the protocol's LR
    )
    if result.failed:
        raise SystemExit(f"{len(result.failed)} image(s) could not be scored: {result.failed[:3]}")
    table = [markdown(result)]

    runs = [Path(r) for r in args.extra_runs.split(",") if r] + [args.run]
    sessions = []
    for r in runs:
        s = json.loads((r / "summary.json").read_text())
        # Runs trained before checkpoints kept the clock only know their last session's wall time.
        wall, span = (
            (s["wall_seconds_total"], "all sessions")
            if "wall_seconds_total" in s
            else (s["wall_seconds_this_session"], "last session")
        )
        sessions.append(
            f"- `{r.name}`: {s['step']} steps, {wall / 60:.0f} min wall time ({span}), "
            f"device {s['device']}, world size {s['world_size']}"
        )
        # The commands that trained it, as train.log recorded them (older runs: --command, for the last run).
        log = (r / "train.log").read_text() if (r / "train.log").is_file() else ""
        commands = [line.split(" INFO command: ", 1)[1] for line in log.splitlines() if " INFO command: " in line]
        if not commands and args.command and r == args.run:
            commands = [args.command]
        sessions += [f"  - `{c.replace(str(Path.home()), '~')}`" for c in commands]
    if args.then:
        sessions.append("- then:")
        sessions += [f"  - `{c.replace(str(Path.home()), '~')}`" for c in args.then]
    n_params = sum(p.numel() for p in model.parameters())
    here = f"{_cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    hardware = args.hardware or summary.get("hardware") or here
    config_text = _portable_config(args.run / "config.yaml", init_from=args.init_from)
    card = f"""# srkit model card: `{args.name}`

`srkit upscale --model {args.name} INPUT -o OUT` · `srkit evaluate --model {args.name}`

| | |
|---|---|
| architecture | `{meta["arch"]}` {meta["arch_kwargs"]}, x4, {n_params:,} parameters |
| weights | `src/srkit/weights/{args.name}.safetensors` (from run `{args.run.name}`, {step_text}) |
| training data | {args.data_text or TRAINING_DATA} |
| domain / chosen by | {args.domain} / {chosen_by}{step_cell}{precision_cell} |
| degradation | {degradation_text} |
| hardware | {hardware} |

## Training
{chr(10).join(sessions)}

Validation during training: {summary.get("best", {})}

{args.note}

## Metrics

Made by one command (`scripts/release_model.py` runs it in-process, float32):

```
{compare_cmd}
```

{chr(10).join(table)}

## Recipe (the run's resolved config)

```yaml
{config_text}```
"""
    (SHIPPED_DIR / f"{args.name}.md").write_text(card)
    record = {
        "name": args.name,
        "author": "srkit",
        "license": "MIT",
        "architecture": meta["arch"],
        "arch": meta["arch"],
        "arch_kwargs": json.loads(meta["arch_kwargs"]),
        "scale": 4,
        "input_channels": 3,
        "output_channels": 3,
        "parameters": n_params,
        "domain": args.domain,
        "chosen_by": chosen_by,
        "training_iterations": int(summary.get("step", 0)),
        "source_step": source_step,
        "dataset": args.data_text or TRAINING_DATA,
        "pretrained_from": args.pretrained_from,
        "precision": "float16" if args.fp16 else "float32",
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "card": f"{args.name}.md",
    }
    (SHIPPED_DIR / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(card)
    (SHIPPED_DIR / f"{args.name}.config.yaml").write_text(config_text)


if __name__ == "__main__":
    main()
