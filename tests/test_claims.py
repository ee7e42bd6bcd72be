"""bench/claims.py: every cell of the README's claims table computed from study files (small fixtures here)."""
import csv
import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import write_tiny_bank

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("claims", ROOT / "bench" / "claims.py")
claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(claims)

CFG = {"dataset": "fashion-mnist", "im": 100.0, "profile": "exp", "epochs": 8}
# test accuracy (%) per (loss, method) and seed
ACC = {("ce", "stage one"): [80.0, 81.0, 82.0], ("graloss", "stage one"): [81.0, 82.0, 83.0],
       ("ce", "crt"): [84.0, 84.5, 85.0], ("graloss", "crt"): [84.5, 84.5, 85.0],
       ("ce", "lws"): [83.0] * 3, ("graloss", "lws"): [83.0] * 3, ("ce", "tau_norm"): [80.0] * 3,
       ("graloss", "tau_norm"): [82.0] * 3, ("ce", "mislas"): [84.0] * 3, ("graloss", "mislas"): [84.6] * 3,
       ("ce", "posthoc_la"): [84.0] * 3, ("graloss", "posthoc_la"): [80.0] * 3,
       ("logit_adjust", "crt"): [85.0, 84.5, 84.6],
       ("ce", "glag+AD+KD"): [83.0] * 3, ("graloss", "glag"): [84.0, 84.5, 85.0],
       ("graloss", "glag+AD"): [85.0, 85.5, 85.5], ("graloss", "glag+AD+KD"): [84.5, 85.0, 85.2]}


def run_folder(path, test, val=0.5):
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"test": {"overall": test}, "val": {"overall": val}}))


def reproduction(root, seeds=3, acc=ACC):
    for (loss, method), values in acc.items():
        for seed, value in enumerate(values[:seeds]):
            folder = root / loss / f"seed{seed}"
            if method == "stage one":
                write_tiny_bank(folder / "bank.h5", loss=loss, config=dict(CFG, loss=loss, seed=seed),
                                dataset=CFG["dataset"],
                                metrics={"test": {"overall": value / 100}, "val": {"overall": 0.5}})
            else:
                run_folder(folder / "stage2" / method, value / 100)
    return root


def invoke(*sources):
    res = CliRunner().invoke(claims.main, [str(s) for s in sources])
    assert res.exit_code == 0, res.output
    return res.output


def test_a_reproduction_gives_every_cell_with_paired_differences(tmp_path):
    out = invoke(reproduction(tmp_path / "fashion-mnist-im100"))
    row = next(line for line in out.splitlines() if line.startswith("| Fashion"))
    label, one, two, three = [c.strip() for c in row.strip("|").split("|")]
    assert label == "Fashion-MNIST-LT IM 100, 8 epochs, 3 seeds"
    assert one == "84.7 vs 84.5 / 83.0 vs 83.0 / 82.0 vs 80.0 / 84.6 vs 84.0 / 84.9 vs 83.0"
    # stage one 82.0 -> 84.5 -> 85.3 -> 84.9; steps paired per seed: (+3, +2.5, +2), (+1, +1, +0.5), (-.5, -.5, -.3)
    assert two == "82.0 → 84.5 → 85.3 → 84.9 (+2.5 ± 0.5, +0.8 ± 0.3, \u22120.4 ± 0.1)"
    # the strongest baseline by test mean: cRT on the logit-adjust bank (84.7); crt graloss 84.7 ties at one decimal
    assert three == "**84.9** vs 84.7 (cRT, logit-adjust bank; cRT, GraLoss bank): +0.2 ± 0.6"   # -.5, +.5, +.6


def test_single_seed_cells_are_marked_and_missing_runs_say_so(tmp_path):
    acc = {k: v for k, v in ACC.items() if k != ("graloss", "glag")}
    out = invoke(reproduction(tmp_path / "tiny-imagenet-im100", seeds=1, acc=acc))
    row = next(line for line in out.splitlines() if line.startswith("| Fashion"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0].endswith("8 epochs, 1 seed")
    assert all(c.endswith("(1 seed)") for c in (cells[1], cells[3]))
    assert cells[2] == "81.0 → n/a → 85.0 → 84.5 (1 seed)"                # no fixed-beta run: said, not invented
    assert cells[3] == "84.5 vs **85.0** (cRT, logit-adjust bank): \u22120.5 (1 seed)"


def study(folder, rows, stage_one=72.09, loss="graloss"):
    write_tiny_bank(folder / "bank.h5", loss=loss, config=dict(CFG, epochs=200, loss=loss), dataset="cifar10-jpeg",
                    metrics={"test": {"overall": stage_one / 100}, "val": {"overall": 0.665}})
    (folder / "study").mkdir(parents=True)
    with open(folder / "study" / "table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["name", "seed", "val", "test"])
        w.writeheader()
        for name, (val, test) in rows.items():
            w.writerow({"name": name, "seed": 0, "val": val / 100, "test": test / 100})
    return folder / "study"


STUDY = {"stage1-tau": (72.5, 76.72), "posthoc_la": (73.0, 76.76), "crt views8": (65.0, 67.64),
         "crt views0": (65.5, 67.65), "lws views8": (65.5, 68.96), "mislas views8": (66.5, 71.41),
         "glag views8": (71.5, 75.42), "glag views0": (71.5, 75.17), "glag no-kd": (71.5, 74.44),
         "glag fixed 0.6": (68.5, 74.65), "glag fixed 0.8": (71.0, 75.39)}


def test_a_study_folder_gives_its_row_from_its_own_runs(tmp_path):
    out = invoke(study(tmp_path / "c10-200ep" / "graloss" / "seed0", STUDY))
    row = next(line for line in out.splitlines() if line.startswith("| CIFAR"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "CIFAR-10-LT IM 100, 200 epochs, GraLoss bank only, 1 bank, 1 seed of stage two"
    assert cells[1] == "—"                                                   # no CE bank in a study
    assert cells[2] == "72.1 → n/a → 74.4 → 75.4 (1 seed)"          # no fixed-0.6-no-KD run in this study
    assert cells[3] == "75.4 vs **76.8** (post-hoc LA, GraLoss bank): \u22121.3 (1 seed)"   # computed, not typed
    assert "graloss: AD 75.4 vs the fixed beta val picks 75.4: +0.0" in out   # val picks 0.8 (75.39)
    with_step = study(tmp_path / "again", dict(STUDY, **{"glag fixed 0.6 no-kd": (68.0, 74.1)}))
    assert "72.1 → 74.1 → 74.4 → 75.4 (1 seed)" in invoke(with_step)


@pytest.mark.parametrize("a, b, text", [({0: 0.5}, {0: 0.4}, "+10.0"),
                                        ({0: 0.4, 1: 0.5}, {0: 0.5, 1: 0.5}, "\u22125.0 ± 7.1"),
                                        ({0: 0.5}, {1: 0.5}, "n/a")])
def test_paired_differences_use_the_seeds_both_have(a, b, text):
    assert claims.paired(a, b) == text
