"""Is a step of a reproduction already done? Decided from its output files alone, without running the tool.

- stage one: the bank opens and its recorded config agrees with every option the
  step passes (runtime-only options aside). An interrupted stage one has no bank
  yet; glag-extract's own checkpoint resume continues it.
- generate: the store opens for this bank (same fingerprint) and its config agrees.
- stage two: the run folder's config.json has the hash of the config the run
  would resolve now, found exactly as `glag-classify run` finds it (same click
  parsing, same preset and "auto" resolution).
"""
import json
from pathlib import Path

from glag.data.bank import Bank
from glag.data.errors import GlagError
from glag.data.store import Store

# Options that do not change what stage one computes (mirrors glag.extract.checkpoint.RUNTIME_KEYS, which
# classify may not import); "out" and "data_root" name places, not results.
RUNTIME_KEYS = frozenset({"device", "amp", "threads", "compile", "compile_mode", "out", "dump_only", "resume", "data_root", "groups",
                          "stop_after_epochs", "workers", "preload_mb", "dump_batch_size", "current", "tensorboard",
                          "decode"})
# What the dump adds to a trained model: a bank must have them, its checkpoint need not (a dump adds them).
DUMP_KEYS = frozenset({"views", "views_dtype", "views_logits"})
# Values a config written before an option existed stands for (banks from before views and mixup).
OLD_DEFAULTS = {"views": 0, "mixup": 0.0}


def same_value(recorded, wanted) -> bool:
    """Does a recorded config value equal an option value (maybe the user's text, e.g. "8" or "true")?"""
    if isinstance(recorded, bool) or isinstance(wanted, bool):
        return str(recorded).lower() == str(wanted).lower()
    if isinstance(recorded, (list, tuple)) or isinstance(wanted, (list, tuple)):
        return json.dumps(list(recorded) if isinstance(recorded, tuple) else recorded) == json.dumps(wanted)
    try:
        a, b = float(recorded), float(wanted)
    except (TypeError, ValueError):
        return str(recorded) == str(wanted)
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def agrees(config: dict, wanted: dict, skip=()) -> bool:
    """True if every wanted option the config records (and not in `skip`) has the same value there.

    Options a config does not record (e.g. another loss's --graloss-c on a CE bank) are ignored.
    """
    config = dict(OLD_DEFAULTS, **config)
    return all(same_value(config[k], v) for k, v in wanted.items() if k in config and k not in skip)


def bank_done(path: Path, wanted: dict) -> bool:
    """A complete bank at `path` made with the options `wanted`."""
    if not Path(path).is_file():
        return False
    try:
        with Bank(path) as bank:
            return agrees(bank.config, wanted, RUNTIME_KEYS)
    except GlagError:
        return False  # damaged: stage one rewrites it (from its finished checkpoint when there is one)


def checkpoint_agrees(bank: Path, wanted: dict) -> bool:
    """False when the stage-one checkpoint beside `bank` was trained with other options (so: --no-resume)."""
    ckpt = Path(bank).with_name(Path(bank).stem + ".ckpt.pt")
    if not ckpt.is_file():
        return True
    import torch
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        config = json.loads(state["config"])
    except Exception:  # unreadable for any reason: start over rather than fail on it
        return False
    return agrees(config, wanted, RUNTIME_KEYS | DUMP_KEYS)


def store_done(path: Path, bank: Path, wanted: dict) -> bool:
    """A complete store at `path`, drawn from this very bank with the options `wanted`."""
    if not (Path(path).is_file() and Path(bank).is_file()):
        return False
    try:
        with Bank(bank) as b, Store(path, b) as store:
            return agrees(store.config, wanted, ("bank", "out"))
    except GlagError:
        return False


def run_done(argv: list) -> bool:
    """A finished run folder of exactly the config `glag-classify run <argv>` would resolve now.

    Raises GlagError when the arguments do not parse (naming the bad option).
    """
    import click
    from click.core import ParameterSource

    from glag.classify.cli import run as run_command
    from glag.classify.config import apply_preset, resolve_auto, run_dir, same_config
    from glag.classify.run import open_store
    try:
        ctx = run_command.make_context("glag-classify run", list(argv))
    except click.ClickException as e:
        raise GlagError(f"--classify-args: {e.format_message()}") from None
    explicit = {k for k in ctx.params if ctx.get_parameter_source(k) is not ParameterSource.DEFAULT}
    cfg = apply_preset(ctx.params, explicit)
    if not Path(cfg["bank"]).is_file():
        return False
    try:
        with Bank(cfg["bank"]) as bank:
            store = open_store(cfg, bank)
            try:
                cfg = resolve_auto(cfg, bank, store)
            finally:
                if store is not None:
                    store.close()
            target = run_dir(cfg, bank.path)
    except GlagError:
        return False  # the bank or store is not there (yet): the run itself will say what is wrong
    return target.is_dir() and same_config(target, cfg)
