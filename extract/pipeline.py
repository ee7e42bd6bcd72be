"""Stage one end to end: dataset -> long-tailed split -> trained Classifier -> feature bank.

`run_extract(options)` is what `glag-extract` calls; `options` are the CLI's
values, None meaning "the dataset recipe's value" (extract/recipes.py).
"""
import inspect
import os
import time
from pathlib import Path

import click
import torch

from glag.cli.tensorboard import open_board
from glag.cli.util import echo_progress
from glag.data.datasets import DATASETS, data_root, identity, load_dataset
from glag.data.errors import GlagError
from glag.data.layout import RUNS_ROOT, bank_config, bank_path, set_current
from glag.data.longtail import describe, make_long_tail
from glag.extract.backbones import Classifier, build_backbone, load_pretrained
from glag.extract.checkpoint import check_compatible, check_same_data, checkpoint_path, load_checkpoint, restore
from glag.extract.distributed import close_context, init_context
from glag.extract.dump import check_space, dump_bank
from glag.extract.gpu_decode import decode_mode
from glag.extract.loaders import Images
from glag.extract.losses import LOSSES, build_loss, loss_options
from glag.extract.recipes import BASE, RECIPES, long_tail_profile, recipe_for, resolve
from glag.extract.trainer import Trainer

RESIZE_MARGIN = 8 / 7  # "resize" recipes decode at 8/7 of the crop (256 for 224) and crop inside
GPU_RESIDENT_MB = 2048  # an in-memory train split up to this size lives on the GPU: no copy per step


def default_out(options: dict) -> Path:
    """runs/<dataset>-im<IM>/<loss>/seed<s>/bank.h5 (glag.data.layout), IM and loss from the options or the
    dataset's recipe: known before the dataset is read, because the checkpoint to resume sits beside it."""
    recipe = RECIPES.get(options["dataset"], BASE)
    listed = long_tail_profile(options) == "listed"
    im = None if listed else float(options.get("im") or recipe["im"])
    return bank_path(RUNS_ROOT, options["dataset"], im, options.get("loss") or "graloss", int(options.get("seed") or 0),
                     options.get("data_root"))


def read_dataset(options: dict, base: dict | None = None):
    """The raw dataset, passing --image-size / --channels (or `base`'s) to readers that take them."""
    reader = DATASETS.get(options["dataset"])
    params = inspect.signature(reader).parameters if reader else {}
    given = {}
    for key in ("image_size", "channels"):
        value = options.get(key)
        if value is None and base and key in params:
            value = base.get(key)
        if value is not None:
            given[key] = int(value)
    ignored = [f"--{k.replace('_', '-')}" for k in given if k not in params]
    if ignored:
        raise GlagError(f"{' '.join(ignored)}: dataset {options['dataset']!r} does not take this option")
    return load_dataset(options["dataset"], options["data_root"], **given)


