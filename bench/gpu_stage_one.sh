#!/usr/bin/env bash
# Stage one on one GPU (prepared for a lent H100): full-schedule CIFAR-10-LT (IM 100, ResNet-32,
# the recipe's 200 epochs) with ce and graloss, run side by side on the same GPU (ResNet-32 at
# batch 128 leaves most of an H100 idle). Reports images/s and the final overall/many/medium/few.
#
# Needs the JPEG archive inside the checkout (an ignored folder, so it travels with `carry`):
#   mkdir -p datasets && cp ../shared/data/cifar10-jpeg.tar.gz datasets/
# Run from the repository root:  bash bench/gpu_stage_one.sh
# Env: OUT (results folder, default $OUT or runs/gpu_stage_one), EPOCHS (default: recipe), DEVICE (cuda),
#      LIMIT_S (per-run time limit, default 540), PYTHON (default python), COMPILE=1 (torch.compile).
set -euo pipefail
PYTHON=${PYTHON:-python}
OUT=${OUT:-runs/gpu_stage_one}
LIMIT_S=${LIMIT_S:-540}
ARCHIVE=${ARCHIVE:-datasets/cifar10-jpeg.tar.gz}
if [[ -z "${DATA:-}" ]]; then DATA=$(mktemp -d); trap 'rm -rf "$DATA"' EXIT; fi
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$OUT/machine.txt"

test -f "$ARCHIVE" || { echo "missing $ARCHIVE (copy ../shared/data/cifar10-jpeg.tar.gz there)" >&2; exit 2; }
tar xzf "$ARCHIVE" -C "$DATA"
# decode the 60k JPEGs once (writes the pixel cache) so the two runs below do not both decode
"$PYTHON" -c "import sys; from data.datasets import load_dataset; load_dataset('cifar10-jpeg', sys.argv[1], workers=8)" "$DATA"

extra=()
[[ -n "${EPOCHS:-}" ]] && extra+=(--epochs "$EPOCHS")
[[ "${COMPILE:-0}" == 1 ]] && extra+=(--compile)
pids=()
for loss in ce graloss; do
  timeout "$LIMIT_S" "$PYTHON" -m extract.cli --dataset cifar10-jpeg --data-root "$DATA" --im 100 \
      --loss "$loss" --device "${DEVICE:-cuda}" --threads 4 --no-resume --out "$OUT/$loss/bank.h5" "${extra[@]}" \
      > "$OUT/$loss.table.md" 2> "$OUT/$loss.log" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done

{ echo "# CIFAR-10-LT IM 100, ResNet-32, stage one on $(head -1 "$OUT/machine.txt")"
  echo
  for loss in ce graloss; do
    echo "## $loss"
    grep -E '^epoch [0-9]+/' "$OUT/$loss.log" | tail -1 || echo "(no epoch finished)"
    cat "$OUT/$loss.table.md"
    echo
  done
  echo "(both runs shared the GPU; images/s above is per run)"
} | tee "$OUT/summary.md"
rm -f "$OUT"/*/bank.ckpt.pt   # checkpoints are not needed off the machine; the banks are
exit $status
