#!/usr/bin/env bash
# The CIFAR-10-LT IM 100 stage-one matrix on one GPU (prepared for a lent H100/H200): 5 losses (ce,
# graloss, logit_adjust, balanced_softmax, ldam = LDAM-DRW) x 3 seeds, ResNet-32, the recipe's 200
# epochs, every run with --views 8, trained as ONE grouped network by glag-extract-group
# (docs/stage-one.md, "Many runs at once on one GPU"). Every bank comes back under $OUT/runs/.
#
# A lent machine gives one call of at most 10 minutes, so the script first measures (bench_group.py:
# one grouped step vs separate steps; then a PROBE_EPOCHS-epoch probe of the whole group), then runs
# the full schedule only if it fits the time left, else as many epochs as fit, and says so
# (REDUCED) in $OUT/summary.md. Either way every bank comes back complete.
#
# Needs the JPEG archive inside the checkout (an ignored folder, so it travels with `carry`):
#   mkdir -p datasets && cp ../shared/data/cifar10-jpeg.tar.gz datasets/
# Run from the repository root:  bash bench/gpu_matrix.sh
# DRY_RUN=1 runs the same steps on the CPU in seconds (digits, tiny epochs, no archive); CI runs it.
# Env: OUT (default $OUT or runs/gpu_matrix), EPOCHS (default: the recipe's 200, capped to what fits),
#      TOTAL_S (wall budget of the whole script, default 540), LOSSES, SEEDS (comma-separated), VIEWS (8),
#      PROBE_EPOCHS (2), IM (100; DRY_RUN 10), DEVICE (cuda), PYTHON (python3), COMPILE=1 (torch.compile; COMPILE_MODE, default reduce-overhead = CUDA graphs),
#      BENCH=0 (skip bench_group.py), KEEP_CKPT=1 (keep the checkpoints), MAX_GROUP (glag-extract-group
#      --max-group), VIEW_FACTOR (train rows / all un-augmented rows, 0.55 for CIFAR-10-LT IM 100).
set -euo pipefail
PYTHON=${PYTHON:-python3}
OUT=${OUT:-runs/gpu_matrix}
TOTAL_S=${TOTAL_S:-540}
LOSSES=${LOSSES:-ce,graloss,logit_adjust,balanced_softmax,ldam}
SEEDS=${SEEDS:-0,1,2}
VIEWS=${VIEWS:-8}
ARCHIVE=${ARCHIVE:-datasets/cifar10-jpeg.tar.gz}
deadline=$((SECONDS + TOTAL_S))
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
DATA=${DATA:-$WORK/data}
mkdir -p "$OUT" "$DATA"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  # the same steps on the CPU in seconds: the embedded digits set, 2 epochs, a tiny bench
  dataset=digits; recipe_epochs=${EPOCHS:-2}; probe_epochs=${PROBE_EPOCHS:-1}; IM=${IM:-10}
  common=(--dataset digits --im "$IM" --device cpu --threads 1 --no-resume)
  bench=(--device cpu --threads 1 --backbone resnet_small --batch-size 8 --groups 1,2 --steps 1 --rounds 1)
else
  dataset=cifar10-jpeg; recipe_epochs=${EPOCHS:-200}; probe_epochs=${PROBE_EPOCHS:-2}; IM=${IM:-100}
  common=(--dataset cifar10-jpeg --data-root "$DATA" --im "$IM" --device "${DEVICE:-cuda}" --threads 4 --no-resume)
  bench=(--device "${DEVICE:-cuda}" --batch-size 128 --groups 1,5,15 --steps 10 --rounds 2)
fi
[[ "${COMPILE:-0}" == 1 ]] && common+=(--compile --compile-mode "${COMPILE_MODE:-reduce-overhead}")
[[ -n "${MAX_GROUP:-}" ]] && common+=(--max-group "$MAX_GROUP")

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} > "$WORK/machine.txt"
cat "$WORK/machine.txt"

if [[ "$dataset" == cifar10-jpeg ]]; then
  test -f "$ARCHIVE" || { echo "missing $ARCHIVE (copy ../shared/data/cifar10-jpeg.tar.gz there)" >&2; exit 2; }
  tar xzf "$ARCHIVE" -C "$DATA"
  # decode the 60k JPEGs once (writes the pixel cache) so the probe and the matrix do not each decode
  "$PYTHON" -c "import sys; from glag.data.datasets import load_dataset; load_dataset('cifar10-jpeg', sys.argv[1], workers=8)" "$DATA"
fi

if [[ "${BENCH:-1}" == 1 ]]; then
  "$PYTHON" bench/bench_group.py "${bench[@]}" --out "$OUT/bench" > /dev/null 2> "$OUT/bench.log" || echo "bench_group failed (see $OUT/bench.log)"