def default_workers(cap: int = 4) -> int:
    """--workers when not given: the CPUs this process may run on, at most `cap` (more decoding processes than
    cores only compete, and torch's DataLoader warns about them)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:                       # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cap, cpus))


def data_identity(options: dict, raw) -> dict:
    """What the data is (glag.data.datasets.identity): the data root read and a fingerprint of its files,
    recorded in the config so that a checkpoint of other data is never resumed."""
    root = data_root(options.get("data_root"))
    return {"data_source": identity.source(raw.name, root), "data_fingerprint": identity.fingerprint(raw, root)}


def resolve_config(options: dict, raw, base: dict | None = None, data: dict | None = None) -> dict:
    """The run's full config: options, then `base` (a checkpoint's), then recipe and loss defaults, then
    the data's identity (`data`, or computed: data_identity).

    Only the chosen loss's options stay (prefixed, e.g. graloss_c).
    """
    recipe = recipe_for(options["dataset"], raw.image_size, raw.channels)
    name = options["loss"] or (base or {}).get("loss") or "graloss"
    own = {f"{name}_{k}": v for k, v in loss_options(name).items()}
    foreign = {f"{n}_{k}" for n in LOSSES for k in loss_options(n)} - set(own)
    kept = {k: v for k, v in options.items() if k not in foreign}
    cfg = resolve(kept, dict(own, **recipe), base)
    if not options.get("profile") and not (base or {}).get("profile"):
        cfg["profile"] = long_tail_profile(options)
    cfg.update(loss=name, out=str(options["out"] or default_out(options)),
               image_size=raw.image_size, channels=raw.channels, num_classes=len(raw.class_names))
    cfg.update({k: list(recipe[k]) if isinstance(recipe[k], tuple) else recipe[k] for k in ("crop", "mean", "std")})
    cfg["decode_size"] = round(raw.image_size * RESIZE_MARGIN) if cfg["crop"] == "resize" else raw.image_size
    cfg.update(data or data_identity(options, raw))
    if cfg.get("workers") is None:
        cfg["workers"] = default_workers()
    bad = [f"--{k.replace('_', '-')} {cfg[k]}" for k in ("epochs", "batch_size", "dump_batch_size")
           if cfg[k] < 1] + [f"--{k.replace('_', '-')} {cfg[k]}" for k in ("lr", "warmup_epochs") if cfg[k] < 0]
    if bad:
        raise GlagError(f"{', '.join(bad)}: must be positive (epochs and batch sizes >= 1, lr >= 0)")
    from glag.extract.options import check_combinations
    check_combinations(cfg)
    return cfg


def build_model(cfg: dict, ctx, fresh: bool, log) -> Classifier:
    """Classifier initialised from `seed` (and --pretrained on a fresh run), channels_last on the device."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        backbone = build_backbone(cfg["backbone"], cfg["channels"], cfg["image_size"])
        model = Classifier(backbone, cfg["num_classes"])
    if fresh and cfg["pretrained"]:
        missing, unexpected = load_pretrained(model.backbone, cfg["pretrained"])
        log(f"--pretrained {cfg['pretrained']}: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}")
    return model.to(ctx.device, memory_format=torch.channels_last)


def make_loss(cfg: dict, train_counts, device):
    try:
        return build_loss(cfg["loss"], train_counts, cfg).to(device)
    except ValueError as e:
        raise GlagError(f"--loss {cfg['loss']}: {e}") from None


def load_images(data, cfg: dict, ctx) -> dict:
    """Images per split; file-based splits decoded into memory while they fit in --preload-mb."""
    budget, splits = cfg["preload_mb"], {}
    # in-memory datasets (CIFAR) never decode, so they skip the decoder's one-time probe on the GPU
    decode = decode_mode(cfg.get("decode") or "auto", ctx.device) if data.train.paths is not None else "cpu"
    for name in ("train", "val", "test"):
        images = Images(getattr(data, name), data.channels, cfg["decode_size"], cfg["workers"],
                        decode=decode, device=ctx.device)
        if images.files is not None:
            started = time.time()
            tick = (lambda d, n: echo_progress(d, n, started, f"decode {name}")) if ctx.main else None
            if images.preload(budget, progress=tick):
                budget -= images.images.numel() / 2 ** 20
        splits[name] = images
    train = splits["train"]
    if ctx.cuda and train.images is not None and train.images.numel() <= GPU_RESIDENT_MB * 2 ** 20:
        train.to(ctx.device)
    return splits


def open_run_board(cfg: dict, ctx):
    """The run's TensorBoard writer under --tensorboard, in <DIR>/<loss>-seed<s>; the main process only."""
    return open_board(cfg.get("tensorboard") if ctx.main else None, f"{cfg['loss']}-seed{cfg['seed']}")


