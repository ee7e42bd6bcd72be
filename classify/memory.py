"""How much memory a stage-two run needs, said before it loads anything, and refused when it will not fit.

The parts follow what pipeline.py holds (docs/stage-two.md, "Scale"): the train
features and labels (trained heads and NCM), the augmented views in their stored
type, val, the generator's factors on the device, the heads with their gradients
and momenta (one per AD lane, plus the refit's start), and the working set of one
chunk of synthetic draws and one batch per lane. The estimate is what the arrays
take; the process itself (Python, torch) adds about BASE.
"""
import click
import numpy as np
import torch

from glag.data.atomic import available_memory
from glag.data.errors import GlagError

from .rows import EVAL_ROWS

BASE = 0.6 * 2 ** 30          # an imported torch and the interpreter
GiB = 2 ** 30


def lanes_of(cfg: dict, store) -> int:
    """Heads trained side by side: the main one and AD's probes (the paired rule's two)."""
    return 1 + (2 if cfg["ad"] and store is not None and cfg["ad_rule"] == "paired" else 0)


def estimate(cfg: dict, bank, store, head) -> dict:
    """{part: bytes} of the run; parts a method does not load are absent."""
    N, D, C = bank.rows("train"), bank.feature_dim, bank.num_classes
    parts = {}
    if head.trainable or head.needs_train_rows:
        parts["train rows"] = N * (D * 4 + 8)
    if cfg["views"]:
        itemsize = np.dtype(bank.views_dtype).itemsize
        parts[f"{cfg['views']} views ({bank.views_dtype})"] = cfg["views"] * N * D * itemsize
    if "val" in bank.splits:
        parts["val"] = bank.rows("val") * (D * 4 + 8)
    params = sum(p.numel() for p in head.parameters() if p.requires_grad) * 4
    if head.trainable:
        lanes = lanes_of(cfg, store)
        parts["heads"] = lanes * 3 * params + params
        B = cfg["batch_size"]
        parts["batches"] = lanes * B * (2 * D + 4 * C) * 4
        if store is not None:
            stored, size = store.generator_bytes(), np.dtype(store.attrs.get("dtype", "float32")).itemsize
            parts["generator"] = stored * (1 if size == 4 else 3)          # float16 stores: + a float32 copy
            if torch.device(cfg["device"]).type == "cuda":
                parts["generator"] = stored * 4 // size                      # on the device, in float32
            k = int(store.attrs.get("k", 3))
            parts["synthetic chunk"] = int(cfg["draw_chunk"]) * B * D * 4 * (4 + k + (cfg["gamma"] > 0))
    parts["scoring"] = EVAL_ROWS * (D + 2 * C) * 4
    if head.trainable and store is not None and cfg["ad"] and cfg["ad_criterion"] != "accuracy" and "val" in bank.splits:
        parts["val logits (AD criterion)"] = 6 * bank.rows("val") * C * 8
    return parts


def available(device) -> int | None:
    """Bytes free where the run's tensors live: the GPU's free memory, else Linux's MemAvailable."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return available_memory()


def check_memory(cfg: dict, bank, store, head, say: bool = True) -> int:
    """Say what the run needs; refuse in one line, with the options that make it fit, when it does not."""
    parts = estimate(cfg, bank, store, head)
    need = sum(parts.values()) + (BASE if torch.device(cfg["device"]).type == "cpu" else 0)
    have = available(cfg["device"])
    where = "GPU memory" if torch.device(cfg["device"]).type == "cuda" else "memory"
    detail = ", ".join(f"{k} {v / GiB:.2f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v >= GiB / 100)
    if say:
        free = f"; {have / GiB:.1f} GiB available" if have is not None else ""
        click.echo(f"memory: about {need / GiB:.1f} GiB of {where} ({detail}){free}", err=True)
    if have is not None and need > have:
        raise GlagError(f"the run needs about {need / GiB:.1f} GiB of {where} ({detail}) and {have / GiB:.1f} GiB are "
                        f"available; {_fixes(cfg, parts, store)}")
    return need


def _fixes(cfg, parts, store) -> str:
    """The options that shrink the largest parts."""
    fixes = []
    views = next((k for k in parts if "views" in k), None)
    if views:
        fixes.append(f"fewer views (--views {max(cfg['views'] // 2, 0)}; each costs "
                     f"{parts[views] / cfg['views'] / GiB:.2f} GiB)")
    if cfg["ad"] and store is not None:
        fixes.append("--no-ad (one head instead of three)")
    if torch.device(cfg["device"]).type == "cpu" and torch.cuda.is_available():
        fixes.append("--device cuda")
    fixes.append("a machine with more memory")
    return "try " + ", or ".join(fixes)
