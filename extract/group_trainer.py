"""Stage one for N runs at once: one grouped network (glag.extract.group), one SGD step per batch.

Each run keeps everything it would have alone (glag.extract.trainer.Trainer): its own batch order
and augmentation stream, seeded by (seed, epoch) exactly as the Trainer seeds them, its own loss
with `update(epoch)`, its own mixup draws, and its own checkpoint. What the runs share is the step:

- the loss stepped is the sum of the N runs' losses; their parameters are disjoint, so each run's
  gradient is exactly the gradient of its own loss;
- one SGD over the grouped parameters: momentum and weight decay are elementwise, so updating the
  concatenated tensors is updating each run's block alone. That holds only when every run has the
  same lr, momentum, weight decay and schedule (epochs, warm-up, steps per epoch): `check_groupable`
  refuses anything else, naming the option.

After each epoch the grouped state is split back into each run's own Classifier, SGD and schedule
(`Run`) and saved with the Trainer's `save_checkpoint`, so a group resumes from N ordinary
checkpoints and `glag-extract` can resume or dump any of them alone.
"""
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import torch

from glag.data.errors import GlagError
from glag.extract.augment import BatchTransform, mixup, mixup_loss
from glag.extract.checkpoint import save_checkpoint
from glag.extract.group import GroupedClassifier, merge_optimizer_states, split, split_optimizer_state
from glag.extract.losses import LOSSES
from glag.extract.loaders import epoch_order, seeded, split_batches
from glag.cli.tensorboard import NoBoard
from glag.extract.trainer import (board_scalars, build_optimizer, compile_model, cosine_with_warmup, epoch_line,
                                  epoch_record, local_batch, steps_per_epoch)

# Settings a run of a group may have of its own: the loss and its options, the seed, where it goes, its
# batch order and augmentation (drawn per run), and what its dump adds. Every other setting must agree.
PER_RUN = frozenset({"loss", "seed", "out", "sampler", "crop_pad", "flip", "cutout", "autoaugment", "mixup",
                     "views", "views_dtype", "views_logits", "dump_batch_size", "current"})


@dataclass
class Run:
    """One stage-one run of a group, with the state it would have alone.

    model/optimizer/scheduler are the run's own Classifier, SGD and schedule (as Trainer builds them):
    the group trainer copies its grouped state into them after every epoch. `board` takes the run's
    epoch records as TensorBoard scalars (glag.cli.tensorboard), as a run alone writes them.
    """
    cfg: dict
    model: torch.nn.Module
    loss: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    out: Path
    ckpt: Path
    epoch: int = 0
    history: list = field(default_factory=list)
    board: object = field(default_factory=NoBoard)

    @property
    def label(self) -> str:
        return f"{self.cfg['loss']} seed{self.cfg['seed']}"


def _own(key: str) -> bool:
    return key in PER_RUN or any(key.startswith(name + "_") for name in LOSSES)


def check_groupable(cfgs: list) -> None:
    """Refuse runs that cannot share one step, naming the first option they differ in."""
    first = cfgs[0]
    labels = [f"{c.get('loss')} seed{c.get('seed')}" for c in cfgs]
    if len(set(labels)) < len(labels):
        twice = next(x for x in labels if labels.count(x) > 1)
        raise GlagError(f"--losses / --seeds: {twice} is in the group twice; list each loss and seed once")
    for label, cfg in zip(labels[1:], cfgs[1:]):
        for key in sorted((set(first) | set(cfg)) - {k for k in set(first) | set(cfg) if _own(k)}):
            if first.get(key) != cfg.get(key):
                flag = "--" + key.replace("_", "-")
                raise GlagError(f"{flag}: runs in one group must share it ({labels[0]}: {first.get(key)!r}, "
                                f"{label}: {cfg.get(key)!r}); run them in separate groups")