def run_extract(options: dict, log=click.echo):
    """Train (or resume) stage one and write the bank; returns its path, or None if stopped early."""
    ctx, threads = init_context(options["device"], options["amp"]), torch.get_num_threads()
    # Denormal floats (|x| < 1e-38) make CPU convolutions several times slower (measured 3x for a
    # ResNet-32 forward); flushing them to zero changes no result that matters.
    torch.set_flush_denormal(True)
    try:
        return _run(options, ctx, log if ctx.main else (lambda *a, **k: None))
    finally:
        torch.set_num_threads(threads)  # a library call leaves the caller's settings as they were
        torch.set_flush_denormal(False)
        close_context(ctx)


def _run(options: dict, ctx, log):
    out = Path(options["out"] or default_out(options))
    ckpt = checkpoint_path(out)
    state = load_checkpoint(ckpt, options["dump_only"]) if ckpt.is_file() and (options["resume"] or options["dump_only"]) \
        else None
    if options["dump_only"] and state is None:
        raise GlagError(f"--dump-only: no checkpoint at {ckpt}; train first (run without --dump-only)")
    base = state["config"] if options["dump_only"] else None
    raw = read_dataset(options, base)
    cfg = resolve_config(options, raw, base=base)
    data = make_long_tail(raw, cfg["profile"], cfg["im"], cfg["val_per_class"], seed=cfg["data_seed"])
    cfg["dataset_meta"] = data.meta
    cfg["amp"] = "bf16" if ctx.bf16 else "fp32"   # the resolved choice, for the record
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    if state is not None:
        check_compatible(ckpt, state["config"], cfg, options["dump_only"])
    elif options["resume"] and out.is_file():      # a bank without its checkpoint: never trained over silently
        check_same_data(out, bank_config(out), cfg, "bank was made from")
    log(describe(data), err=True)
    model = build_model(cfg, ctx, fresh=state is None, log=log)
    loss = make_loss(cfg, data.train_counts, ctx.device)
    splits = load_images(data, cfg, ctx)
    # the dump checks again; checking now spares a long training whose bank could not be written
    check_space(out, cfg, model.feature_dim, data.num_classes, {n: len(s) for n, s in splits.items()}, ctx)
    if options["dump_only"]:
        if restore(state, model=model, dump_only=True) < cfg["epochs"]:
            raise GlagError(f"--dump-only: {ckpt} holds {state['epoch']}/{cfg['epochs']} epochs; "
                            "rerun without --dump-only to finish training")
    else:
        board = open_run_board(cfg, ctx)
        trainer = Trainer(model, loss, splits["train"], cfg, ctx, cfg["image_size"], board=board)
        start = restore(state, model=model, optimizer=trainer.optimizer, scheduler=trainer.scheduler) \
            if state is not None else 0
        todo = f"epochs {start}..{cfg['epochs'] - 1}" if start < cfg["epochs"] else f"{ckpt} is finished, dumping"
        log(f"stage one: {data.name} ({len(data.train)} train images, {data.num_classes} classes), "
            f"{cfg['backbone']}, {cfg['loss']}, {todo} on {ctx.device}"
            f"{f' x{ctx.world}' if ctx.world > 1 else ''}", err=True)
        try:
            finished = trainer.fit(start, ckpt, options.get("stop_after_epochs"),
                                   history=(state or {}).get("history", []))
        finally:
            board.close()
        if not finished:
            log(f"stopped after epoch {cfg['stop_after_epochs'] - 1}; {ckpt} holds it, rerun to resume", err=True)
            return None
    history = trainer.history if not options["dump_only"] else state.get("history", [])
    dump_bank(model, data, splits, cfg, ctx, out, log=log, history=history)
    current = options.get("current")
    if current is None:              # by default only a bank in the layout: tests and --out elsewhere leave it
        current = Path(RUNS_ROOT).resolve() in Path(out).resolve().parents
    if ctx.main and current:
        set_current(out)
    log(f"bank written: {out}" + (" (now the current bank: runs/current.json)" if current else ""), err=True)
    return out
