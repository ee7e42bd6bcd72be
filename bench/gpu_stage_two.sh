#!/usr/bin/env bash
# Stage two at iNaturalist 2018's and ImageNet-LT's shapes on one GPU (issue 19), for a lent H100/H200.
# bench/bench_scale.py writes a bank of each shape on the machine (random class-clustered rows, the real
# counts and width 2048, the stage-one logits computed on the GPU), then times glag-generate and
# glag-classify run (GLAG with its defaults, post-hoc LA, cRT, tau-norm) with every tensor on the GPU,
# 40 stage-two epochs each, and writes $OUT/scale.md and scale.json (wall time, peak host RSS, store size).
# iNat first: its GLAG run is the target (<= 5 minutes). A call is at most 10 minutes, so steps that would
# start after TOTAL_S seconds are skipped and say so in the table.
#
# Run from the repository root:  bash bench/gpu_stage_two.sh      (no data needed; ~26 GB of disk)
# DRY_RUN=1 runs the same steps on the CPU in seconds (a CIFAR-100-LT-shaped bank, 1 epoch); CI runs it.
# Env: OUT (default $OUT or runs/gpu_stage_two), WORK (banks and runs; default a temp folder, removed),
#      TOTAL_S (540), SHAPES (inat2018,imagenet-lt), EPOCHS (40), DEVICE (cuda), PYTHON (python3).
set -euo pipefail
PYTHON=${PYTHON:-python3}
OUT=${OUT:-runs/gpu_stage_two}
if [[ -z "${WORK:-}" ]]; then WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT; fi
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$OUT/machine.txt"

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  "$PYTHON" bench/bench_scale.py --dry-run --device cpu --work "$WORK" --out "$OUT"
else
  E=${EPOCHS:-40}
  "$PYTHON" bench/bench_scale.py --shapes "${SHAPES:-inat2018,imagenet-lt}" --device "${DEVICE:-cuda}" --views 0 \
    --max-epochs "cifar100-lt=$E,imagenet-lt=$E,inat2018=$E" --budget "${TOTAL_S:-540}" --work "$WORK" --out "$OUT"
fi
cat "$OUT/scale.md"
