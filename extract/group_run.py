"""Stage one for a group of runs end to end: one dataset, N (loss, seed) runs trained together, N banks.

`run_group(options, losses, seeds)` is what `glag-extract-group` calls. Each run is set up exactly as
`glag-extract --loss L --seed S` would set it up (glag.extract.pipeline: same config, same model
initialisation, same checkpoint beside the same bank), the dataset is read and decoded once, and the
runs train as one grouped network (glag.extract.group_trainer). Runs resumed from checkpoints at
different epochs (a kill between two of the N checkpoint writes, or a run trained alone before) are
brought level first: the runs behind train as their own group until they catch up. After training,
each bank is dumped from its own run; banks written stay written if a later one fails.
"""
import gc
import time
from pathlib import Path

import click
import torch

from glag.data.errors import GlagError
from glag.data.layout import RUNS_ROOT
from glag.data.longtail import make_long_tail
from glag.extract.checkpoint import check_compatible, checkpoint_path, load_checkpoint, restore
from glag.extract.distributed import close_context, init_context
from glag.extract.dump import check_space, dump_bank
from glag.extract.group_trainer import GroupOutOfMemory, GroupTrainer, Run, check_groupable
from glag.extract.loaders import seeded
from glag.extract.pipeline import (build_model, data_identity, default_out, load_images, make_loss, open_run_board,
                                   read_dataset, resolve_config)
from glag.extract.trainer import build_optimizer, cosine_with_warmup, local_batch, steps_per_epoch


def run_out(options: dict, loss: str, seed: int, runs_root=RUNS_ROOT) -> Path:
    """The bank of one run: glag-extract's default --out for (loss, seed), under `runs_root`."""
    return Path(runs_root) / default_out(dict(options, loss=loss, seed=seed)).relative_to(RUNS_ROOT)


def run_group(options: dict, losses: list, seeds: list, runs_root=RUNS_ROOT, max_group: int | None = None,
              log=click.echo) -> list | None:
    """Train (or resume) the runs losses x seeds in groups of at most `max_group` and write their banks.

    Returns:
        the banks written, or None when stopped early (--stop-after-epochs).
    """
    ctx, threads = init_context(options["device"], options["amp"]), torch.get_num_threads()
    torch.set_flush_denormal(True)    # as glag-extract: denormals make CPU convolutions several times slower
    try:
        return _run(options, [(loss, seed) for loss in losses for seed in seeds], runs_root, max_group, ctx, log)
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)
        close_context(ctx)


def _run(options: dict, pairs: list, runs_root, max_group, ctx, log):
    data, splits, runs = _setup(options, pairs, runs_root, ctx, log)
    try:
        return _train_and_dump(data, splits, runs, options, max_group, ctx, log)
    finally:
        for run in runs:
            run.board.close()


def _train_and_dump(data, splits, runs: list, options: dict, max_group, ctx, log):
    """Train the runs group after group (at most `max_group` at once), dumping each group's banks."""
    size, written, epochs = max_group or len(runs), [], runs[0].cfg["epochs"]
    for first in range(0, len(runs), size):
        chunk = runs[first:first + size]
        start = min(r.epoch for r in chunk)
        todo = f"epochs {start}..{epochs - 1}" if start < epochs else "finished, dumping"
        log(f"stage one group: {data.name} ({len(data.train)} train images, {data.num_classes} classes), "
            f"{runs[0].cfg['backbone']}, {len(chunk)} runs ({', '.join(r.label for r in chunk)}), {todo} "
            f"on {ctx.device}", err=True)
        if not train_runs(chunk, splits["train"], ctx, options.get("stop_after_epochs"), max_group, log):
            log(f"stopped after epoch {options['stop_after_epochs'] - 1}; the checkpoints beside the banks hold it, "
                "rerun to resume", err=True)
            return None
        written += dump_all(chunk, data, splits, ctx, log)
    return written


def _setup(options: dict, pairs: list, runs_root, ctx, log) -> tuple:
    """The dataset (read and decoded once) and every run, set up as glag-extract sets up its one run."""
    if not pairs:
        raise GlagError("--losses / --seeds: no run; give at least one loss and one seed")
    if ctx.world > 1:
        raise GlagError("glag-extract-group runs in one process; for several GPUs use torchrun with glag-extract")
    per_run = [dict(options, loss=loss, seed=seed, current=False, out=str(run_out(options, loss, seed, runs_root)))
               for loss, seed in pairs]
    states = [_checkpoint(o) for o in per_run]
    dump_only = options["dump_only"]
    raw = read_dataset(options, states[0]["config"] if dump_only else None)
    data_id = data_identity(options, raw)                       # hashed once for every run of the group
    cfgs = [resolve_config(o, raw, s["config"] if dump_only else None, data_id) for o, s in zip(per_run, states)]
    check_groupable(cfgs)
    first = cfgs[0]
    data = make_long_tail(raw, first["profile"], first["im"], first["val_per_class"], seed=first["data_seed"])
    if first["threads"]:
        torch.set_num_threads(first["threads"])
    runs = [_make_run(cfg, state, data, ctx, log) for cfg, state in zip(cfgs, states)]
    splits = load_images(data, first, ctx)
    for run, state in zip(runs, states):
        # the dump checks again; checking now spares a training whose banks could not be written
        check_space(run.out, run.cfg, run.model.feature_dim, data.num_classes,
                    {n: len(s) for n, s in splits.items()}, ctx)
        _prepare(run, state, splits, dump_only)
    return data, splits, runs


