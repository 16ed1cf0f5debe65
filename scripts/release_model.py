"""Ship a trained generator: copy its weights into src/srkit/weights/NAME.safetensors and write a model card.

    python scripts/release_model.py --name srresnet --weights RUN/checkpoints/best_psnr.safetensors \
        --run RUN [--compare bicubic,srresnet] [--note "..."]

The card holds the data, the recipe (the run's resolved config), steps, wall time, hardware and a
metrics table on Set5 / Set14 / BSD100 measured here with srkit's evaluation protocol.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
from pathlib import Path

import torch
import yaml

from srkit.device import pick_device
from srkit.evaluate import BENCHMARK_SETS, resolve_set, score_folder, summarize
from srkit.metrics import LPIPS, PROTOCOL
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


def evaluate(model_name: str, lpips_model: LPIPS, device: torch.device) -> dict[str, dict[str, float | int | None]]:
    model = load_model(model_name, device=device)
    rows = []
    for set_name in BENCHMARK_SETS:
        name, folder = resolve_set(set_name)
        rows += list(score_folder(model, name, folder, scale=4, device=device, lpips_model=lpips_model))
    return summarize(rows)


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
    parser.add_argument(
        "--hardware",
        default=None,
        help="where the weights were trained, when not on this machine (default: this machine's CPU)",
    )
    args = parser.parse_args()

    device = pick_device("auto")
    meta = read_metadata(args.weights)
    model = load_model(str(args.weights))
    out = SHIPPED_DIR / f"{args.name}.safetensors"
    SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
    summary = json.loads((args.run / "summary.json").read_text())
    extra = {"name": args.name, "source_run": args.run.name, "source_step": meta.get("step", "?")}
    save_weights(model, out, arch=meta["arch"], arch_kwargs=json.loads(meta["arch_kwargs"]), meta=extra)

    lpips_model = LPIPS("alex").to(device)
    results = {m: evaluate(m, lpips_model, device) for m in [*args.compare.split(","), args.name] if m}
    table = [
        "| model | " + " | ".join(f"{s} PSNR / SSIM / LPIPS" for s in BENCHMARK_SETS) + " |",
        "|---|" + "---:|" * len(BENCHMARK_SETS),
    ]
    for m, res in results.items():
        cells = [
            f"{res[s]['psnr_mean']:.2f} / {res[s]['ssim_mean']:.4f} / {res[s]['lpips_mean']:.4f}"
            for s in BENCHMARK_SETS
        ]
        table.append(f"| {m} | " + " | ".join(cells) + " |")

    runs = [Path(r) for r in args.extra_runs.split(",") if r] + [args.run]
    sessions = []
    for r in runs:
        s = json.loads((r / "summary.json").read_text())
        sessions.append(
            f"- `{r.name}`: {s['step']} steps, {s['wall_seconds_this_session'] / 60:.0f} min wall time "
            f"(last session), device {s['device']}, world size {s['world_size']}"
        )
    n_params = sum(p.numel() for p in model.parameters())
    config_text = _portable_config(args.run / "config.yaml", init_from=args.init_from)
    card = f"""# srkit model card: `{args.name}`

`srkit upscale --model {args.name} INPUT -o OUT` · `srkit evaluate --model {args.name}`

| | |
|---|---|
| architecture | `{meta["arch"]}` {meta["arch_kwargs"]}, x4, {n_params:,} parameters |
| weights | `src/srkit/weights/{args.name}.safetensors` (from run `{args.run.name}`, step {meta.get("step", "?")}) |
| training data | {TRAINING_DATA} |
| degradation | HR modcropped to x4, LR by MATLAB-compatible bicubic (antialiased), rounded to 8 bits |
| hardware | {args.hardware or f"{_cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"} |

## Training
{chr(10).join(sessions)}

Validation during training: {summary.get("best", {})}

{args.note}

## Metrics (measured by `scripts/release_model.py` with srkit's evaluator)

Protocol: {PROTOCOL}.

{chr(10).join(table)}

## Recipe (the run's resolved config)

```yaml
{config_text}```
"""
    (SHIPPED_DIR / f"{args.name}.md").write_text(card)
    print(card)
    (SHIPPED_DIR / f"{args.name}.config.yaml").write_text(config_text)


if __name__ == "__main__":
    main()
