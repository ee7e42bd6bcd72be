"""KD loss, the Eq. 11 objective and the adaptive confidence score beta (AD)."""
import numpy as np
import pytest
import torch

from classify.distill import AdaptiveBeta, DistillObjective, kd_loss
from extract.losses import alpha_t, build_loss


def test_kd_is_zero_when_student_equals_teacher_and_positive_otherwise():
    z = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
    assert kd_loss(z, z.clone(), 2.0).abs() < 1e-6
    assert kd_loss(z, z.flip(1), 2.0) > 0.01
    assert kd_loss(z[:0], z[:0], 2.0) == 0


def test_kd_gradient_pulls_student_towards_teacher():
    teacher = torch.tensor([[3.0, 0.0, -1.0]])
    student = torch.zeros(1, 3, requires_grad=True)
    kd_loss(student, teacher, 1.0).backward()
    assert student.grad[0, 0] < 0 < student.grad[0, 2]  # descent raises logit 0, lowers logit 2


def objective(kd=True, epochs=5):
    base = build_loss("ce", [50, 20, 5, 2], {"epochs": epochs})
    head = np.array([True, True, False, False])
    return DistillObjective(base, head, epochs, kd=kd, temperature=2.0, form="convex", c=2.0, s=1.0)


def test_alpha_follows_eq3_and_kd_off_keeps_it_zero():
    on, off = objective(), objective(kd=False)
    for epoch in range(5):
        on.update(epoch)
        off.update(epoch)
        assert on.alpha == pytest.approx(alpha_t(epoch, 5, "convex", 2.0, 1.0))
        assert off.alpha == 0.0
    assert on.alpha == pytest.approx(1.0)  # s * (c - 1) at the last epoch


def test_kd_only_on_head_class_rows():
    obj = objective()
    obj.update(4)
    g = torch.Generator().manual_seed(1)
    logits, teacher = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    tail_only = torch.tensor([2, 3, 2, 3, 2, 3])
    total, ce, kd = obj(logits, tail_only, teacher)
    assert kd == 0 and torch.isclose(total, ce)
    mixed = torch.tensor([0, 1, 2, 3, 0, 2])
    total, ce, kd = obj(logits, mixed, teacher)
    rows = torch.tensor([0, 1, 4])
    assert torch.isclose(kd, kd_loss(logits[rows], teacher[rows], 2.0))
    assert torch.isclose(total, ce + obj.alpha * kd)


def test_beta_goes_up_down_stays_and_clips():
    beta = AdaptiveBeta(5, tail_classes=[2, 3, 4], init=0.6, step=0.25, lo=0.0, hi=1.0)
    beta.update([0.9, 0.9, 0.5, 0.5, 0.5])             # first epoch: only recorded
    assert beta.values.tolist() == [0.6] * 5
    beta.update([0.1, 0.1, 0.7, 0.3, 0.5])             # class 2 up, 3 down, 4 equal; 0/1 are not tail
    assert beta.values.tolist() == pytest.approx([0.6, 0.6, 0.85, 0.35, 0.6])
    beta.update([0.1, 0.1, 0.8, 0.2, 0.5])
    beta.update([0.1, 0.1, 0.9, 0.1, 0.5])
    assert beta.values[2] == 1.0 and beta.values[3] == pytest.approx(0.0)  # clipped to [0, 1]
    assert len(beta.trajectory) == 5 and beta.trajectory[0] == [0.6] * 3


def test_fixed_beta_records_but_never_moves():
    beta = AdaptiveBeta(3, [1, 2], init=0.4, adaptive=False)
    for acc in ([0.1, 0.2, 0.3], [0.9, 0.9, 0.9], None):
        beta.update(acc)
    assert np.all(np.asarray(beta.trajectory) == 0.4) and len(beta.trajectory) == 4


def test_missing_val_class_leaves_beta():
    beta = AdaptiveBeta(3, [1, 2], init=0.5, step=0.1)
    beta.update([0.1, np.nan, 0.2])
    beta.update([0.1, np.nan, 0.4])
    assert beta.values[1] == 0.5 and beta.values[2] == pytest.approx(0.6)
