"""The feature dump: features, logits and stage-one metrics of a trained model into a bank.

Every split (train included) is passed in eval mode without augmentation, in
batches, and its rows stream straight into `data.bank.BankWriter`. Under DDP
each rank computes every world-th row of a chunk and rank 0 writes the
gathered chunk, so the bank holds every row once, in the split's order.
"""
import time

import numpy as np
import torch

from data.bank import BankWriter
from data.cliutil import echo_progress
from data.errors import GlagError
from data.splits import format_table, group_accuracy, shot_groups
from extract.augment import BatchTransform
from extract.distributed import gather_rows
from extract.loaders import Images

SPLIT_ORDER = ("train", "val", "test")


@torch.inference_mode()
def split_rows(model, images: Images, transform, ctx, batch_size: int):
    """Yield (features (n, D), logits (n, C), labels (n,), index (n,)) CPU tensors over a split.

    The head is applied to the float32 features, so the stored logits are exactly
    W f + b of the stored head and features, also when the backbone ran in bf16.
    """
    n, chunk = len(images), batch_size * ctx.world
    chunks = [torch.arange(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    # every rank takes every world-th row of a chunk, padded with its first row to equal shares
    mine = [torch.cat([c, c[:1].repeat(-len(c) % ctx.world)])[ctx.rank::ctx.world] for c in chunks]
    for rows, (batch, labels, index) in zip(chunks, images.batches(mine)):
        with ctx.autocast():
            feats = model.features(transform(batch.to(ctx.device)))              # (m, D)
        feats = feats.float()
        logits = model.head(feats)                                                # (m, C)
        out = [gather_rows(t, ctx, len(rows)) for t in (feats, logits, labels.to(ctx.device),
                                                         index.to(ctx.device))]
        yield tuple(t.cpu() for t in out)


def dump_bank(model, data, splits: dict, cfg: dict, ctx, out, log=print) -> dict | None:
    """Write the bank at `out` (rank 0) and return the stage-one metrics.

    Args:
        model: the trained Classifier (not DDP-wrapped), on ctx.device.
        data: the LongTailDataset (names, train counts).
        splits: {"train", "val", "test": extract.loaders.Images} of its splits.
        cfg: resolved config, stored in the bank; uses image_size, dump_batch_size, groups.
        out: bank path.
    Returns:
        {"groups_rule", "groups", "val", "test"} on rank 0, None on other ranks.
    """
    model.eval()
    transform = BatchTransform(cfg, cfg["image_size"], train=False)
    groups = shot_groups(data.train_counts, cfg["groups"])
    writer = (BankWriter(out, dataset=data.name, backbone=cfg["backbone"], loss=cfg["loss"],
                         class_names=data.class_names, train_counts=data.train_counts,
                         feature_dim=model.feature_dim, config=cfg) if ctx.main else None)
    metrics = {"groups_rule": cfg["groups"], "groups": groups.tolist()}
    try:
        for name in SPLIT_ORDER:
            if len(splits[name]) == 0:
                continue
            acc = _dump_split(model, splits[name], transform, ctx, cfg, writer, name, groups)
            if name != "train":
                metrics[name] = acc
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
        if ctx.main and time.time() - last > 10:
            last = time.time()
            echo_progress(done, len(images), started, f"dump {name}")
    return group_accuracy(np.concatenate(preds), np.concatenate(labels), groups)
