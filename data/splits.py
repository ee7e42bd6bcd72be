"""Many / medium / few class groups and per-group accuracy.

Groups follow the classifier-balancing convention: many > 100 training images,
medium 20..100, few < 20. Small datasets (scikit-learn digits, Fashion-MNIST-LT
at low IM) can put every class in one group, which makes the table useless; the
`relative` fallback then ranks classes by training count and cuts them into
thirds (ties keep class order). `auto` uses the absolute thresholds when they
give at least two non-empty groups, else the fallback.
"""
import numpy as np

GROUPS = ("many", "medium", "few")
RULES = ("auto", "absolute", "relative")


def shot_groups(train_counts, rule: str = "auto", many: int = 100, few: int = 20) -> np.ndarray:
    """Group id per class: 0 many, 1 medium, 2 few.

    Args:
        train_counts: (C,) training images per class.
    Returns:
        (C,) int64 in {0, 1, 2}.
    """
    if rule not in RULES:
        raise ValueError(f"unknown group rule {rule!r}; choose from {list(RULES)}")
    counts = np.asarray(train_counts)
    absolute = np.where(counts > many, 0, np.where(counts >= few, 1, 2)).astype(np.int64)
    if rule == "absolute" or (rule == "auto" and len(np.unique(absolute)) >= 2):
        return absolute
    order = np.argsort(-counts, kind="stable")
    groups = np.empty(len(counts), dtype=np.int64)
    groups[order] = np.arange(len(counts)) * 3 // max(len(counts), 1)
    return groups


def group_accuracy(pred, labels, groups) -> dict:
    """Top-1 accuracy overall (per sample) and per group (mean of per-class accuracy).

    Per-group numbers average the classes' accuracies, as the field does on
    balanced test sets; overall is the plain sample accuracy.
    Args:
        pred, labels: (N,) predicted and true class ids.
        groups: (C,) group id per class from `shot_groups`.
    Returns:
        {"overall", "many", "medium", "few": float in [0, 1] or None, "per_class": list}.
    """
    pred, labels, groups = np.asarray(pred), np.asarray(labels), np.asarray(groups)
    num_classes = len(groups)
    hits = np.bincount(labels, weights=(pred == labels), minlength=num_classes)
    seen = np.bincount(labels, minlength=num_classes)
    per_class = np.where(seen > 0, hits / np.maximum(seen, 1), np.nan)
    out = {"overall": float((pred == labels).mean()) if len(labels) else None}
    for gid, name in enumerate(GROUPS):
        vals = per_class[(groups == gid) & (seen > 0)]
        out[name] = float(vals.mean()) if len(vals) else None
    out["per_class"] = [None if np.isnan(v) else float(v) for v in per_class]
    return out


LEGEND = ("`-` under a group: no class is in it. Groups count each class's training images: many > 100, "
          "medium 20-100, few < 20; where that leaves one group, thirds by count (--groups, docs/datasets.md).")


def format_table(rows: dict, title: str = "") -> str:
    """A markdown table of {method: accuracy dict} in percent; a group empty in every row gets LEGEND below."""
    head = "| method | overall | many | medium | few |\n|---|---|---|---|---|\n"
    fmt = lambda v: "-" if v is None else f"{100 * v:.1f}"
    body = "".join(f"| {name} | " + " | ".join(fmt(acc.get(k)) for k in ("overall",) + GROUPS) + " |\n"
                   for name, acc in rows.items())
    empty = rows and any(all(acc.get(k) is None for acc in rows.values()) for k in GROUPS)
    return (f"{title}\n\n" if title else "") + head + body + (f"\n{LEGEND}\n" if empty else "")
