"""KD loss and the Eq. 11 objective (the adaptive beta: test_classify_beta.py)."""
import numpy as np
import pytest
import torch

from glag.classify.distill import DistillObjective, kd_loss
from glag.extract.losses import alpha_t, build_loss


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
