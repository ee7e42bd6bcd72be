"""The files of one stage-two run folder (docs/formats.md): config, metrics, history, beta, head,
the deployable checkpoint, the t-SNE sample. report.py and plots.py read these files only."""
import json
from pathlib import Path

import numpy as np
import torch

from data.provenance import code_version, now


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, sort_keys=True, indent=1, default=str) + "\n")


def upstream(bank, store) -> dict:
    """The inputs' own configs, so that a plot traces back to the backbone."""
    out = {"bank": {"path": str(bank.path), "fingerprint": bank.fingerprint, "dataset": bank.dataset,
                    "backbone": bank.backbone, "loss": bank.loss, "config": bank.config}}
    if store is not None:
        attrs = {k: v for k, v in store.attrs.items() if k not in ("config", "upstream")}
        out["store"] = {"path": str(store.path), "config": store.config, "attrs": attrs}
    return out


def write_run(folder: Path, name: str, cfg: dict, bank, store, fit) -> None:
    """Everything but the report and plots, into `folder` (a temp folder that becomes run `name`)."""
    stamp = {"code_version": code_version(), "created": now()}
    _dump(folder / "config.json", dict(stamp, cfg=cfg, upstream=upstream(bank, store)))
    summary = {k: cfg[k] for k in ("method", "head", "synthetic", "ad", "kd", "space", "loss", "sampler")}
    summary.update(bank_loss=bank.loss, run=name)
    _dump(folder / "metrics.json", dict(fit.metrics, summary=summary, **stamp))
    _dump(folder / "history.json", fit.history)
    if fit.beta is not None:
        _dump(folder / "beta.json", {"tail_classes": fit.beta.tail.tolist(), "adaptive": fit.beta.adaptive,
                                     "class_names": [bank.class_names[k] for k in fit.beta.tail],
                                     "trajectory": fit.beta.trajectory})
    head = {k: v.detach().cpu() for k, v in fit.head.state_dict().items()}
    torch.save(head, folder / "head.pt")
    if fit.embed:
        np.savez(folder / "embed.npz", **fit.embed)
    linear = fit.head.linear_equivalent() if cfg["space"] == "raw" else None
    if linear is not None:
        W, b = (t.detach().cpu().float().contiguous() for t in linear)
        torch.save({"weight": W, "bias": b}, folder / "linear.pt")
        model = deployable(bank, W, b) if cfg["deploy"] else None
        if model is not None:
            torch.save(model, folder / "model.pt")


def _checkpoint_path(bank):
    """The stage-one checkpoint: the bank config's "checkpoint" (relative to cwd or the bank's folder),
    else glag-extract's file beside the bank (runs/<dataset>/bank.h5 -> bank.ckpt.pt)."""
    name = bank.config.get("checkpoint")
    cands = [Path(name), bank.path.parent / name] if name else []
    cands.append(bank.path.with_name(bank.path.stem + ".ckpt.pt"))
    return next((c for c in cands if c.is_file()), None)


def deployable(bank, W, b):
    """Stage-one model state dict with its classifier replaced by the stage-two head, or None.

    The classifier entries are found by value: the tensor equal to the bank's stage-one weight.
    Loaded like the stage-one checkpoint: model.load_state_dict(torch.load(path, weights_only=True)).
    """
    path = _checkpoint_path(bank)
    if path is None:
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    W1 = torch.from_numpy(bank.head[0])
    keys = [k for k, v in state.items() if torch.is_tensor(v) and v.shape == W1.shape and torch.equal(v.float(), W1)]
    if len(keys) != 1 or not keys[0].endswith("weight"):
        return None
    bias_key = keys[0][:-len("weight")] + "bias"
    state = dict(state, **{keys[0]: W.to(state[keys[0]].dtype)})
    if bias_key in state:
        state[bias_key] = b.to(state[bias_key].dtype)
    elif b.abs().max() > 0:
        return None  # a bias-free stage-one classifier cannot hold the stage-two bias
    return state
