"""Stage-one checkpoints: written atomically every epoch, read back with weights_only=True.

Everything in the file is a tensor, number, string or plain container, so
`torch.load(..., weights_only=True)` reads it; the config travels as JSON text
and RNG states as uint8 tensors.
"""
import io
import json

import torch

from glag.data.atomic import atomic_file
from glag.data.deployed import STAGE_ONE_FORMAT
from glag.data.errors import GlagError
from glag.data.provenance import code_version, config_json

FORMAT = STAGE_ONE_FORMAT
# Options that do not change what is trained: a resume may differ in these. The views are only
# dumped, so a finished checkpoint takes any --views (that is how old banks get views). --decode picks
# where JPEGs are decoded: the images differ only in rounding (IDCT, resampling; docs/stage-one.md), like
# bf16 vs fp32 under --amp, so a run may resume on a machine with or without a GPU decoder.
RUNTIME_KEYS = frozenset({"device", "amp", "threads", "compile", "compile_mode", "out", "dump_only", "resume", "data_root", "groups",
                          "stop_after_epochs", "workers", "preload_mb", "dump_batch_size", "current", "tensorboard",
                          "views", "views_dtype", "views_logits", "decode"})
# Settings added after checkpoints were first written, with the value an older checkpoint trained with.
ADDED_LATER = {"autoaugment": "none", "mixup": 0.0}
# What the data was (glag.data.datasets.identity): the data root read and a fingerprint of its files. A
# checkpoint written before they were recorded is not checked on them.
DATA_KEYS = ("data_source", "data_fingerprint")


def checkpoint_path(out):
    """The checkpoint beside a bank: <bank folder>/bank.h5 -> <bank folder>/bank.ckpt.pt."""
    return out.with_name(out.stem + ".ckpt.pt")


def history_path(ckpt):
    """The per-epoch record beside a checkpoint: bank.ckpt.pt -> bank.history.json."""
    return ckpt.with_name(ckpt.name.replace(".ckpt.pt", "") + ".history.json")


def save_checkpoint(path, *, model, optimizer, scheduler, epoch: int, cfg: dict, history=()) -> None:
    """Write the state after `epoch` finished epochs (atomically: a kill leaves the old file), and the
    history of those epochs beside it as JSON (the checkpoint carries it too, so a resume continues it)."""
    history = json.dumps(list(history), sort_keys=True)
    state = {
        "format": FORMAT, "epoch": int(epoch), "config": config_json(cfg), "code_version": code_version(),
        "history": history,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    # serialised in memory, then written in one go: a full disk is then an OSError naming the file (one
    # line), where torch.save streaming into the file fails inside its zip writer with a traceback
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_file(path, need_bytes=buffer.getbuffer().nbytes) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    with atomic_file(history_path(path)) as tmp:
        tmp.write_text(history + "\n")


# --no-resume does not apply to --dump-only, which needs the checkpoint as it was trained
UNREADABLE_FIX = {False: "delete it or pass --no-resume",
                  True: "--dump-only has nothing to dump: restore the checkpoint from a copy, or train again "
                        "(without --dump-only)"}


def load_checkpoint(path, dump_only: bool = False) -> dict:
    """Read and check a checkpoint; its config comes back as a dict under "config"."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:      # a junk file raises almost anything (UnpicklingError, struct.error, EOFError, ...)
        raise GlagError(f"{path}: not a readable stage-one checkpoint ({type(e).__name__}); "
                        f"{UNREADABLE_FIX[dump_only]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise GlagError(f"{path}: not a {FORMAT} checkpoint; {UNREADABLE_FIX[dump_only]}")
    state["config"] = json.loads(state["config"])
    state["history"] = json.loads(state.get("history", "[]"))       # checkpoints from before the history: none
    return state


def check_compatible(path, saved: dict, cfg: dict, dump_only: bool = False) -> None:
    """Refuse to continue a checkpoint trained with other settings, naming them."""
    plain = lambda v: json.loads(json.dumps(v, default=str))  # tuples -> lists, paths -> str; 1 == 1.0
    check_same_data(path, saved, cfg)
    saved, cfg = {**ADDED_LATER, **saved}, {**ADDED_LATER, **cfg}   # a missing newer key means its old default
    keys = sorted((set(saved) | set(cfg)) - RUNTIME_KEYS - set(DATA_KEYS))
    diffs = [f"{k}={saved.get(k)!r} (this run: {cfg.get(k)!r})" for k in keys
             if plain(saved.get(k)) != plain(cfg.get(k))]
    if diffs:
        fix = "--dump-only dumps it as it was trained: drop the options that differ" if dump_only else \
            "pass --no-resume to start over, or another --out"
        raise GlagError(f"{path}: checkpoint was trained with {', '.join(diffs[:4])}; {fix}")


def check_same_data(path, saved: dict, cfg: dict, what: str = "checkpoint was trained on") -> None:
    """Refuse to continue (or dump) a checkpoint trained on other data, or to train over a bank made from
    other data (`what` says which): another data root, or other files."""
    short = lambda k, v: v[:12] if k == "data_fingerprint" and isinstance(v, str) else v
    diffs = [f"{k.replace('_', ' ')} {short(k, saved[k])} (this run: {short(k, cfg.get(k))})" for k in DATA_KEYS
             if k in saved and saved[k] != cfg.get(k)]
    if diffs:
        raise GlagError(f"{path}: {what} other data: {'; '.join(diffs)}; pass another --out "
                        "(or --no-resume to train over it)")


def restore(state: dict, *, model, optimizer=None, scheduler=None, dump_only: bool = False) -> int:
    """Load a checkpoint's states into the objects; returns the finished epochs."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        fix = "--dump-only cannot dump it: check --backbone, or train again (without --dump-only)" if dump_only \
            else "pass --no-resume to start over"
        raise GlagError(f"checkpoint does not fit this model ({str(e).splitlines()[0]}); {fix}") from None
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_cpu"])
    if torch.cuda.is_available() and len(state["rng_cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return int(state["epoch"])
