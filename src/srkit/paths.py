"""Where srkit finds data and pretrained weights: one setting, one environment variable, one default."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SRKIT_DATA"

# The project's checkout when installed in editable mode (src/srkit/paths.py -> repo root).
_REPO_ROOT = Path(__file__).resolve().parents[2]


class MissingDataError(FileNotFoundError):
    """A data folder or weights file srkit needs is not there; the message says how to get it."""


def candidate_data_roots(explicit: str | Path | None = None) -> list[Path]:
    """The folders searched for data, in order: explicit setting, $SRKIT_DATA, ../shared/data."""
    roots: list[Path] = []
    if explicit is not None:
        return [Path(explicit).expanduser()]
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(env).expanduser()]
    roots.append(Path.cwd().parent / "shared" / "data")
    roots.append(_REPO_ROOT.parent / "shared" / "data")
    # The same folder reached two ways counts once.
    unique: list[Path] = []
    for r in roots:
        if r.resolve() not in [u.resolve() for u in unique]:
            unique.append(r)
    return unique


def data_root(explicit: str | Path | None = None) -> Path:
    """The data folder, or MissingDataError saying where srkit looked and how to point it elsewhere."""
    roots = candidate_data_roots(explicit)
    for r in roots:
        if r.is_dir():
            return r
    looked = ", ".join(str(r) for r in roots)
    raise MissingDataError(
        f"srkit data folder not found (looked in: {looked}). Set {ENV_VAR}=/path/to/data or pass "
        "--data-dir. The folder holds benchmarks/<Set5|Set14|BSD100>/*.png and "
        "weights/imagenet_backbones/*.safetensors; `srkit data download` fetches public sets."
    )


def data_file(relative: str | Path, *, what: str, how: str, explicit: str | Path | None = None) -> Path:
    """A file under the data folder, or MissingDataError naming it, saying what it is and how to get it."""
    try:
        root = data_root(explicit)
    except MissingDataError as err:
        raise MissingDataError(f"{what} needed ({relative}); {err} {how}") from None
    path = root / relative
    if not path.exists():
        raise MissingDataError(f"{what} not found: expected {path}. {how}")
    return path
