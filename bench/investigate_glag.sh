#!/usr/bin/env bash
# Why GLAG does (not) beat the baselines on one pair of banks: the paper's ambiguous choices one at a
# time (tail rule, head-class balancing, Tukey space, initial beta, AD, KD), each a glag-generate
# store + glag-classify runs over 3 stage-two seeds, next to cRT and tau-norm, all from the same
# banks (nothing is retrained, so the spread is stage two's alone). docs/reproduce.md reports
# what it found on the CIFAR-10-LT GPU banks.
#
#   bash bench/investigate_glag.sh EXP     # EXP holds ce/seed0/bank.h5 and graloss/seed0/bank.h5
# Writes EXP/investigate/{table.md,table.csv} (every run) and summary.md (mean ± std over seeds).
# Env: BIN (default .venv/bin), JOBS (default 2), SEEDS (default "0 1 2").
set -euo pipefail
EXP=${1:?usage: investigate_glag.sh EXPERIMENT_DIR}
BIN=${BIN:-.venv/bin}
WORK="$EXP/investigate"
mkdir -p "$WORK"

# store name : glag-generate options beyond the defaults (tail max-count 100, balance-head, tukey 0.5, beta 0.6)
stores=("default:"
        "tail-fraction-0.5:--tail fraction --tail-fraction 0.5"
        "tail-max-1000:--tail max-count --tail-max-count 1000"
        "no-balance-head:--no-balance-head"
        "no-tukey:--tukey 1")
# run name : store : glag-classify options (JSON) beyond the glag preset (AD + KD)
variants=("crt::{\"method\": \"crt\"}"
          "tau_norm::{\"method\": \"tau_norm\"}"
          "glag:default:{}"
          "glag-no-kd:default:{\"kd\": false}"
          "glag-no-ad-no-kd:default:{\"ad\": false, \"kd\": false}"
          "beta-0.3:default:{\"beta_init\": 0.3}"
          "beta-0.9:default:{\"beta_init\": 0.9}"
          "beta-0.9-no-kd:default:{\"beta_init\": 0.9, \"kd\": false}"
          "tail-fraction-0.5:tail-fraction-0.5:{}"
          "tail-fraction-0.5-no-kd:tail-fraction-0.5:{\"kd\": false}"
          "tail-max-1000:tail-max-1000:{}"
          "no-balance-head:no-balance-head:{}"
          "no-tukey:no-tukey:{}")
runs=()
for loss in ce graloss; do
  bank="$EXP/$loss/seed0/bank.h5"
  for entry in "${stores[@]}"; do
    name=${entry%%:*}; opts=${entry#*:}
    # shellcheck disable=SC2086
    "$BIN/glag-generate" --bank "$bank" --out "$WORK/$loss-$name.h5" --dtype float16 --epochs 40 $opts >&2
  done
  for entry in "${variants[@]}"; do
    name=${entry%%:*}; rest=${entry#*:}; store=${rest%%:*}; extra=${rest#*:}
    for seed in ${SEEDS:-0 1 2}; do
      where="\"bank\": \"$bank\", \"run\": \"$name.s$seed\", \"seed\": $seed"
      [[ -n "$store" ]] && where+=", \"store\": \"$WORK/$loss-$store.h5\""
      runs+=("$(python3 -c 'import json, sys; print(json.dumps({**json.loads("{" + sys.argv[1] + "}"), **json.loads(sys.argv[2])}))' "$where" "$extra")")
    done
  done
done
( IFS=,; echo "{\"base\": {\"method\": \"glag\"}, \"runs\": [${runs[*]}]}" ) > "$WORK/grid.json"
"$BIN/glag-classify" sweep --grid "$WORK/grid.json" --jobs "${JOBS:-2}" --out "$WORK" || true

# mean ± sample std over the stage-two seeds, per bank and variant
"$BIN/python" - "$WORK" <<'EOF'
import csv, sys
from collections import defaultdict
from pathlib import Path
import numpy as np
work = Path(sys.argv[1])
rows = defaultdict(list)
for r in csv.DictReader(open(work / "table.csv")):
    if r["run"] != "stage one":
        rows[(r["bank_loss"], r["run"].rsplit(".s", 1)[0])].append(r)
cols = ["test_overall", "test_many", "test_medium", "test_few"]
fmt = lambda v: "-" if not v else (f"{100 * np.mean(v):.1f} ± {100 * np.std(v, ddof=1):.1f}" if len(v) > 1 else f"{100 * v[0]:.1f}")
lines = ["| bank | variant | overall | many | medium | few | seeds |", "|---|---|---|---|---|---|---|"]
for (bank, name), rs in rows.items():
    vals = [fmt([float(r[c]) for r in rs if r[c]]) for c in cols]
    lines.append(f"| {bank} | {name} | " + " | ".join(vals) + f" | {len(rs)} |")
(work / "summary.md").write_text("Test accuracy (%), mean ± sample std over stage-two seeds (one bank per loss)\n\n"
                                 + "\n".join(lines) + "\n")
print((work / "summary.md").read_text())
EOF
