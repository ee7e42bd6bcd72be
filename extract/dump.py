"""The feature dump: features, logits and stage-one metrics of a trained model into a bank.

Every split (train included) is passed in eval mode without augmentation, in
batches, and its rows stream straight into `glag.data.bank.BankWriter`. Under DDP
each rank computes every world-th row of a chunk and rank 0 writes the
gathered chunk, so the bank holds every row once, in the split's order.

With `--views V`, V augmented views of the train split follow: the stage-one
training augmentation (crop, flip, cutout, AutoAugment as configured; never
mixup), model still in eval mode, rows in the train split's order. Heads
retrained on the bank then see augmented images, as image-based retraining
(cRT, LWS, MiSLAS stage two) does. View v draws from its own CPU generator
seeded by (seed, VIEW_PURPOSE, v, rank), so a view is the same on every
re-dump with the same seed, process count and --dump-batch-size.
"""
import time

import numpy as np
import torch

from glag.data.atomic import available_memory, free_bytes
from glag.data.bank import BankWriter
from glag.cli.util import echo_progress
from glag.data.errors import GlagError
from glag.data.splits import format_table, group_accuracy, shot_groups
from glag.extract.augment import BatchTransform
from glag.extract.distributed import all_reduce_sum, gather_rows
from glag.extract.loaders import Images, seeded

SPLIT_ORDER = ("train", "val", "test")
VIEW_PURPOSE = 7  # the trainer's streams use purposes 0 (order) and 1 (augmentation)
PROGRESS_EVERY_S = 10.0


def bank_bytes(cfg: dict, feature_dim: int, num_classes: int, rows: dict) -> tuple[int, int]:
    """(whole bank, of which views) in bytes, from the rows per split; HDF5 overhead is small next to it.

    A split row is D + C float32 plus two int64; a view row is D (+ C with view logits) in the views dtype.
    """
    D, C = feature_dim, num_classes
    base = sum(n * ((D + C) * 4 + 16) for n in rows.values()) + (C * D + C) * 4
    width = D + (C if cfg.get("views_logits", True) else 0)
    views = cfg.get("views", 0) * rows.get("train", 0) * width * np.dtype(cfg.get("views_dtype", "float16")).itemsize
    return base + views, views


def views_memory(cfg: dict, feature_dim: int, num_classes: int, rows: dict) -> str | None:
    """Why the --views V cannot be held in memory here, or None: stage two loads every view of a bank by
    default (--views auto), as float32 features (and logits when kept)."""
    V, width = cfg.get("views", 0), feature_dim + (num_classes if cfg.get("views_logits", True) else 0)
    per_view, have = rows.get("train", 0) * width * 4, available_memory()
    if not V or not per_view or have is None or V * per_view <= have:
        return None
    return (f"--views {V}: stage two holds the views in memory as float32, {V * per_view / 2 ** 30:.3g} GiB "
            f"({rows['train']:,} train rows x {width} numbers per view), more than the {have / 2 ** 30:.3g} GiB "
            f"available here; at most {have // per_view:,} views fit: lower --views")


def check_space(out, cfg: dict, feature_dim: int, num_classes: int, rows: dict, ctx) -> None:
    """Refuse, before anything is written, a bank the disk under `out` cannot hold, or views that stage two
    could not hold in memory (on every rank)."""
    need, views = bank_bytes(cfg, feature_dim, num_classes, rows)
    free = free_bytes(out.parent) if ctx.main else 0
    memory = views_memory(cfg, feature_dim, num_classes, rows) if ctx.main else None
    # rank 0 writes the bank; its verdict goes to every rank so none waits in a gather for it
    bad = ctx.main and (need > free or memory is not None)
    if all_reduce_sum(torch.tensor([float(bad)], device=ctx.device), ctx).item() == 0:
        return
    if memory is not None:
        raise GlagError(memory)
    gib, V = 2 ** 30, cfg.get("views", 0)
    if not V:
        raise GlagError(f"--out {out}: the bank needs {need / gib:.3g} GiB, {out.parent} has {free / gib:.3g} GiB "
                        "free; free space or pick another --out")
    raise GlagError(f"--views {V}: the bank needs {need / gib:.3g} GiB ({views / gib:.3g} GiB of it for the views), "
                    f"{out.parent} has {free / gib:.3g} GiB free; lower --views (or use --views-dtype float16, "
                    "--no-views-logits), free space or pick another --out")


