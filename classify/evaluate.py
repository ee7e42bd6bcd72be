"""Predictions and accuracy of a head on cached rows: overall / many / medium / few and per class."""
import numpy as np
import torch

from glag.data.splits import group_accuracy


@torch.no_grad()
def predict(head, features, batch_rows: int = 16384) -> torch.Tensor:
    """Arg-max class of each row. Args: features (N, D). Returns: (N,) int64 on the features' device."""
    head.eval()
    return torch.cat([head(features[i:i + batch_rows]).argmax(1) for i in range(0, len(features), batch_rows)]
                     or [torch.zeros(0, dtype=torch.long, device=features.device)])


def per_class_accuracy(head, rows, num_classes: int) -> np.ndarray:
    """(C,) accuracy per class on `rows` (NaN for classes without rows), the AD signal."""
    pred = predict(head, rows.features)
    hits = torch.bincount(rows.labels, weights=(pred == rows.labels).double(), minlength=num_classes)
    seen = torch.bincount(rows.labels, minlength=num_classes).double()
    acc = (hits / seen.clamp_min(1)).cpu().numpy()
    acc[seen.cpu().numpy() == 0] = np.nan
    return acc


def split_metrics(head, rows, groups) -> dict:
    """glag.data.splits.group_accuracy of the head on `rows`: overall, many, medium, few, per_class."""
    pred = predict(head, rows.features).cpu().numpy()
    return group_accuracy(pred, rows.labels.cpu().numpy(), groups)
