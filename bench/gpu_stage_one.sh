#!/usr/bin/env bash
# Stage one on one GPU (prepared for a lent H100): CIFAR-10-LT (IM 100, ResNet-32, the recipe's
# 200 epochs) with ce and graloss, run side by side on the same GPU (ResNet-32 at batch 128 leaves
# most of an H100 idle). Reports images/s and the final overall/many/medium/few.
#
# A lent machine gives one call of at most 10 minutes, so the script first times a short ce probe
# (alone on the GPU: that is the images/s figure of one run), then runs the full schedule only if it
# fits the time left, else as many epochs as fit, and says so in the summary. Either way both banks
# come back and are complete.
#
# Needs the JPEG archive inside the checkout (an ignored folder, so it travels with `carry`):
#   mkdir -p datasets && cp ../shared/data/cifar10-jpeg.tar.gz datasets/
# Run from the repository root:  bash bench/gpu_stage_one.sh
# Env: OUT (results folder, default $OUT or runs/gpu_stage_one), EPOCHS (default: the recipe's,
#      capped to what fits), TOTAL_S (wall budget of the whole script, default 540), DEVICE (cuda),
#      SHARE (each run's share of the single-run rate, default 0.5), PROBE_EPOCHS (default 3), IM (default 100), PYTHON (default python3), COMPILE=1 (torch.compile).
set -euo pipefail
PYTHON=${PYTHON:-python3}
OUT=${OUT:-runs/gpu_stage_one}
TOTAL_S=${TOTAL_S:-540}
IM=${IM:-100}
ARCHIVE=${ARCHIVE:-datasets/cifar10-jpeg.tar.gz}
deadline=$((SECONDS + TOTAL_S))
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
DATA=${DATA:-$WORK/data}
mkdir -p "$OUT" "$DATA"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} > "$WORK/machine.txt"
cat "$WORK/machine.txt"

test -f "$ARCHIVE" || { echo "missing $ARCHIVE (copy ../shared/data/cifar10-jpeg.tar.gz there)" >&2; exit 2; }
tar xzf "$ARCHIVE" -C "$DATA"
# decode the 60k JPEGs once (writes the pixel cache) so the runs below do not each decode
"$PYTHON" -c "import sys; from glag.data.datasets import load_dataset; load_dataset('cifar10-jpeg', sys.argv[1], workers=8)" "$DATA"

common=(--dataset cifar10-jpeg --data-root "$DATA" --im "$IM" --device "${DEVICE:-cuda}" --threads 4 --no-resume)
[[ "${COMPILE:-0}" == 1 ]] && common+=(--compile)

# Probe: a short ce run alone on the GPU (its last epoch line is the single-run images/s).
probe_start=$SECONDS
"$PYTHON" -m glag.extract.cli "${common[@]}" --loss ce --epochs "${PROBE_EPOCHS:-3}" --out "$WORK/probe/bank.h5" \
    > /dev/null 2> "$OUT/probe.log"
probe_s=$((SECONDS - probe_start))
n_train=$(grep -oE '\(([0-9]+) train images' "$OUT/probe.log" | grep -oE '[0-9]+' | head -1)
# The logged img/s is cumulative, so the first epoch's warm-up (cuDNN autotuning) drags it down;
# the steady rate is that of the last probe epoch: t_k = (k + 1) n / ips_k.
read -r ips < <(grep -E '^epoch [0-9]+/' "$OUT/probe.log" | tail -2 | sed -E 's/^epoch ([0-9]+)\/.* ([0-9,]+) img\/s.*/\1 \2/' \
    | tr -d , | awk -v n="$n_train" '{t[NR] = ($1 + 1) * n / $2} END {print int(NR > 1 ? n / (t[2] - t[1]) : n / t[1])}')
recipe_epochs=${EPOCHS:-200}
# Two runs share the GPU, each at SHARE of the single-run rate (0.5 is the worst case; a first H100
# run measured ~0.9: ResNet-32 at batch 128 is bound by kernel launches, not by the GPU). The
# probe's fixed costs (start, cache load, dump) plus 20 s are kept aside.
left=$((deadline - SECONDS - probe_s - 20))
fit=$(awk -v l="$left" -v r="$ips" -v s="${SHARE:-0.5}" -v n="$n_train" 'BEGIN {print int(l * r * s / n)}')
epochs=$(( fit < recipe_epochs ? fit : recipe_epochs ))
(( epochs >= 1 )) || { echo "only $left s left after the probe: no epoch fits" >&2; exit 3; }
echo "probe: $ips img/s single run, $n_train train images, ${probe_s}s; running $epochs of $recipe_epochs epochs"

pids=()
for loss in ce graloss; do
  timeout $((deadline - SECONDS)) "$PYTHON" -m glag.extract.cli "${common[@]}" --loss "$loss" --epochs "$epochs" \
      --out "$OUT/$loss/bank.h5" > "$WORK/$loss.table.md" 2> "$OUT/$loss.log" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done

{ echo "# CIFAR-10-LT IM $IM, ResNet-32, stage one"
  echo
  echo '```'; cat "$WORK/machine.txt"; echo '```'
  echo
  echo "- probe (ce alone, ${PROBE_EPOCHS:-3} epochs): $ips img/s in its last epoch; $n_train train images"
  echo "- schedule: $epochs of the recipe's $recipe_epochs epochs$( ((epochs < recipe_epochs)) && echo ' (REDUCED to fit the time limit)')"
  echo "- ce and graloss ran side by side on the GPU; the images/s below is per run"
  echo
  for loss in ce graloss; do
    echo "## $loss"
    echo
    grep -E '^epoch [0-9]+/' "$OUT/$loss.log" | tail -1 || echo "(no epoch finished)"
    echo
    cat "$WORK/$loss.table.md"
    echo
  done
} | tee "$OUT/summary.md"
rm -f "$OUT"/*/bank.ckpt.pt   # checkpoints are not needed off the machine; the banks are
exit $status
