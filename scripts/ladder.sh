#!/usr/bin/env bash
# The image-refinement report's ladder, trained on the same data under one budget rule: every rung gets
# STEPS optimizer steps at batch 16 of 96x96 crops (the same number of training images seen), validated on a
# held-out 8% of the training images (never a benchmark set). Rungs run one after another; run it again (after a
# stop, or in a new session) and each rung resumes exactly where it stopped, finished rungs are skipped.
#
#   nohup scripts/ladder.sh > ~/srkit-runs/ladder.log 2>&1 &
#   OUT=~/srkit-runs STEPS=3000 RUNGS="autoencoder vanilla_gan srgan6" scripts/ladder.sh
#
# Rungs: autoencoder (MSE), vanilla_gan (adversarial loss only, from scratch), srgan6 (SRResNet-6: 1/3 of the
# budget as its L1 stage 1, then SRGAN's losses), srgan16 (the same with SRResNet-16; the shipped `srgan`, with
# 41,000 stage-1 steps behind it, is a row of its own), esrgan (the largest RRDBNet that fits the budget on a CPU:
# 32 wide, 6 blocks, growth 32 as spandrel reads ESRGAN .pth files; 1/3 L1 stage, then ESRGAN's loss).
set -euo pipefail
OUT="${OUT:-$HOME/srkit-runs}"
STEPS="${STEPS:-3000}"
# esrgan runs first (the rung the table hinges on); srgan16 last: the shipped `srgan` is also a row.
RUNGS="${RUNGS:-esrgan autoencoder vanilla_gan srgan6 srgan16}"
SRKIT="${SRKIT:-srkit}"
COMMON=(--out_dir="$OUT" --data.val=split "--data.split=[0.92,0.08,0.0]" --data.batch_size=16 --data.gt_size=96
        --train.val_every=250 --train.save_every=250 --train.keep_last=2 --train.channels_last=true)
STAGE1=$((STEPS / 3))
STAGE2=$((STEPS - STAGE1))
OFFLINE_VGG=(--loss.perceptual_arch=vgg16)  # no VGG19 weights offline; relu5_3 / conv5_3 stand in

# A run is done when its summary reaches the config's train.steps (early stopping counts as done too).
finished() {
  python - "$1" <<'PY' 2>/dev/null
import json, sys, yaml
run = sys.argv[1]
summary = json.load(open(f"{run}/summary.json"))
steps = yaml.safe_load(open(f"{run}/config.yaml"))["train"]["steps"]
sys.exit(0 if summary["step"] >= steps or summary["stop_reason"].startswith("early") else 1)
PY
}

run() {  # run NAME CONFIG ARGS...: start, resume, or skip when finished
  local name="$1" config="$2"; shift 2
  if [ -f "$OUT/$name/checkpoints/latest.pt" ]; then
    if finished "$OUT/$name"; then echo "== $name: finished, skipped"; return; fi
    echo "== $name: resuming"; "$SRKIT" train --resume "$OUT/$name"
  else
    echo "== $name: starting"; "$SRKIT" train "$config" --name="$name" "${COMMON[@]}" "$@"
  fi
}

for rung in $RUNGS; do
  case "$rung" in
    autoencoder) run ladder_autoencoder configs/autoencoder_x4.yaml --train.steps="$STEPS" ;;
    vanilla_gan) run ladder_vanilla_gan configs/vanilla_gan_x4.yaml --train.steps="$STEPS" ;;
    srgan6)
      run ladder_srresnet6 configs/srresnet_x4.yaml "--model.args={width: 64, num_blocks: 6}" --train.steps="$STAGE1"
      run ladder_srgan6 configs/srgan_small_x4.yaml "${OFFLINE_VGG[@]}" --loss.perceptual_layer=relu5_3 \
        --model.init_from="$OUT/ladder_srresnet6/checkpoints/best_psnr.safetensors" --train.steps="$STAGE2" ;;
    srgan16)
      run ladder_srresnet16 configs/srresnet_x4.yaml --train.steps="$STAGE1"
      run ladder_srgan16 configs/srgan_x4.yaml "${OFFLINE_VGG[@]}" --loss.perceptual_layer=relu5_3 \
        --model.init_from="$OUT/ladder_srresnet16/checkpoints/best_psnr.safetensors" --train.steps="$STAGE2" ;;
    esrgan)
      RRDB="--model.args={width: 32, num_blocks: 6, growth: 32}"
      run ladder_rrdb_psnr configs/rrdb_psnr_x4.yaml "$RRDB" --data.gt_size=128 --train.steps="$STAGE1" \
        --optim.milestones=[] --train.ema_decay=0.999
      run ladder_esrgan configs/esrgan_x4.yaml "$RRDB" "${OFFLINE_VGG[@]}" --loss.perceptual_layer=conv5_3 \
        --data.gt_size=128 "--discriminator.args={width: 32}" --optim.milestones=[] --train.steps="$STAGE2" \
        --model.init_from="$OUT/ladder_rrdb_psnr/checkpoints/best_psnr.safetensors" --train.ema_decay=0.999 ;;
    *) echo "unknown rung $rung (autoencoder vanilla_gan srgan6 srgan16 esrgan)" >&2; exit 2 ;;
  esac
done
echo "== ladder done: $RUNGS"
