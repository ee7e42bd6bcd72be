"""Stage one's training loop: SGD + cosine schedule with linear warm-up, one checkpoint per epoch.

The loop follows the paper (Sec. 5: SGD, momentum 0.9, weight decay 5e-4,
cosine schedule) and the CIFAR-LT habit of a linear warm-up. `loss.update(epoch)`
runs before each epoch's first batch (GraLoss's alpha, LDAM's DRW switch). The
order of rows and the augmentation of epoch e are drawn from generators seeded
by (seed, e) only, and a checkpoint holds everything else that changes (weights,
momentum, schedule step), so a resumed run ends with the same weights as an
uninterrupted one. With `--mixup ALPHA` > 0 each batch is mixed with a
permutation of itself (glag.extract.augment.mixup), lambda and the permutation drawn
from the same augmentation generator, so resume stays exact with mixup too.
"""
import math
import os
import shutil
import time

import click
import torch

from glag.cli.tensorboard import NoBoard
from glag.data.errors import GlagError
from glag.extract.augment import BatchTransform, mixup, mixup_loss
from glag.extract.checkpoint import save_checkpoint
from glag.extract.distributed import all_reduce_sum, barrier, wrap_model
from glag.extract.loaders import epoch_order, seeded, shard, split_batches
from glag.extract.names import COMPILE_MODES  # the option choices, defined without torch

PROGRESS_EVERY_S = 30.0  # a line within long epochs, so ImageNet-sized runs show life


def build_optimizer(model, cfg: dict) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                           weight_decay=cfg["weight_decay"], nesterov=False)


