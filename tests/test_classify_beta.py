"""The adaptive confidence score beta (AD): its rules, and that it finds the val-optimal beta."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from glag.classify.rows import Rows
from glag.classify.beta import AdaptiveBeta, val_loss_slope
from glag.classify.config import defaults
from glag.classify.options import loss_option_specs
from glag.classify.run import run_stage2
from glag.generate.cli import main as generate
from tests.known_beta import TAILS, write_known_beta_bank


class Scripted(torch.nn.Module):
    """A 'head' that predicts a given class for each val row (one script per call)."""

    def __init__(self, scripts):
        super().__init__()
        self.scripts = iter(scripts)

    def forward(self, x):
        pred = torch.as_tensor(next(self.scripts))
        return torch.nn.functional.one_hot(pred, 5).float()


def val_rows(labels):
    y = torch.as_tensor(labels)
    return Rows(torch.zeros(len(y), 2), y)


def test_sign_rule_goes_up_down_stays_and_clips():
    val = val_rows([2, 3, 4])
    # per epoch, the predictions of the 3 val rows (one per tail class): 1 = right, 0 = wrong
    right = [[1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]]
    head = Scripted([[c if ok else 0 for c, ok in zip((2, 3, 4), r)] for r in right])
    beta = AdaptiveBeta(5, tail_classes=[2, 3, 4], init=0.6, step=0.25, rule="sign")
    assert beta.probes == 0 and len(beta.lane_values()) == 1
    beta.update([head], val)                                  # first epoch: only recorded
    assert beta.values.tolist() == [0.6] * 5
    beta.update([head], val)                                  # class 3 fell, 2 and 4 equal
    assert beta.values.tolist() == pytest.approx([0.6, 0.6, 0.6, 0.35, 0.6])
    beta.update([head], val)
    beta.update([head], val)
    assert beta.values[3] == pytest.approx(0.35)              # no change since: stays
    assert len(beta.trajectory) == 5 and beta.trajectory[0] == [0.6] * 3


def test_fixed_beta_records_but_never_moves_and_trains_no_probe():
    beta = AdaptiveBeta(3, [1, 2], init=0.4, adaptive=False)
    assert beta.probes == 0
    for _ in range(3):
        beta.update([None], val_rows([0, 1, 2]))
    assert np.all(np.asarray(beta.trajectory) == 0.4) and len(beta.trajectory) == 4


def test_paired_probes_sit_at_beta_plus_and_minus_delta_clipped():
    beta = AdaptiveBeta(4, [2, 3], init=0.95, delta=0.1, rule="paired")
    main, hi, lo = beta.lane_values()
    assert beta.probes == 2
    assert main.tolist() == pytest.approx([0.95] * 4)
    assert hi.tolist() == pytest.approx([0.95, 0.95, 1.0, 1.0])   # clipped at beta_max; heads keep init
    assert lo.tolist() == pytest.approx([0.95, 0.95, 0.85, 0.85])


def linear(W):
    head = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    head.weight.data = torch.as_tensor(W, dtype=torch.float32)
    return head


def test_slope_columns_add_up_to_the_exact_loss_difference():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 4, generator=g), torch.randint(0, 5, (60,), generator=g)
    W = torch.randn(5, 4, generator=g)
    hi, lo = linear(W + 0.05 * torch.randn(5, 4, generator=g)), linear(W)
    val = Rows(x, y)
    tail = np.array([3, 4])
    slopes = val_loss_slope(hi, lo, val, tail, np.full(2, 0.2), "ce")
    counts = torch.bincount(y, minlength=5).double()
    w = 1 / (counts[y] * 5)
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        exact = float((w * (ce(hi(x).double(), y, reduction="none") - ce(lo(x).double(), y, reduction="none"))).sum())
    assert slopes.sum() * 0.2 == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("criterion", ["ce", "soft_error"])
def test_smooth_slopes_say_more_calibration_helps_when_the_high_probe_fits_val_better(criterion):
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 10)
    y = torch.tensor([0, 1] * 10)
    good, bad = linear(np.array([[2.0, 0.0], [0.0, 2.0]])), linear(np.array([[1.0, 0.0], [0.0, 0.5]]))
    tail, span = np.array([1]), np.array([0.2])
    assert val_loss_slope(good, bad, Rows(x, y), tail, span, criterion)[0] < 0     # loss falls with beta
    assert val_loss_slope(bad, good, Rows(x, y), tail, span, criterion)[0] > 0


def test_accuracy_slope_charges_each_changed_row_to_the_tail_class_that_took_or_lost_it():
    # classes 0, 1 head; 2, 3 tail. Val: two rows of class 2, two of class 0, two of class 3.
    y = torch.tensor([2, 2, 0, 0, 3, 3])
    x = torch.eye(6)
    lo_pred = [0, 0, 0, 0, 3, 3]          # the low probe misses both class-2 rows
    hi_pred = [2, 2, 2, 0, 3, 1]          # the high one takes them, and a class-0 row; class 3 loses a row to 1
    lo, hi = (linear(np.eye(4)[p].T * 5) for p in (lo_pred, hi_pred))
    slope = val_loss_slope(hi, lo, Rows(x, y), np.array([2, 3]), np.array([0.2, 0.2]))
    w = 1 / (2 * 3)                      # balanced: 3 classes present, 2 rows each
    assert slope[0] == pytest.approx(-(2 * w - w) / 0.2)                 # class 2: +2 rows of its own, -1 of class 0
    assert slope[1] == pytest.approx(-(-w) / 0.2)                        # class 3 lost one of its rows
    assert (slope * 0.2).sum() == pytest.approx(-(2 * w - w - w))        # adds up to the accuracy difference


def test_freeze_averages_the_last_part_of_the_search():
    beta = AdaptiveBeta(2, [1], init=0.5, adaptive=True, rule="paired")
    beta.trajectory = [[0.5], [0.1], [0.2], [0.6], [0.8]]
    beta.freeze(average_last=0.5)
    assert beta.values[1] == pytest.approx(0.7) and beta.final == pytest.approx([0.7]) and beta.probes == 0
    beta.update([None], val_rows([0, 1]))                                 # the refit pass: nothing moves
    assert beta.values[1] == pytest.approx(0.7) and len(beta.trajectory) == 5


# --- AD finds the val-optimal beta on banks where it is known (tests/known_beta.py) ---

def _options(bank, store, **kw):
    o = defaults({k: v for k, (v, _) in loss_option_specs().items()})
    o.update(bank=str(bank), store=str(store), plots=False, deploy=False, **kw)
    return o


def _val(path):
    return json.loads((path / "metrics.json").read_text())["val"]["overall"]


# (t, kd, region of the val-best betas, AD's start): every best beta is >= 0.3 away from the start, so a rule
# that never moves (or moves too little) cannot pass by starting where the answer is
CASES = [(0.85, True, (0.6, 1.0), 0.2), (-0.3, True, (0.0, 0.4), 0.9),
         (0.85, False, (0.6, 1.0), 0.2), (-0.3, False, (0.0, 0.4), 0.9)]


def known_case(tmp_path, t, kd, region, start):
    """(bank, store, {fixed beta: val accuracy}, the best betas) of a known-beta bank; checks the construction.

    "Best" is every grid beta whose val accuracy is within one point of the top one (1,800 val rows:
    about two standard errors of a paired difference), so that a plateau of equally good betas does
    not make the answer an accident of the tie-break.
    """
    bank = write_known_beta_bank(tmp_path / "bank.h5", t, scale=5.0, n_eval=300)
    store = tmp_path / "store.h5"
    res = CliRunner().invoke(generate, ["--bank", str(bank), "--k", "1", "--out", str(store)])
    assert res.exit_code == 0, res.output
    sweep = {}
    for b in np.round(np.arange(0, 1.01, 0.1), 1):
        run = run_stage2(_options(bank, store, kd=kd, ad=False, beta_init=float(b), run=f"fixed{b}"),
                         {"ad", "beta_init", "kd"}, progress=False)
        sweep[float(b)] = _val(run)
    top = max(sweep.values())
    best = np.array([b for b, v in sweep.items() if v >= top - 0.01])
    assert region[0] <= best.min() and best.max() <= region[1], sweep   # the construction does what it says
    assert np.abs(best - start).min() >= 0.3 - 1e-9, (best, start)         # and the answer is far from the start
    return bank, store, sweep, best


def adapted(bank, store, kd, start, name, **rule):
    """(final betas of the tail classes, val accuracy) of an AD run from `start`; `rule` overrides AD's options."""
    rule = dict({"ad": True}, **rule)
    ad = run_stage2(_options(bank, store, kd=kd, beta_init=start, run=name, **rule),
                    {"kd", "beta_init", *rule}, progress=False)
    final = np.asarray(json.loads((ad / "beta.json").read_text())["final"])
    assert len(final) == len(TAILS)
    return final, _val(ad)


