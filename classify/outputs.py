"""The files of one stage-two run folder (docs/formats.md): config, metrics, history, beta, head,
the deployable checkpoint, the t-SNE sample. report.py and plots.py read these files only.

Each file is serialised in memory and written in one go, so a full disk (or a file-size
limit) is reported with the run's file name and the bytes it needed; run.py's temp folder
is then removed and nothing of the run is kept."""
import io
import json
from pathlib import Path

import click
import numpy as np
import torch

from glag.data.atomic import DISK_FULL, target_of, write_error
from glag.data.provenance import code_version, now

from .deploy import build_deployed


def _put(path: Path, data: bytes) -> None:
    """Write `data` to `path` in the run's temp folder; a disk-full error names the run's file (not the temp)."""
    try:
        path.write_bytes(data)
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        raise write_error(target_of(path.parent) / path.name, e, len(data)) from None


def _dump(path: Path, obj) -> None:
    _put(path, (json.dumps(obj, sort_keys=True, indent=1, default=str) + "\n").encode())


def _save(path: Path, obj) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    _put(path, buf.getvalue())


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
    config = dict(stamp, cfg=cfg, upstream=upstream(bank, store))
    _dump(folder / "config.json", config)
    head = {k: v.detach().cpu() for k, v in fit.head.state_dict().items()}
    _save(folder / "head.pt", head)
    linear = fit.head.linear_equivalent()
    if linear is not None:
        linear = tuple(t.detach().cpu().float().contiguous() for t in linear)
        if cfg["space"] == "raw":
            _save(folder / "linear.pt", dict(zip(("weight", "bias"), linear)))
    deploy = _deploy(folder, cfg, bank, linear, config)
    summary = {k: cfg[k] for k in ("method", "head", "synthetic", "ad", "kd", "space", "loss", "sampler")}
    summary.update(bank_loss=bank.loss, run=name)
    _dump(folder / "metrics.json", dict(fit.metrics, summary=summary, deploy=deploy, **stamp))
    _dump(folder / "history.json", fit.history)
    if fit.beta is not None:
        _dump(folder / "beta.json", {"tail_classes": fit.beta.tail.tolist(), "adaptive": fit.beta.adaptive,
                                     "rule": fit.beta.rule_name if fit.beta.adaptive else None,
                                     "refit": fit.beta.frozen, "final": fit.beta.final,
                                     "class_names": [bank.class_names[k] for k in fit.beta.tail],
                                     "trajectory": fit.beta.trajectory})
    if fit.embed:
        buf = io.BytesIO()
        np.savez(buf, **fit.embed)
        _put(folder / "embed.npz", buf.getvalue())


def _deploy(folder: Path, cfg: dict, bank, linear, config: dict) -> dict:
    """Write model.pt when asked and possible; returns {"file", "checkpoint", "reason"} for metrics.json."""
    if not cfg["deploy"]:
        return {"file": None, "checkpoint": None, "reason": "--no-deploy"}
    if linear is None:
        status = {"checkpoint": None, "reason": f"head {cfg['head']!r} has no linear equivalent"}
    else:
        model, status = build_deployed(bank, *linear, cfg, config)
        if model is not None:
            _save(folder / "model.pt", model)
            return dict(status, file="model.pt")
    click.echo(f"no model.pt: {status['reason']}", err=True)
    return dict(status, file=None)