def cosine_with_warmup(optimizer, steps_per_epoch: int, cfg: dict) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: linear warm-up over `warmup_epochs`, then cosine decay to 0."""
    warm = int(cfg["warmup_epochs"] * steps_per_epoch)
    total = max(int(cfg["epochs"] * steps_per_epoch), warm + 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / (total - warm)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def steps_per_epoch(n_rows: int, cfg: dict, world: int) -> int:
    order = shard(torch.arange(n_rows), 0, world)
    return len(split_batches(order, local_batch(cfg, world), drop_last=True))


def check_compiler(ctx):
    """--compile on the CPU builds C++ kernels: refuse up front when there is no compiler."""
    if ctx.cuda:
        return
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    if not any(shutil.which(n) for n in names):
        raise GlagError(f"--compile on the CPU needs a C++ compiler ({' or '.join(names)}) on PATH; "
                        "install one (Debian: apt install g++) or drop --compile")


def compile_model(net, cfg: dict, ctx):
    """torch.compile with static shapes; --compile-mode reduce-overhead captures CUDA graphs on a GPU.

    Static shapes: the epoch's last, smaller batch gets its own graph; automatic dynamic shapes would
    recompile the full-batch graph as a dynamic one, ~10 % slower on CPU. CUDA graphs replay a whole
    step's kernels with one launch, which is what a small network on a large GPU is bound by; on the
    CPU there are no graphs to capture and the mode is the default one.
    """
    check_compiler(ctx)
    mode = cfg.get("compile_mode") or "default"      # absent in older configs
    if mode not in COMPILE_MODES:
        raise GlagError(f"--compile-mode {mode!r}: choose from {', '.join(COMPILE_MODES)}")
    if not ctx.cuda and mode == "reduce-overhead":
        mode = "default"
    return torch.compile(net, dynamic=False, mode=mode)


def local_batch(cfg: dict, world: int) -> int:
    """--batch-size is the global batch; each of `world` processes takes its share."""
    if cfg["batch_size"] < world:
        raise GlagError(f"--batch-size {cfg['batch_size']}: smaller than the {world} processes")
    return cfg["batch_size"] // world


class Trainer:
    """Trains a Classifier with a stage-one loss on a split held by `glag.extract.loaders.Images`.

    Args:
        model: Classifier, already on ctx.device.
        loss: LossBase on ctx.device.
        images: the long-tailed train split (Images).
        cfg: resolved config (epochs, batch_size, lr, momentum, weight_decay, warmup_epochs,
            sampler, seed, compile, crop/flip/cutout/mean/std).
        ctx: glag.extract.distributed.Context.
        image_size: side of the training crops.
        board: where each epoch's record also goes as TensorBoard scalars (glag.cli.tensorboard; the main
            process's only).
    """

    def __init__(self, model, loss, images, cfg: dict, ctx, image_size: int, board=None):
        self.model, self.loss, self.images, self.cfg, self.ctx = model, loss, images, cfg, ctx
        self.board = board or NoBoard()
        self.net = wrap_model(model, ctx)
        if cfg["compile"]:
            self.net = compile_model(self.net, cfg, ctx)
        self.transform = BatchTransform(cfg, image_size, train=True)
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = cosine_with_warmup(self.optimizer, steps_per_epoch(len(images), cfg, ctx.world), cfg)
        self._stepped = False  # an OOM before the first step means the batch is too large

    def fit(self, start_epoch: int, ckpt_path, stop_after: int | None = None, history=()) -> bool:
        """Train epochs start_epoch..epochs-1, checkpointing after each; False if stopped early.

        `self.history` holds one record per finished epoch (`history`: those of a resumed checkpoint).
        """
        started, done_images = time.time(), 0
        self.history = [h for h in history if h.get("epoch", 0) < start_epoch]
        for epoch in range(start_epoch, self.cfg["epochs"]):
            self.loss.update(epoch)
            epoch_started = time.time()
            stats = self.run_epoch(epoch)
            stats["seconds"] = time.time() - epoch_started
            self.history.append(self._record(epoch, stats))
            self.board.scalars(epoch, board_scalars(self.history[-1]), prefix="stage1/")
            if self.ctx.main:
                save_checkpoint(ckpt_path, model=self.model, optimizer=self.optimizer,
                                scheduler=self.scheduler, epoch=epoch + 1, cfg=self.cfg, history=self.history)
            barrier(self.ctx)
            done_images += stats["images"]
            self._report(epoch, stats, started, done_images)
            if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < self.cfg["epochs"]:
                return False
        return True

    def _record(self, epoch: int, stats: dict) -> dict:
        return epoch_record(epoch, stats, self.loss, self.scheduler.get_last_lr()[0])

    def run_epoch(self, epoch: int) -> dict:
        """One pass over this rank's shard of the epoch's order; returns summed loss/hits/images."""
        cfg, ctx = self.cfg, self.ctx
        labels = self.images.labels.cpu()                                  # the order is drawn on the CPU
        order = shard(epoch_order(labels, cfg["sampler"], seeded(cfg["seed"], epoch, 0)), ctx.rank, ctx.world)
        batches = split_batches(order.to(self.images.device), local_batch(cfg, ctx.world), drop_last=True)
        aug = seeded(cfg["seed"], epoch, 1, ctx.rank, device=ctx.device)
        self.net.train()
        sums, images_seen = torch.zeros(2, dtype=torch.float64, device=ctx.device), 0   # loss * B, hits
        last_line = time.time()
        for i, (images, labels, _) in enumerate(self.images.batches(batches)):
            sums += self.train_batch(images, labels, aug)
            images_seen += len(labels)
            if ctx.main and time.time() - last_line > PROGRESS_EVERY_S:
                last_line = time.time()
                click.echo(f"  epoch {epoch} batch {i + 1}/{len(batches)}", err=True)
        totals = all_reduce_sum(torch.cat([sums, sums.new_tensor([images_seen])]), ctx).cpu()
        if not torch.isfinite(totals[0]):  # checked once per epoch: a per-step check would sync the GPU
            raise GlagError(f"--lr {cfg['lr']}: the loss diverged in epoch {epoch}; lower the learning rate")
        return {"loss": float(totals[0] / max(totals[2], 1)), "acc": float(totals[1] / max(totals[2], 1)),
                "images": int(totals[2])}

    def train_batch(self, images, labels, generator) -> torch.Tensor:
        """One SGD step on a uint8 batch (B, H, W, C); returns [loss * B, hits] on the device."""
        images = images.to(self.ctx.device, non_blocking=True)
        labels = labels.to(self.ctx.device, non_blocking=True)
        x, mix = self.transform(images, generator), None
        alpha = self.cfg.get("mixup") or 0.0                                 # absent in older configs
        if alpha > 0:
            x, lam, perm = mixup(x, alpha, generator)
            mix = (lam, perm)
        return self._step(x, labels, mix)

    def _step(self, x, labels, mix=None) -> torch.Tensor:
        """SGD step on a (B, C, H, W) batch; `mix` = (lam, perm) when x is a mixup of the batch."""
        try:
            with self.ctx.autocast():
                logits = self.net(x)                                         # (B, C)
            if mix is None:
                loss = self.loss(logits.float(), labels)
            else:
                loss = mixup_loss(self.loss, logits.float(), labels, *mix)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self._stepped = True
        except torch.OutOfMemoryError:
            if self._stepped:
                raise
            raise GlagError(f"--batch-size {self.cfg['batch_size']}: out of GPU memory on the first batch; "
                            f"try --batch-size {max(1, self.cfg['batch_size'] // 2)}") from None
        # under mixup the hits still count against y, the majority label only when lam > 1/2, so the
        # train accuracy shown is a rough signal there (it is not used for anything)
        hits = (logits.argmax(1) == labels).sum()
        return torch.stack([loss.detach().double() * len(labels), hits.double()])  # no host sync per step

    def _report(self, epoch: int, stats: dict, started: float, done_images: int):
        if self.ctx.main:
            click.echo(epoch_line(epoch, self.cfg["epochs"], stats, self.loss, self.scheduler.get_last_lr()[0],
                                  time.time() - started, done_images), err=True)


def epoch_record(epoch: int, stats: dict, loss, lr: float) -> dict:
    """What history.json keeps of an epoch (0-based `epoch`)."""
    alpha = getattr(loss, "alpha", None)
    return {"epoch": epoch, "loss": round(stats["loss"], 6), "train_acc": round(stats["acc"], 6),
            "lr": lr, "alpha": alpha if isinstance(alpha, float) else None,
            "images": stats["images"], "seconds": round(stats["seconds"], 3)}


def board_scalars(record: dict) -> dict:
    """The TensorBoard scalars of an epoch_record: its numbers as history.json has them, plus the rate."""
    return {"loss": record["loss"], "train_acc": record["train_acc"], "lr": record["lr"], "alpha": record["alpha"],
            "images_per_s": record["images"] / max(record["seconds"], 1e-9), "seconds": record["seconds"]}


def epoch_line(epoch: int, epochs: int, stats: dict, loss, lr: float, elapsed: float, done_images: int) -> str:
    """The progress line of a finished epoch: `epoch 3/200 loss .. train-acc ..% lr .. [alpha ..] N img/s ETA ..s`."""
    left = epochs - epoch - 1
    per_epoch = elapsed / max(1, done_images) * max(1, stats["images"])
    alpha = getattr(loss, "alpha", None)
    extra = f" alpha {alpha:.3f}" if isinstance(alpha, float) else ""
    return (f"epoch {epoch + 1}/{epochs} loss {stats['loss']:.4f} train-acc {100 * stats['acc']:.1f}% "
            f"lr {lr:.4f}{extra} {stats['images'] / max(stats['seconds'], 1e-9):,.0f} img/s "
            f"ETA {left * per_epoch:,.0f}s")   # this epoch's rate: the first one includes --compile's warm-up