def found_the_best(final, val, sweep, best) -> bool:
    """Every final beta within 0.15 of a best one, and a head as good as a best beta's."""
    near = np.all(np.abs(final[:, None] - best[None]).min(1) <= 0.15)
    return bool(near and val >= min(sweep[b] for b in best) - 0.01)


@pytest.mark.slow
@pytest.mark.parametrize("t, kd, region, start", CASES, ids=["high", "low", "high-no-kd", "low-no-kd"])
def test_ad_lands_within_015_of_the_best_fixed_beta(tmp_path, t, kd, region, start):
    """The fixed-beta sweep on val gives the best beta; AD, started 0.3 or more away and never told, ends near it."""
    bank, store, sweep, best = known_case(tmp_path, t, kd, region, start)
    final, val = adapted(bank, store, kd, start, "ad")
    assert found_the_best(final, val, sweep, best), (final, val, sweep)


@pytest.mark.slow
@pytest.mark.parametrize("off", [{"ad": False}, {"beta_step": 0.0}, {"ad_delta": 0.0}],
                         ids=["no-ad", "no-step", "no-probe-offset"])
def test_the_known_optimum_test_fails_with_the_rule_switched_off(tmp_path, off):
    """The test above can fail: with AD off, a zero step or probes at the main head's beta, the high case with
    KD (whose best betas once contained the start) is not found."""
    t, kd, region, start = CASES[0]
    bank, store, sweep, best = known_case(tmp_path, t, kd, region, start)
    final, val = adapted(bank, store, kd, start, "off", **off)
    assert np.allclose(final, start)                                      # the rule did not move
    assert not found_the_best(final, val, sweep, best), (final, val, sweep)