def _checkpoint(options: dict):
    """The checkpoint beside a run's bank when it is to be resumed or dumped, else None."""
    ckpt = checkpoint_path(Path(options["out"]))
    state = load_checkpoint(ckpt) if ckpt.is_file() and (options["resume"] or options["dump_only"]) else None
    if options["dump_only"] and state is None:
        raise GlagError(f"--dump-only: no checkpoint at {ckpt}; train first (run without --dump-only)")
    return state


def _make_run(cfg: dict, state, data, ctx, log) -> Run:
    cfg["dataset_meta"] = data.meta
    cfg["amp"] = "bf16" if ctx.bf16 else "fp32"
    out = Path(cfg["out"])
    if state is not None:
        check_compatible(checkpoint_path(out), state["config"], cfg)
    model = build_model(cfg, ctx, fresh=state is None, log=log)
    loss = make_loss(cfg, data.train_counts, ctx.device)
    return Run(cfg, model, loss, optimizer=None, scheduler=None, out=out, ckpt=checkpoint_path(out),
               board=open_run_board(cfg, ctx))


def _prepare(run: Run, state, splits: dict, dump_only: bool) -> None:
    """The run's own SGD and schedule, as Trainer builds them, restored from its checkpoint if any."""
    if dump_only:
        run.epoch, run.history = restore(state, model=run.model), state.get("history", [])
        if run.epoch < run.cfg["epochs"]:
            raise GlagError(f"--dump-only: {run.ckpt} holds {run.epoch}/{run.cfg['epochs']} epochs; "
                            "rerun without --dump-only to finish training")
        return
    run.optimizer = build_optimizer(run.model, run.cfg)
    run.scheduler = cosine_with_warmup(run.optimizer, steps_per_epoch(len(splits["train"]), run.cfg, 1), run.cfg)
    if state is not None:
        run.epoch = restore(state, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler)
        run.history = [h for h in state.get("history", []) if h.get("epoch", 0) < run.epoch]


def train_runs(runs: list, images, ctx, stop_after: int | None, max_group, log) -> bool:
    """Train every run to its last epoch (False: stopped at `stop_after` finished epochs).

    Runs at different epochs are brought level: the ones furthest behind train until they reach the
    next ones, then all continue as one group.
    """
    while True:
        todo = [r for r in runs if r.epoch < r.cfg["epochs"]]
        if not todo:
            return True
        start = min(r.epoch for r in todo)
        if stop_after is not None and start >= stop_after:
            return False
        active = [r for r in todo if r.epoch == start]
        end = min([r.epoch for r in todo if r.epoch > start] + [todo[0].cfg["epochs"]]
                  + ([stop_after] if stop_after is not None else []))
        if len(active) < len(todo):
            log(f"{', '.join(r.label for r in active)}: epochs {start}..{end - 1} to catch up with the others",
                err=True)
        trainer, too_many = GroupTrainer(active, images, ctx, active[0].cfg["image_size"]), None
        try:
            trainer.fit(end, log)
        except GroupOutOfMemory as e:
            too_many = e.n
        if too_many is not None:     # measured outside the except block, whose traceback holds the failed step
            del trainer
            raise GlagError(oom_message(too_many, active, images, ctx, max_group))


def oom_message(n: int, runs: list, images, ctx, max_group) -> str:
    """The one-line error for a group whose first step ran out of memory, with the group size that fits."""
    gc.collect()
    k = n // 2
    while k >= 1 and not fits(runs[:k], images, ctx):
        k //= 2
    batch = runs[0].cfg["batch_size"]
    what = f"--max-group {max_group}" if max_group else "--losses x --seeds"
    if k == 0:
        return (f"{what}: not even one run fits in GPU memory at --batch-size {batch}; "
                f"try --batch-size {max(1, batch // 2)}")
    return f"{what}: {n} runs do not fit in GPU memory on the first step, {k} do (measured); pass --max-group {k}"


def fits(runs: list, images, ctx) -> bool:
    """Does one training step of these runs as a group fit in memory? Measured on copies (runs untouched)."""
    trainer = None
    try:
        trainer = GroupTrainer(runs, images, ctx, runs[0].cfg["image_size"])
        rows = torch.arange(min(local_batch(runs[0].cfg, 1), len(images))).to(images.device)
        batch = next(images.batches([rows]))
        trainer.train_batch([batch] * len(runs), [seeded(0, device=ctx.device)] * len(runs))
        return True
    except (GroupOutOfMemory, torch.OutOfMemoryError):
        return False
    finally:
        del trainer
        gc.collect()
        if ctx.cuda:
            torch.cuda.empty_cache()


def dump_all(runs: list, data, splits: dict, ctx, log) -> list:
    """Dump each run's bank; one failing does not undo (or stop) the others; raises at the end if any did."""
    written, failed, started = [], [], time.time()
    for run in runs:
        try:
            dump_bank(run.model, data, splits, run.cfg, ctx, run.out, log=log, history=run.history)
        except GlagError as e:
            failed.append(f"{run.label}: {e}")
            continue
        log(f"bank written: {run.out}", err=True)
        written.append(run.out)
    log(f"dumped {len(written)} banks in {time.time() - started:.1f}s", err=True)
    if failed:
        raise GlagError(f"{len(failed)} of {len(runs)} banks failed ({' | '.join(failed)}); the others are "
                        "written, and rerunning dumps the failed ones from their finished checkpoints")
    return written
