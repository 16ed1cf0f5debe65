#!/usr/bin/env bash
# A separate virtual environment with the peers srkit is benchmarked against (Real-ESRGAN, BasicSR, spandrel),
# never srkit's own dependencies: benchmarks/peer_speed.py runs its Python as a subprocess.
#   scripts/peer_venv.sh [VENV]    (default .venv-peers; torch pinned as in the Makefile)
set -euo pipefail
VENV="${1:-.venv-peers}"
TORCH="${TORCH:-torch==2.14.1 torchvision==0.29.1}"
PYTHON="${PYTHON:-python3}"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install --quiet $TORCH
"$VENV/bin/python" -m pip install --quiet basicsr==1.4.2 realesrgan==0.3.0 "numpy<3" opencv-python-headless \
  lpips==0.1.4 safetensors  # lpips + safetensors: benchmarks/independent_check.py
# basicsr 1.4.2 imports torchvision.transforms.functional_tensor, which torchvision 0.17+ removed: a one-line
# module re-exporting torchvision.transforms.functional restores it (in the peer venv only).
TV_DIR="$("$VENV/bin/python" -c 'import os, torchvision.transforms as t; print(os.path.dirname(t.__file__))')"
test -f "$TV_DIR/functional_tensor.py" || echo "from torchvision.transforms.functional import *  # noqa" > "$TV_DIR/functional_tensor.py"
"$VENV/bin/python" -c "from realesrgan import RealESRGANer; from basicsr.archs.rrdbnet_arch import RRDBNet; import lpips; print('peers ok')"