class GroupTrainer:
    """Trains N `Run`s (all at the same finished epoch) as one grouped network.

    Args:
        runs: the runs; their models/optimizers/schedulers hold their start state.
        images: the shared long-tailed train split (glag.extract.loaders.Images).
        ctx: glag.extract.distributed.Context (one process).
        image_size: side of the training crops.
    """

    def __init__(self, runs: list, images, ctx, image_size: int):
        check_groupable([r.cfg for r in runs])
        if ctx.world > 1:
            raise GlagError("glag-extract-group runs in one process; for several GPUs use torchrun with glag-extract")
        if len({r.epoch for r in runs}) > 1:
            raise ValueError("a GroupTrainer steps runs that have finished the same epochs")
        self.runs, self.images, self.ctx, self.cfg = runs, images, ctx, runs[0].cfg
        self.model = GroupedClassifier([r.model for r in runs]).to(ctx.device, memory_format=torch.channels_last)
        self.net = self.model
        if self.cfg["compile"]:
            self.net = compile_model(self.model, self.cfg, ctx)   # as Trainer (extract/trainer.py)
        self.transforms = [BatchTransform(r.cfg, image_size, train=True) for r in runs]
        self.optimizer = build_optimizer(self.model, self.cfg)
        self.scheduler = cosine_with_warmup(self.optimizer, steps_per_epoch(len(images), self.cfg, 1), self.cfg)
        if runs[0].epoch > 0:     # resumed: the runs' own states, restored from their checkpoints
            self.optimizer.load_state_dict(merge_optimizer_states([r.optimizer.state_dict() for r in runs]))
            self.scheduler.load_state_dict(runs[0].scheduler.state_dict())
        self._stepped = False

    def fit(self, end: int, log=click.echo) -> None:
        """Train epochs runs[0].epoch .. end - 1, checkpointing every run after each epoch."""
        started, done_images = time.time(), 0
        for epoch in range(self.runs[0].epoch, end):
            for run in self.runs:
                run.loss.update(epoch)
            epoch_started = time.time()
            stats = self.run_epoch(epoch)
            seconds = time.time() - epoch_started
            lr = self.scheduler.get_last_lr()[0]
            self.unpack()
            for run, s in zip(self.runs, stats):
                s["seconds"] = seconds
                run.history = [h for h in run.history if h.get("epoch", 0) < epoch] + [
                    epoch_record(epoch, s, run.loss, lr)]
                run.board.scalars(epoch, board_scalars(run.history[-1]), prefix="stage1/")
                run.epoch = epoch + 1
                save_checkpoint(run.ckpt, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler,
                                epoch=epoch + 1, cfg=run.cfg, history=run.history)
            done_images += stats[0]["images"]
            for run, s in zip(self.runs, stats):
                log(epoch_line(epoch, self.cfg["epochs"], s, run.loss, lr, time.time() - started, done_images)
                    + f" [{run.label}]", err=True)
            total = sum(s["images"] for s in stats)
            log(f"group epoch {epoch + 1}/{self.cfg['epochs']}: {len(self.runs)} runs, {total} images in "
                f"{seconds:.2f}s, {total / max(seconds, 1e-9):,.0f} img/s together", err=True)

    def unpack(self) -> None:
        """Copy the grouped weights, momentum and schedule into each run's own model, SGD and scheduler."""
        states = split(self.model)
        optimizer_states = split_optimizer_state(self.optimizer.state_dict(), len(self.runs))
        for run, state, opt in zip(self.runs, states, optimizer_states):
            run.model.load_state_dict(state)
            run.optimizer.load_state_dict(opt)
            run.scheduler.load_state_dict(self.scheduler.state_dict())

    def run_epoch(self, epoch: int) -> list:
        """One pass of every run over its own order of the split; per run {"loss", "acc", "images"}."""
        ctx, labels = self.ctx, self.images.labels.cpu()          # orders are drawn on the CPU, as Trainer's
        batches = [split_batches(epoch_order(labels, r.cfg["sampler"], seeded(r.cfg["seed"], epoch, 0))
                                 .to(self.images.device), local_batch(r.cfg, 1), drop_last=True) for r in self.runs]
        generators = [seeded(r.cfg["seed"], epoch, 1, 0, device=ctx.device) for r in self.runs]
        self.net.train()
        sums = torch.zeros(len(self.runs), 2, dtype=torch.float64, device=ctx.device)   # (N, [loss * B, hits])
        images_seen = 0
        for items in zip(*(self.images.batches(b) for b in batches)):
            sums += self.train_batch(items, generators)
            images_seen += len(items[0][1])
        totals = sums.cpu()             # the one host sync of the epoch
        for run, row in zip(self.runs, totals):
            if not torch.isfinite(row[0]):
                raise GlagError(f"--lr {run.cfg['lr']}: the loss of {run.label} diverged in epoch {epoch}; lower "
                                "the learning rate, or train that run in a separate group")
        return [{"loss": float(row[0] / max(images_seen, 1)), "acc": float(row[1] / max(images_seen, 1)),
                 "images": images_seen} for row in totals]

    def train_batch(self, items, generators) -> torch.Tensor:
        """One step on the runs' uint8 batches [(images (B, H, W, C), labels (B,), index)]; (N, 2) sums."""
        xs, ys, mixes = [], [], []
        for (images, labels, _), generator, transform, run in zip(items, generators, self.transforms, self.runs):
            x = transform(images.to(self.ctx.device, non_blocking=True), generator)   # (B, Cin, H, W)
            alpha, mix = run.cfg.get("mixup") or 0.0, None
            if alpha > 0:             # drawn from the run's own stream right after its augmentation, as Trainer
                x, lam, perm = mixup(x, alpha, generator)
                mix = (lam, perm)
            xs.append(x)
            ys.append(labels.to(self.ctx.device, non_blocking=True))
            mixes.append(mix)
        x = torch.cat(xs, 1).contiguous(memory_format=torch.channels_last)          # (B, N Cin, H, W)
        return self._step(x, ys, mixes)

    def _step(self, x, ys, mixes) -> torch.Tensor:
        try:
            with self.ctx.autocast():
                logits = self.net(x)                                                 # (N, B, C)
            losses = torch.stack([run.loss(z.float(), y) if mix is None else mixup_loss(run.loss, z.float(), y, *mix)
                                  for run, z, y, mix in zip(self.runs, logits, ys, mixes)])   # (N,)
            self.optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()          # disjoint parameters: each run gets its own loss's gradient
            self.optimizer.step()
            self.scheduler.step()
            self._stepped = True
        except torch.OutOfMemoryError:
            if self._stepped:
                raise
            raise GroupOutOfMemory(len(self.runs)) from None
        hits = (logits.argmax(2) == torch.stack(ys)).sum(1)                          # (N,)
        return torch.stack([losses.detach().double() * len(ys[0]), hits.double()], 1)   # (N, 2), no host sync


class GroupOutOfMemory(Exception):
    """The first step of a group of `n` runs did not fit in GPU memory (the caller measures what does)."""

    def __init__(self, n: int):
        super().__init__(f"{n} runs do not fit in GPU memory")
        self.n = n