@torch.inference_mode()
def split_rows(model, images: Images, transform, ctx, batch_size: int, generator=None):
    """Yield (features (n, D), logits (n, C), labels (n,), index (n,)) CPU tensors over a split.

    The head is applied to the float32 features, so the stored logits are exactly
    W f + b of the stored head and features, also when the backbone ran in bf16.
    `generator` drives a train transform (augmented views); eval transforms draw nothing.
    """
    n, chunk = len(images), batch_size * ctx.world
    chunks = [torch.arange(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    # every rank takes every world-th row of a chunk, padded with its first row to equal shares
    mine = [torch.cat([c, c[:1].repeat(-len(c) % ctx.world)])[ctx.rank::ctx.world] for c in chunks]
    for rows, (batch, labels, index) in zip(chunks, images.batches(mine)):
        with ctx.autocast():
            feats = model.features(transform(batch.to(ctx.device), generator))   # (m, D)
        feats = feats.float()
        logits = model.head(feats)                                                # (m, C)
        out = [gather_rows(t, ctx, len(rows)) for t in (feats, logits, labels.to(ctx.device),
                                                         index.to(ctx.device))]
        yield tuple(t.cpu() for t in out)


def dump_bank(model, data, splits: dict, cfg: dict, ctx, out, log=print, history=()) -> dict | None:
    """Write the bank at `out` (rank 0) and return the stage-one metrics.

    Args:
        model: the trained Classifier (not DDP-wrapped), on ctx.device.
        data: the LongTailDataset (names, train counts).
        splits: {"train", "val", "test": glag.extract.loaders.Images} of its splits.
        cfg: resolved config, stored in the bank; uses image_size, dump_batch_size, groups.
        out: bank path.
    Returns:
        {"groups_rule", "groups", "val", "test"} on rank 0, None on other ranks.
    """
    model.eval()
    transform = BatchTransform(cfg, cfg["image_size"], train=False)
    groups = shot_groups(data.train_counts, cfg["groups"])
    check_space(out, cfg, model.feature_dim, data.num_classes, {n: len(s) for n, s in splits.items()}, ctx)
    writer = (BankWriter(out, dataset=data.name, backbone=cfg["backbone"], loss=cfg["loss"],
                         class_names=data.class_names, train_counts=data.train_counts,
                         feature_dim=model.feature_dim, config=cfg, views=cfg.get("views", 0),
                         views_dtype=cfg.get("views_dtype", "float16"), views_logits=cfg.get("views_logits", True),
                         need_bytes=bank_bytes(cfg, model.feature_dim, data.num_classes,
                                               {n: len(s) for n, s in splits.items()})[0])
              if ctx.main else None)
    # the training curve travels with the bank: its stage-one metrics hold every epoch's record
    metrics = {"groups_rule": cfg["groups"], "groups": groups.tolist(), "history": list(history)}
    try:
        for name in SPLIT_ORDER:
            if len(splits[name]) == 0:
                continue
            acc = _dump_split(model, splits[name], transform, ctx, cfg, writer, name, groups)
            if name != "train":
                metrics[name] = acc
        if len(splits["train"]):
            for view in range(cfg.get("views", 0)):
                _dump_view(model, splits["train"], ctx, cfg, writer, view)
        if writer is not None:
            writer.set_head(model.head.weight.detach().cpu().numpy(), model.head.bias.detach().cpu().numpy())
            writer.set_metrics(metrics)
            writer.close()
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        if isinstance(exc, torch.OutOfMemoryError):
            size = cfg["dump_batch_size"]
            raise GlagError(f"--dump-batch-size {size}: out of memory in the feature dump; try --dump-only "
                            f"--dump-batch-size {max(1, size // 2)} (training is finished and kept)") from None
        raise
    if ctx.main:
        rows = {f"{cfg['loss']} {s}": metrics[s] for s in ("val", "test") if s in metrics}
        log(format_table(rows, title=f"stage one: {data.name}, {cfg['backbone']}, {cfg['loss']}"))
    return metrics if ctx.main else None


def _dump_split(model, images, transform, ctx, cfg, writer, name, groups) -> dict:
    started, done, preds, labels = time.time(), 0, [], []
    last = started
    for feats, logits, y, index in split_rows(model, images, transform, ctx, cfg["dump_batch_size"]):
        if writer is not None:
            writer.add_rows(name, feats.numpy(), y.numpy(), logits.numpy(), index.numpy())
        preds.append(logits.argmax(1).numpy())
        labels.append(y.numpy())
        done += len(y)
        if ctx.main and time.time() - last > PROGRESS_EVERY_S:
            last = time.time()
            echo_progress(done, len(images), started, f"dump {name}")
    return group_accuracy(np.concatenate(preds), np.concatenate(labels), groups)


def view_rows(model, images, cfg: dict, ctx, view: int):
    """Yield (features (n, D), logits (n, C)) CPU tensors of augmented view `view` of a split, in row order.

    The generator lives on the CPU, whatever the device, so a view does not depend on the GPU's
    random streams; its few draws per batch (offsets, flips, cutout centres) cost nothing there.
    """
    transform = BatchTransform(cfg, cfg["image_size"], train=True)
    generator = seeded(cfg["seed"], VIEW_PURPOSE, view, ctx.rank)
    for feats, logits, _, _ in split_rows(model, images, transform, ctx, cfg["dump_batch_size"], generator):
        yield feats, logits


def _dump_view(model, images, ctx, cfg, writer, view):
    started, done, last, keep_logits = time.time(), 0, time.time(), cfg.get("views_logits", True)
    what = f"dump view {view + 1}/{cfg['views']}"
    for feats, logits in view_rows(model, images, cfg, ctx, view):
        if writer is not None:
            writer.add_view_rows(view, feats.numpy(), logits.numpy() if keep_logits else None)
        done += len(feats)
        if ctx.main and time.time() - last > PROGRESS_EVERY_S:
            last = time.time()
            echo_progress(done, len(images), started, what)
    if ctx.main:
        echo_progress(done, len(images), started, what)   # one line per view: its time
