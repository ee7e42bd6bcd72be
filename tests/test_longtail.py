"""Long-tail construction (data/longtail.py) and many/medium/few grouping (data/splits.py)."""
import numpy as np
import pytest

from glag.data.datasets.base import ImageSet, RawDataset
from glag.data.errors import GlagError
from glag.data.longtail import class_counts, make_long_tail
from glag.data.splits import format_table, group_accuracy, shot_groups


def balanced_raw(num_classes=100, per_class=500, n_test=3, val=None, listed=False) -> RawDataset:
    """A label-only stand-in for CIFAR-style data: 1x1 images whose pixel is the row's class."""
    def split(n):
        labels = np.repeat(np.arange(num_classes), n)
        return ImageSet(labels=labels, images=labels.astype(np.uint8).reshape(-1, 1, 1, 1))
    return RawDataset(name="toy", class_names=[f"c{k}" for k in range(num_classes)], train=split(per_class),
                      test=split(n_test), val=split(val) if val else None, channels=1, image_size=1,
                      listed_long_tail=listed)


def standard_exp(num_classes, n_max, im):
    return [int(n_max * im ** (-i / (num_classes - 1))) for i in range(num_classes)]


# ---------------------------------------------------------------- profiles
def test_exp_counts_are_the_standard_cifar100_lt():
    counts = class_counts("exp", 100, 500, 100)
    assert counts.tolist() == standard_exp(100, 500, 100)
    assert counts[0] == 500 and counts[-1] == 5 and counts.sum() == 10847     # CIFAR-100-LT, IM 100


def test_val_per_class_zero_keeps_standard_counts_and_empty_val():
    lt = make_long_tail(balanced_raw(), "exp", im=100, val_per_class=0)
    assert lt.train_counts.tolist() == standard_exp(100, 500, 100)
    assert len(lt.val) == 0 and lt.meta["capped_classes"] == 0


def test_val_cap_only_touches_classes_without_room():
    lt = make_long_tail(balanced_raw(), "exp", im=100, val_per_class=20)
    want = standard_exp(100, 500, 100)
    capped = [k for k in range(100) if want[k] > 480]
    assert capped == [0]                                                  # 500 > 480; 477 fits
    assert lt.train_counts[0] == 480 and lt.train_counts[1:].tolist() == want[1:]
    assert lt.meta["capped_classes"] == 1 and lt.meta["val_source"] == "train-leftover"


def test_step_profile():
    counts = class_counts("step", 10, 200, 10)
    assert counts.tolist() == [200] * 5 + [20] * 5
    assert class_counts("step", 5, 100, 3).tolist() == [100, 100, 33, 33, 33]


def test_im_below_one_and_unknown_profile_rejected():
    with pytest.raises(GlagError, match="--im"):
        make_long_tail(balanced_raw(4, 10), "exp", im=0.5)
    with pytest.raises(GlagError, match="--profile"):
        class_counts("zipf", 4, 10, 10)


# ---------------------------------------------------------------- val split and seeds
def test_val_disjoint_balanced_and_never_from_test():
    raw = balanced_raw(10, 100, n_test=7)
    lt = make_long_tail(raw, "exp", im=10, val_per_class=15, seed=3)
    train_rows, val_rows = set(lt.train.index.tolist()), set(lt.val.index.tolist())
    assert not train_rows & val_rows
    assert np.bincount(lt.val.labels, minlength=10).tolist() == [15] * 10
    assert (raw.train.labels[lt.val.index] == lt.val.labels).all()          # val rows are train-split rows
    assert (lt.val.images[:, 0, 0, 0] == lt.val.labels).all()
    assert lt.test is raw.test and len(lt.test) == 70