fi

# Probe: the whole group for a few epochs, no views. Its last epoch is the group's steady rate (the
# first carries cuDNN's autotuning); what is not training (start-up, data, dumps) is measured too.
probe_start=$SECONDS
# A group too large for the device fails here with the size that fits: rerun with MAX_GROUP=<that size>.
"$PYTHON" -m glag.extract.group_cli "${common[@]}" --losses "$LOSSES" --seeds "$SEEDS" --epochs "$probe_epochs" \
    --views 0 --runs-root "$WORK/probe" > /dev/null 2> "$OUT/probe.log" \
  || { echo "probe failed: $(tail -1 "$OUT/probe.log")" >&2; exit 3; }
probe_s=$((SECONDS - probe_start))
n_train=$(grep -oE '\(([0-9]+) train images' "$OUT/probe.log" | grep -oE '[0-9]+' | head -1)
read -r epoch_s train_s < <(grep -E '^group epoch ' "$OUT/probe.log" | sed -E 's/.* in ([0-9.]+)s,.*/\1/' \
    | awk '{s += $1; last = $1} END {print last, s}')
dump_s=$(grep -E '^dumped [0-9]+ banks in' "$OUT/probe.log" | sed -E 's/.* in ([0-9.]+)s/\1/' | awk '{s += $1} END {print s + 0}')
# groups trained one after another (MAX_GROUP): an epoch of the matrix is one of each, warm-up included
[[ -n "${MAX_GROUP:-}" ]] && epoch_s=$(awk -v t="$train_s" -v e="$probe_epochs" 'BEGIN {print t / e}')
group_ips=$(grep -E '^group epoch ' "$OUT/probe.log" | tail -1 | sed -E 's/.*, ([0-9,]+) img\/s together/\1/' | tr -d ,)
# the views multiply the dump: each view is the train split again (VIEW_FACTOR of the un-augmented rows)
reserve=$(awk -v p="$probe_s" -v t="$train_s" -v d="$dump_s" -v v="$VIEWS" -v f="${VIEW_FACTOR:-0.55}" \
    'BEGIN {start = p - t - d; if (start < 0) start = 0; print int(start + d * (1 + v * f) + 20)}')
left=$((deadline - SECONDS - reserve))
fit=$(awk -v l="$left" -v e="$epoch_s" 'BEGIN {print (e > 0 ? int(l / e) : 0)}')
epochs=$(( fit < recipe_epochs ? fit : recipe_epochs ))
(( epochs >= 1 )) || { echo "only $left s left after the probe and the dump reserve: no epoch fits" >&2; exit 3; }
echo "probe: $group_ips img/s for the group ($epoch_s s per epoch, $n_train train images per run), dumps ${dump_s}s, \
${probe_s}s in all; running $epochs of $recipe_epochs epochs"

status=0
timeout $((deadline - SECONDS)) "$PYTHON" -m glag.extract.group_cli "${common[@]}" --losses "$LOSSES" \
    --seeds "$SEEDS" --epochs "$epochs" --views "$VIEWS" --runs-root "$OUT/runs" \
    > "$WORK/tables.md" 2> "$OUT/matrix.log" || status=$?

banks=$(find "$OUT/runs" -name bank.h5 2>/dev/null | wc -l)
{ echo "# $dataset stage-one matrix (IM $IM): losses $LOSSES x seeds $SEEDS, grouped on one device"
  echo
  echo '```'; cat "$WORK/machine.txt"; echo '```'
  echo
  [[ -f "$OUT/bench/group.md" ]] && { sed 1d "$OUT/bench/group.md"; echo; }
  echo "- probe ($probe_epochs epochs, the whole group): $group_ips img/s together in its last epoch; $n_train train images per run"
  echo "- schedule: $epochs of the recipe's $recipe_epochs epochs$( ((epochs < recipe_epochs)) && echo ' (REDUCED to fit the time limit)'), --views $VIEWS"
  echo "- banks written: $banks (exit status $status)"
  echo "- the group's last epoch: $(grep -E '^group epoch ' "$OUT/matrix.log" | tail -1 || echo none)"
  echo "- $(grep -E '^dumped ' "$OUT/matrix.log" | tail -1 || echo 'no dump finished')"
  echo
  echo "## Last epoch of each run"
  echo
  echo '```'; grep -E "^epoch $epochs/$epochs " "$OUT/matrix.log" || echo "(no run finished)"; echo '```'
  echo
  echo "## Stage-one accuracy per bank"
  echo
  cat "$WORK/tables.md"
} | tee "$OUT/summary.md"
[[ "${KEEP_CKPT:-0}" == 1 ]] || find "$OUT/runs" -name 'bank.ckpt.pt' -delete 2>/dev/null || true
exit $status