def test_seeded_reproducibility():
    raw = balanced_raw(10, 100)
    a, b = (make_long_tail(raw, "exp", im=10, val_per_class=10, seed=7) for _ in range(2))
    c = make_long_tail(raw, "exp", im=10, val_per_class=10, seed=8)
    assert np.array_equal(a.train.index, b.train.index) and np.array_equal(a.val.index, b.val.index)
    assert not np.array_equal(a.train.index, c.train.index)
    assert np.array_equal(a.train_counts, c.train_counts)                # the seed picks rows, not counts


def test_selection_is_uniform_within_a_class():
    # class 1 keeps 5 of its 10 images: over 400 seeds each image is kept ~half the time (sd 0.025)
    raw = balanced_raw(2, 10)
    kept = np.zeros(20)
    for seed in range(400):
        kept[make_long_tail(raw, "exp", im=2, val_per_class=0, seed=seed).train.index] += 1
    assert (kept[:10] == 400).all()
    assert np.abs(kept[10:] / 400 - 0.5).max() < 0.1


def test_empty_class_and_too_small_class_rejected():
    raw = balanced_raw(3, 10)
    raw.train = raw.train.subset(np.flatnonzero(raw.train.labels != 1))
    with pytest.raises(GlagError, match="c1"):
        make_long_tail(raw, "exp", im=10)
    with pytest.raises(GlagError, match="--val-per-class"):
        make_long_tail(balanced_raw(3, 10), "exp", im=10, val_per_class=10)


# ---------------------------------------------------------------- official val and listed data
def test_official_val_is_used_when_present():
    raw = balanced_raw(10, 100, val=4)
    lt = make_long_tail(raw, "exp", im=10, val_per_class=20)
    assert lt.val is raw.val and lt.meta["val_source"] == "official"
    assert lt.train_counts.tolist() == standard_exp(10, 100, 10)            # nothing reserved for val


def test_listed_profile_keeps_the_train_split():
    raw = balanced_raw(4, 5, val=2, listed=True)
    raw.train = raw.train.subset(np.flatnonzero(raw.train.index % 5 <= 3 - raw.train.labels))   # 4, 3, 2, 1
    lt = make_long_tail(raw, "exp", im=100)
    assert lt.train_counts.tolist() == [4, 3, 2, 1] and lt.meta["profile"] == "listed"
    assert lt.val is raw.val
    held = make_long_tail(balanced_raw(4, 5), "listed")        # no official val: at most a fifth held out
    assert held.train_counts.tolist() == [4, 4, 4, 4] and len(held.val) == 4
    assert held.meta["val_source"] == "train-holdout"


# ---------------------------------------------------------------- many / medium / few
def test_shot_groups_absolute_thresholds():
    counts = [500, 101, 100, 20, 19, 1]
    assert shot_groups(counts).tolist() == [0, 0, 1, 1, 2, 2]
    assert shot_groups([5, 3], rule="absolute").tolist() == [2, 2]


def test_shot_groups_relative_fallback():
    counts = [9, 12, 7, 12, 3, 5]                                        # all "few": one group, useless
    assert shot_groups(counts).tolist() == [1, 0, 1, 0, 2, 2]          # thirds by count, ties in class order
    assert shot_groups(counts, rule="relative").tolist() == [1, 0, 1, 0, 2, 2]
    with pytest.raises(ValueError, match="auto"):
        shot_groups(counts, rule="thirds")


def test_group_accuracy_by_hand():
    labels = [0, 0, 1, 1, 1, 2]
    pred = [0, 1, 1, 1, 0, 0]
    acc = group_accuracy(pred, labels, groups=[0, 1, 2, 2])             # class 3 has no test sample
    assert acc["overall"] == pytest.approx(3 / 6)
    assert acc["many"] == pytest.approx(1 / 2) and acc["medium"] == pytest.approx(2 / 3)
    assert acc["few"] == pytest.approx(0.0)                             # class 2 only; class 3 ignored
    assert acc["per_class"][:3] == pytest.approx([0.5, 2 / 3, 0.0]) and acc["per_class"][3] is None
    table = format_table({"ce": acc})
    assert "| ce | 50.0 | 50.0 | 66.7 | 0.0 |" in table
